"""``unicorpus serve``: the retrieval HTTP service and web page (retrieval/service.py, Starlette on uvicorn).
Loads the model and the indexes once, then serves until interrupted (Ctrl-C or SIGTERM). The corpus may be
local or a URL (``output: gs://...``): indexes are copied into ``retrieval.serve.index_cache`` once."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="HTTP search service and web page over the indexes")
    parser.add_argument("--config", required=True, help="corpus YAML")
    parser.add_argument("--host", help="address to bind (default retrieval.serve.host: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default retrieval.serve.port: 8765; 0: any free port)")
    parser.add_argument("--token", help="require `Authorization: Bearer TOKEN` (default retrieval.serve.token)")
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    from retrieval.query import QueryEngine
    from retrieval.service import Service, make_server
    from schemas.config import load_config

    config = load_config(args.config)
    serve = config.retrieval.serve
    host = args.host or serve.host
    port = serve.port if args.port is None else args.port
    token = args.token or serve.token
    engine = QueryEngine(config)
    engine.embedder  # noqa: B018 (loaded now, not by the first request)
    server = make_server(Service(engine, token), host, port)
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"unicorpus serve: warning: listening on {host} with no token; anyone who can reach it can query",
              file=sys.stderr)
    print(f"unicorpus serve: http://{host}:{server.port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()  # uvicorn stops cleanly on SIGINT and SIGTERM
    finally:
        server.server_close()
    print("unicorpus serve: stopped", file=sys.stderr)
    return 0
