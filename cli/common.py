"""Arguments and output every stage command shares. Nothing heavy is imported here."""

from __future__ import annotations

import argparse

BEAM_OPTIONS = "Unknown --options are passed to Beam (e.g. --flink_master=HOST:PORT)."


def runner_arguments(parser: argparse.ArgumentParser) -> None:
    """A command that runs Beam pipelines: the runner's options, and every option the command does not know
    passed on to Beam (``beam_options``); other commands reject unknown options (``cli.main``)."""
    parser.epilog = BEAM_OPTIONS
    parser.set_defaults(beam_options=True)
    parser.add_argument("--runner", default="direct", help="direct | portable | flink | spark | dataflow")
    parser.add_argument("--workers", type=int, default=1, help="direct runner: local worker processes")
    parser.add_argument("--job-endpoint", help="portable runner: HOST:PORT of a Beam job service")
    parser.add_argument("--worker-pool", help="portable runner: HOST:PORT of an EXTERNAL SDK worker pool")
    parser.add_argument("--overwrite", action="store_true", help="redo shards that are already complete")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the summary as one JSON object (for scripts) instead of the table")


def stage_arguments(parser: argparse.ArgumentParser) -> None:
    """A per-shard stage over ingested sources: the config, which sources, the runner."""
    parser.add_argument("--config", required=True, help="corpus YAML")
    parser.add_argument("--source", action="append", default=[], metavar="NAME",
                        help="only this source (repeatable; default: the stage's sources)")
    runner_arguments(parser)
    json_argument(parser)


def runner_config(args, beam_args):
    from pipelines.runner import RunnerConfig

    return RunnerConfig(args.runner, args.workers, args.job_endpoint, args.worker_pool, beam_args)


def run_stage(run, args, beam_args, name: str) -> int:
    """Load the config, run ``run(config, sources, runner, overwrite, show_progress)``, print the summary
    (a table, or JSON with ``--json``)."""
    from pipelines.summary import format_json, format_summary
    from schemas.config import load_config

    results = run(load_config(args.config), args.source or None, runner_config(args, beam_args),
                  overwrite=args.overwrite, show_progress=not args.quiet)
    print(format_json(name, results) if args.json else format_summary(results))
    return 0
