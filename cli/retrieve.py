"""``unicorpus retrieve``: weak pairs, phrase-region links and related items -> links/ (issue 5)."""

from cli.common import json_argument, runner_arguments, runner_config


def register(subparsers) -> None:
    parser = subparsers.add_parser("retrieve", help="mu-VLA weak pairs and phrase-region links, UNIMO related "
                                                    "images and texts (links/)")
    parser.add_argument("--config", required=True, help="corpus YAML (retrieval.retrieve section)")
    parser.add_argument("--examples", type=int, default=3, metavar="N",
                        help="weak pairs to print per weak_pairs entry (default 3)")
    runner_arguments(parser)
    json_argument(parser)
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    from pipelines.stages.retrieve import example_pairs, run_retrieve
    from pipelines.summary import format_example_pairs, format_json, format_summary
    from schemas.config import load_config

    config = load_config(args.config)
    results = run_retrieve(config, runner_config(args, beam_args), overwrite=args.overwrite,
                           show_progress=not args.quiet)
    if args.json:
        print(format_json("retrieve", results))
        return 0
    if not results:
        print("nothing to retrieve: set retrieval.retrieve.weak_pairs, or run detect / embed for related items")
        return 0
    print(format_summary(results, "table/source"))
    print("(per links table / query source: read = queries, written = queries served)")
    print("links: " + ", ".join(f"{r.name} {r.extra['links']}" for r in results))
    print("\n" + format_example_pairs(example_pairs(config, args.examples)))
    return 0
