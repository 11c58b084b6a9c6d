"""``unicorpus demo``: the mini corpus in every raw format, every stage run on it, the counts checked."""

from __future__ import annotations

from cli.common import runner_arguments, runner_config


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="generate the mini corpus in every raw format with offline models, "
                                                "run every stage on it, check the counts, query the service")
    parser.add_argument("--out", default="demo-out", help="folder for the raw mini corpus and the corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=1, help="multiplies the number of images and documents")
    runner_arguments(parser)
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    from pipelines.demo import run_demo

    return run_demo(args.out, args.seed, args.scale, runner_config(args, beam_args), args.overwrite, not args.quiet)
