"""``unicorpus clean``: deduplicate across sources and remove evaluation images (after ingest)."""

from __future__ import annotations

from cli.common import json_argument


def register(subparsers) -> None:
    parser = subparsers.add_parser("clean", help="deduplicate across sources and remove evaluation images "
                                                 "(after ingest)")
    parser.add_argument("--config", required=True, help="corpus YAML (its `clean:` section names the eval splits)")
    json_argument(parser)
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    from pipelines.stages.clean import run_clean
    from pipelines.summary import format_clean_summary, format_json
    from schemas.config import load_config

    results, _, _ = run_clean(load_config(args.config))
    print(format_json("clean", results) if args.json else format_clean_summary(results))
    return 0
