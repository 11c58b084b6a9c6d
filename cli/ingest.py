"""``unicorpus ingest``: raw datasets -> raw/ WebDataset shards + rejects/ (Beam options pass through)."""

from __future__ import annotations

from cli.common import json_argument, runner_arguments, runner_config


def register(subparsers) -> None:
    parser = subparsers.add_parser("ingest", help="raw datasets -> raw/ WebDataset shards + rejects/")
    parser.add_argument("--config", required=True, help="corpus YAML")
    parser.add_argument("--source", action="append", default=[], metavar="NAME",
                        help="ingest only this source (repeatable; default: all)")
    runner_arguments(parser)
    parser.add_argument("--retry-failed", action="store_true",
                        help="URL sources: redo finished shards that have failed downloads, fetching only those")
    json_argument(parser)
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    from pipelines.stages.ingest import run_ingest
    from pipelines.summary import format_json, format_summary
    from schemas.config import load_config

    config = load_config(args.config)
    results = run_ingest(config, args.source or list(config.sources), runner_config(args, beam_args),
                         overwrite=args.overwrite, show_progress=not args.quiet, retry_failed=args.retry_failed)
    print(format_json("ingest", results) if args.json else format_summary(results))
    return 0
