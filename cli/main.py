"""The ``unicorpus`` console script. Argument parsing only; each command imports its stage lazily so
that a quick command does not pay for Beam's or torch's start-up."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

BAD_REQUEST, FAILED = 2, 1  # exit codes (README: "Exit codes"); argparse's usage errors are 2 as well

DESCRIPTION = ("Build vision-language pre-training corpora with Apache Beam (ingest, clean, annotate, embed, index, "
               "retrieve, pack), query and report on them, and train models on the packed shards.")

# Every command is a module with ``register(subparsers)``, in the order ``--help`` lists them; each imports
# its stage lazily. Commands that run Beam pipelines pass unknown options to Beam (``cli.common.runner_arguments``).
COMMANDS = ("cli.ingest", "cli.clean", "cli.demo", "cli.stages", "cli.index", "cli.retrieve", "cli.query",
            "cli.serve", "cli.report", "cli.pack", "cli.train")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="unicorpus", description=DESCRIPTION,
                                     epilog="unicorpus COMMAND --help: that command's options")
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        importlib.import_module(module).register(commands)

    args, beam_args = parser.parse_known_args(argv)
    if beam_args and not getattr(args, "beam_options", False):
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(beam_args)}")
    _quiet_beam_logging()
    try:
        return args.run(args, beam_args)
    except ValueError as e:  # a bad request, config or input: fix the command line, the config or the data
        print(f"unicorpus {args.command}: error: {e}", file=sys.stderr)
        return BAD_REQUEST
    except (RuntimeError, OSError) as e:  # the run itself failed (accounting, I/O, a server out of reach) ...
        print(f"unicorpus {args.command}: error: {e}", file=sys.stderr)
        return BAD_REQUEST if _bad_source(e) else FAILED


def version() -> str:
    """The installed distribution's version; from a checkout that is not installed, pyproject.toml's."""
    from importlib import metadata

    try:
        return metadata.version("unicorpus")
    except metadata.PackageNotFoundError:
        import tomllib

        with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pyproject.toml"),
                  "rb") as f:
            return tomllib.load(f)["project"]["version"]


class _Version(argparse.Action):
    """``--version``, looked up only when asked for (argparse's own version action needs it up front)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default,
                         help=help or "print the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"unicorpus {version()}")  # on stdout, as argparse's own version action does
        parser.exit()


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
