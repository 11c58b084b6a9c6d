"""``unicorpus report``: an HTML page of counts, rejects, tag distributions and retrieved examples."""


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="write <output>/report/index.html: counts, rejects, tag "
                                                  "distributions, weak pairs and related images with thumbnails")
    parser.add_argument("--config", required=True, help="corpus YAML")
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    from pipelines.report import write_report
    from schemas.config import load_config

    print(f"report written to {write_report(load_config(args.config))}")
    return 0
