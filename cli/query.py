"""``unicorpus query``: one search (free text, a tag list or a sample key) or a key's related items, as a
table or JSON; answered here (``--config``: loads the model and the indexes) or by a running ``unicorpus
serve`` (``--server URL``: no model here). ``--interactive`` loads once and answers a question per line,
with readline history. The request is checked before the model loads, so a typo fails at once."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HELP = """one question per line, with the same options as the command line:
  a red ball on the grass                 free text
  --tags ball,tree --index tags           a tag list
  --key coco-504518 -k 3                  a sample's stored vector
  --key coco-504518 --related texts       its related texts (or images)
  add --json for JSON; quit (or Ctrl-D) ends"""


def _question_arguments(parser: argparse.ArgumentParser, interactive_line: bool = False) -> None:
    """The options of one question: on the command line, and again on each line of ``--interactive``."""
    if interactive_line:
        parser.add_argument("text", nargs="*", help="free text (the words of the line)")
    else:
        parser.add_argument("text", nargs="?", help="free text to search for")
    parser.add_argument("--tags", help="comma-separated labels, searched as one tag query (mu-VLA)")
    parser.add_argument("--key", help="a sample key: search with its stored vector")
    parser.add_argument("--related", choices=("images", "texts"),
                        help="with --key: its related images or texts (links/related-*) instead of a search")
    parser.add_argument("-k", default="5", help="results to show (1..retrieval.serve.max_k; default 5)")
    parser.add_argument(
        "--index", default="text", help="space or space/source: text, tags, text/cc, ... (default text)"
    )
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")


def register(subparsers) -> None:
    parser = subparsers.add_parser("query", help="search the FAISS indexes: free text, a tag list or a sample key")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="corpus YAML: load the model and the indexes here")
    where.add_argument("--server", metavar="URL", help="ask a running `unicorpus serve` (http://HOST:PORT) instead")
    parser.add_argument("--token", help="with --server: its bearer token (default: $UNICORPUS_TOKEN)")
    parser.add_argument("--interactive", "-i", action="store_true",
                        help="load once, then answer one question per line (readline history)")
    parser.add_argument("--history", default=os.path.join("~", ".unicorpus_query_history"),
                        help="--interactive: history file (default ~/.unicorpus_query_history)")
    _question_arguments(parser)
    parser.set_defaults(run=_run)


def _run(args, beam_args) -> int:
    from retrieval.query import QueryError

    if args.interactive:
        if args.text is not None or args.tags is not None or args.key is not None or args.related:
            raise QueryError("--interactive reads the questions from its input; give none on the command line")
        return _interactive(args)
    engine, max_k = _open(args)
    print(answer(engine, args, max_k))
    return 0


def _open(args, load=None):
    """(engine, max_k): a ``QueryEngine`` made lazily (``load()``), or a client of ``--server``."""
    if args.server:
        from retrieval.client import RemoteEngine

        engine = RemoteEngine(args.server, args.token or os.environ.get("UNICORPUS_TOKEN"))
        return engine, engine.max_k
    from schemas.config import load_config

    config = load_config(args.config)
    return _LazyEngine(config), config.retrieval.serve.max_k


class _LazyEngine:
    """The QueryEngine made on first use, so that a bad request fails before torch and the indexes load."""

    def __init__(self, config):
        self.config, self._engine = config, None

    def load(self):
        if self._engine is None:
            from retrieval.query import QueryEngine

            self._engine = QueryEngine(self.config)
        return self._engine

    def search(self, **kwargs):
        return self.load().search(**kwargs)

    def related(self, *args):
        return self.load().related(*args)


def answer(engine, question, max_k: int) -> str:
    """One question (parsed arguments) checked, asked and formatted: a table or JSON."""
    from retrieval.query import QueryError, check_k, check_request, check_utf8

    check_utf8(question.index, "index")
    if question.related:
        if question.key is None or question.text is not None or question.tags is not None:
            raise QueryError("--related needs --key and no text or --tags")
        check_k(question.k, max_k)
        hits = engine.related(question.key, question.related, question.k)
    else:
        check_request(question.text, question.tags, question.key, question.k, max_k)
        hits = engine.search(text=question.text, tags=question.tags, key=question.key, k=question.k,
                             index=question.index)
    if question.json:
        return json.dumps({"results": [hit.to_dict() for hit in hits]}, indent=2)
    return format_hits(hits)


class _LineParser(argparse.ArgumentParser):
    """A question typed on a line: errors are raised (and printed as one line), never an exit."""

    def error(self, message):
        from retrieval.query import QueryError

        raise QueryError(message)

    def exit(self, status=0, message=None):
        from retrieval.query import QueryError

        raise QueryError(message or "stopped")


def _interactive(args) -> int:
    import shlex

    from retrieval.query import QueryError, check_utf8

    engine, max_k = _open(args)
    if isinstance(engine, _LazyEngine):
        print(f"unicorpus query: loading the model and the indexes of {args.config} ...", file=sys.stderr, flush=True)
        engine.load().embedder  # noqa: B018 (the first question is as quick as the rest)
    line_parser = _LineParser(prog="", add_help=False)
    _question_arguments(line_parser, interactive_line=True)
    line_parser.set_defaults(k=args.k, index=args.index, json=args.json)
    sys.stdin.reconfigure(errors="surrogateescape")  # a line that is not UTF-8 gets an error, not an exit
    tty = sys.stdin.isatty()
    history = _start_history(os.path.expanduser(args.history)) if tty else None
    print("unicorpus query: ready; one question per line, `help` for the syntax, Ctrl-D ends", file=sys.stderr,
          flush=True)
    try:
        while True:
            try:
                line = input("query> " if tty else "")
            except EOFError:
                break
            line = line.strip()
            if line in ("quit", "exit"):
                break
            if not line:
                continue
            if line in ("help", "?"):
                print(HELP, flush=True)
                continue
            started = time.perf_counter()
            try:
                question = line_parser.parse_args(shlex.split(check_utf8(line, "line")))
                question.text = " ".join(question.text) if question.text else None
                print(answer(engine, question, max_k), flush=True)
            except (QueryError, ValueError) as e:
                print(f"error: {e}", file=sys.stderr, flush=True)
                continue
            print(f"({1000 * (time.perf_counter() - started):.0f} ms)", file=sys.stderr, flush=True)
    finally:
        if history:
            history()
    return 0


def _start_history(path: str):
    """readline with the questions of earlier sessions; returns what saves this session's on the way out."""
    import readline

    readline.set_history_length(1000)
    if os.path.exists(path):
        try:
            readline.read_history_file(path)
        except OSError as e:
            print(f"unicorpus query: history {path} not read: {e}", file=sys.stderr)

    def save() -> None:
        try:
            readline.write_history_file(path)
        except OSError as e:
            print(f"unicorpus query: history {path} not saved: {e}", file=sys.stderr)

    return save


def format_hits(hits, width: int = 72) -> str:
    """One line per hit: its number for people (``#``, from 1; ``--json`` has the 0-based ``rank`` field),
    score, source, key and the text (cut to ``width``)."""
    if not hits:
        return "no results"
    keys = max(len(hit.key) for hit in hits)
    sources = max(max(len(hit.source) for hit in hits), len("source"))
    lines = [f"{'#':>4}  {'score':>7}  {'source':<{sources}}  {'key':<{keys}}  text"]
    for hit in hits:
        text = " ".join((hit.text or "").split())
        text = text if len(text) <= width else text[: width - 1] + "…"
        lines.append(f"{hit.rank + 1:>4}  {hit.score:>7.4f}  {hit.source:<{sources}}  {hit.key:<{keys}}  {text}")
    return "\n".join(lines)
