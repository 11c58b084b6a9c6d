"""``unicorpus pack``: raw shards + sidecars -> self-contained training shards under packed/<task>/ (issue 9)."""

from cli.common import run_stage, stage_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser("pack", help="training shards per task under packed/ (pairs, images, texts, "
                                                "tag_pairs, weak_pairs, cmcl, pairs_aligned_<X>), after retrieve")
    stage_arguments(parser)
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    from pipelines.stages.pack import run_pack

    code = run_stage(run_pack, args, beam_args, "pack", what="task")
    if not args.json:
        print("(per task: read = units considered, written = samples packed)")
    return code
