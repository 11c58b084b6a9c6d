"""``unicorpus annotate parse``: noun phrases and scene graphs -> ann/parse/."""

from cli.common import run_stage, stage_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser("parse", help="spaCy noun phrases and scene graphs of texts -> ann/parse/")
    stage_arguments(parser)
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    from pipelines.stages.parse import run_parse

    return run_stage(run_parse, args, beam_args)
