"""``unicorpus annotate rewrite``: back-translations and hard negatives -> ann/rewrite/."""

from cli.common import run_stage, stage_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser("rewrite", help="back-translation positives, scene-graph and TF-IDF hard "
                                                   "negatives of captions -> ann/rewrite/ (after parse)")
    stage_arguments(parser)
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    from pipelines.stages.rewrite import run_rewrite

    return run_stage(run_rewrite, args, beam_args)
