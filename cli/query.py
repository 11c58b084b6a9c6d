"""``unicorpus query``: one search (free text, a tag list or a sample key) or a key's related items, as a
table or JSON. The request is checked before the model loads, so a typo fails at once."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("query", help="search the FAISS indexes: free text, a tag list or a sample key")
    parser.add_argument("--config", required=True, help="corpus YAML")
    parser.add_argument("text", nargs="?", help="free text to search for")
    parser.add_argument("--tags", help="comma-separated labels, searched as one tag query (mu-VLA)")
    parser.add_argument("--key", help="a sample key: search with its stored vector")
    parser.add_argument("--related", choices=("images", "texts"),
                        help="with --key: its related images or texts (links/related-*) instead of a search")
    parser.add_argument("-k", default="5", help="results to show (1..retrieval.serve.max_k; default 5)")
    parser.add_argument("--index", default="text", help="space or space/source: text, tags, text/cc, ... (default text)")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    from retrieval.query import QueryEngine, QueryError, check_k, check_request
    from schemas.config import load_config

    config = load_config(args.config)
    max_k = config.retrieval.serve.max_k
    if args.related:
        if args.key is None or args.text is not None or args.tags is not None:
            raise QueryError("--related needs --key and no text or --tags")
        check_k(args.k, max_k)
    else:
        check_request(args.text, args.tags, args.key, args.k, max_k)
    engine = QueryEngine(config)
    if args.related:
        hits = engine.related(args.key, args.related, args.k)
    else:
        hits = engine.search(text=args.text, tags=args.tags, key=args.key, k=args.k, index=args.index)
    if args.json:
        print(json.dumps({"results": [hit.to_dict() for hit in hits]}, indent=2))
    else:
        print(format_hits(hits))
    return 0


def format_hits(hits, width: int = 72) -> str:
    """rank, score, source, key and the text (cut to ``width``), one line per hit."""
    if not hits:
        return "no results"
    keys = max(len(hit.key) for hit in hits)
    sources = max(max(len(hit.source) for hit in hits), len("source"))
    lines = [f"{'rank':>4}  {'score':>7}  {'source':<{sources}}  {'key':<{keys}}  text"]
    for hit in hits:
        text = " ".join((hit.text or "").split())
        text = text if len(text) <= width else text[: width - 1] + "…"
        lines.append(f"{hit.rank + 1:>4}  {hit.score:>7.4f}  {hit.source:<{sources}}  {hit.key:<{keys}}  {text}")
    return "\n".join(lines)
