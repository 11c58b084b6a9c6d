"""The ``unicorpus`` console script. Argument parsing only; each command imports its stage lazily so
that a quick command does not pay for Beam's or torch's start-up."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from cli.common import json_argument, runner_arguments, runner_config

BAD_REQUEST, FAILED = 2, 1  # exit codes (README: "Exit codes"); argparse's usage errors are 2 as well

# Each module registers its sub-commands (``register(subparsers)``) and imports its stage lazily.
COMMANDS = ("cli.stages", "cli.index", "cli.retrieve", "cli.query", "cli.serve", "cli.report", "cli.pack",
            "cli.train")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unicorpus", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="raw datasets -> raw/ WebDataset shards + rejects/",
                                 epilog="Unknown --options are passed to Beam (e.g. --flink_master=HOST:PORT).")
    ingest.add_argument("--config", required=True, help="corpus YAML")
    ingest.add_argument("--source", action="append", default=[], metavar="NAME",
                        help="ingest only this source (repeatable; default: all)")
    _runner_arguments(ingest)
    json_argument(ingest)
    ingest.set_defaults(run=_ingest)

    clean = commands.add_parser("clean", help="deduplicate across sources and remove evaluation images (after ingest)")
    clean.add_argument("--config", required=True, help="corpus YAML (its `clean:` section names the eval splits)")
    json_argument(clean)
    clean.set_defaults(run=_clean)

    demo = commands.add_parser("demo", help="generate the mini corpus in every raw format with offline models, "
                                            "run every stage on it, check the counts, query the service")
    demo.add_argument("--out", default="demo-out", help="folder for the raw mini corpus and the corpus")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--scale", type=int, default=1, help="multiplies the number of images and documents")
    _runner_arguments(demo)
    demo.set_defaults(run=_demo)

    annotate = commands.add_parser("annotate", help="sidecar annotations of ingested shards under ann/")
    annotators = annotate.add_subparsers(dest="annotator", required=True)
    importlib.import_module("cli.stages").register_annotators(annotators)  # annotate detect|parse|rewrite
    for module in COMMANDS:
        importlib.import_module(module).register(commands)

    args, beam_args = parser.parse_known_args(argv)
    _quiet_beam_logging()
    try:
        return args.run(args, beam_args)
    except ValueError as e:  # a bad request, config or input: fix the command line, the config or the data
        print(f"unicorpus {args.command}: error: {e}", file=sys.stderr)
        return BAD_REQUEST
    except (RuntimeError, OSError) as e:  # the run itself failed (accounting, I/O, a server out of reach) ...
        print(f"unicorpus {args.command}: error: {e}", file=sys.stderr)
        return BAD_REQUEST if _bad_source(e) else FAILED


def _bad_source(error: Exception) -> bool:
    """... unless a source's files are malformed (``SourceError``, a RuntimeError): bad input, as a config is.
    Looked up without an import: if pipelines.sources never loaded, none was raised."""
    sources = sys.modules.get("pipelines.sources")
    return sources is not None and isinstance(error, sources.SourceError)


def _quiet_beam_logging() -> None:
    """Beam warns at import about optional GCP clients and relays worker chatter; neither helps a user."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda record: not record.getMessage().startswith("apitools not found"))
    logging.getLogger("apache_beam").setLevel(logging.CRITICAL)  # its errors reach us as exceptions


def _runner_arguments(parser: argparse.ArgumentParser) -> None:
    runner_arguments(parser)
    parser.add_argument("--retry-failed", action="store_true",
                        help="URL sources: redo finished shards that have failed downloads, fetching only those")


def _run(config, names, args, beam_args) -> list:
    from pipelines.stages.ingest import run_ingest
    from pipelines.summary import format_json, format_summary

    results = run_ingest(config, names or list(config.sources), runner_config(args, beam_args),
                         overwrite=args.overwrite, show_progress=not args.quiet, retry_failed=args.retry_failed)
    print(format_json("ingest", results) if getattr(args, "json", False) else format_summary(results))
    return results


def _ingest(args, beam_args) -> int:
    from schemas.config import load_config

    _run(load_config(args.config), args.source, args, beam_args)
    return 0


def _clean(args, beam_args) -> int:
    from pipelines.stages.clean import run_clean
    from pipelines.summary import format_clean_summary, format_json
    from schemas.config import load_config

    results, _, _ = run_clean(load_config(args.config))
    print(format_json("clean", results) if args.json else format_clean_summary(results))
    return 0


def _demo(args, beam_args) -> int:
    from pipelines.demo import run_demo

    return run_demo(args.out, args.seed, args.scale, runner_config(args, beam_args), args.overwrite, not args.quiet)


def run() -> None:
    """The console script: ``main``, then exit without interpreter teardown. Everything a command writes
    is committed (renamed into place) before ``main`` returns; what the teardown adds is only a chance for
    a C++ thread pool of a dependency (gRPC, under Beam) to abort the process with ``terminate called
    without an active exception`` and turn a finished run into exit code -6, as seen once or twice per
    full test run here."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    run()
