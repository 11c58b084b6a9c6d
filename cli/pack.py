"""``unicorpus pack``: raw shards + sidecars -> self-contained training shards under packed/<task>/ (issue 9)."""

from cli.common import stage_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser("pack", help="training shards per task under packed/ (pairs, images, texts, "
                                                "tag_pairs, weak_pairs, cmcl, pairs_aligned_<X>), after retrieve")
    stage_arguments(parser)
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    from cli.common import runner_config
    from pipelines.stages.pack import format_left_out, recorded_left_out, run_pack
    from pipelines.summary import format_json, format_summary
    from schemas.config import load_config

    config = load_config(args.config)
    tasks = run_pack(config, args.source or None, runner_config(args, beam_args), overwrite=args.overwrite,
                     show_progress=not args.quiet)
    left = recorded_left_out(config.output)
    if args.json:
        print(format_json("pack", tasks, left_out=left))
        return 0
    print(format_summary(tasks, "task"))
    print("(per task: read = units considered, written = samples packed)")
    print(format_left_out(left))
    return 0
