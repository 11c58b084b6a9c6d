"""``unicorpus embed``: sentence embeddings of texts and image tag queries -> emb/."""

from cli.common import run_stage, stage_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser("embed", help="sentence-transformers vectors of texts (emb/text) and image "
                                                 "tag queries (emb/tags)")
    stage_arguments(parser)
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    from pipelines.stages.embed import run_embed

    return run_stage(run_embed, args, beam_args)
