"""``unicorpus index``: FAISS indexes of the emb/ tables -> index/<space>/<source>/."""

from cli.common import json_argument, runner_arguments, runner_config


def register(subparsers) -> None:
    parser = subparsers.add_parser("index", help="FAISS index per embedding space and source (type chosen from "
                                                 "size, dim and memory budget; tuned to the recall target)")
    parser.add_argument("--config", required=True, help="corpus YAML (its retrieval.index section)")
    parser.add_argument("--space", action="append", choices=("text", "tags"), default=[],
                        help="only this embedding space (repeatable; default: both)")
    parser.add_argument("--source", action="append", default=[], metavar="NAME",
                        help="only this source (repeatable; default: every source with emb/ tables)")
    runner_arguments(parser)  # the runner of sharded builds (large IVF indexes), --overwrite: rebuild current ones
    json_argument(parser)
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    from pipelines.stages.index import format_index_summary, run_index
    from pipelines.summary import format_json
    from schemas.config import load_config

    results = run_index(load_config(args.config), args.space or None, args.source or None,
                        overwrite=args.overwrite, show_progress=not args.quiet,
                        runner=runner_config(args, beam_args))
    print(format_json("index", results) if args.json else format_index_summary(results))
    return 0
