"""``unicorpus annotate detect``: object detection and tags -> ann/detect/."""

from cli.common import run_stage, stage_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser("detect", help="detector boxes, labels, class distributions, region features "
                                                  "(and ground-truth tags) -> ann/detect/")
    stage_arguments(parser)
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    from pipelines.stages.detect import run_detect

    return run_stage(run_detect, args, beam_args)
