"""``unicorpus clean``: deduplicate across sources and remove evaluation images (after ingest)."""

from __future__ import annotations

from cli.common import json_argument, runner_arguments, runner_config


def register(subparsers) -> None:
    parser = subparsers.add_parser("clean", help="deduplicate across sources and remove evaluation images "
                                                 "(after ingest)")
    parser.add_argument("--config", required=True, help="corpus YAML (its `clean:` section names the eval splits)")
    runner_arguments(parser, per_shard=False)
    json_argument(parser)
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    from pipelines.stages.clean_pipeline import run_clean_pipeline
    from pipelines.summary import format_clean_summary, format_json
    from schemas.config import load_config

    results = run_clean_pipeline(load_config(args.config), runner_config(args, beam_args))
    print(format_json("clean", results) if args.json else format_clean_summary(results))
    return 0
