"""``unicorpus report``: an HTML page of counts, rejects, tag distributions and retrieved examples."""


from cli.common import json_argument
from schemas import layout


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help=f"write <output>/{layout.report()}: counts, rejects, tag "
                                                  "distributions, weak pairs and related images with thumbnails")
    parser.add_argument("--config", required=True, help="corpus YAML")
    json_argument(parser)
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    import json

    from pipelines.report import write_report
    from schemas.config import load_config

    path = write_report(load_config(args.config))
    print(json.dumps({"stage": "report", "path": path}) if args.json else f"report written to {path}")
    return 0
