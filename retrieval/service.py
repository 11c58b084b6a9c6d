"""The retrieval HTTP service (``unicorpus serve``): search, related items, sample lookup with thumbnails,
health, Prometheus metrics and a small web page, on Starlette served by uvicorn (backlog 2048: a burst of
hundreds of connections waits in the queue, not in SYN retries as it did behind the standard library's
backlog of 5).

Two layers: ``Service`` is the request logic, independent of any server ((method, raw path, raw query,
headers) -> ``Answer``), and ``make_app`` is the thin ASGI shell around it. One ``QueryEngine`` (model +
indexes, loaded at start) answers every request; blocking calls (encoding, FAISS, parquet, image decoding)
run on Starlette's thread pool, never on the event loop. Binds 127.0.0.1 unless told otherwise; with a
token, every endpoint but ``/healthz`` and the page itself wants ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
import os
import socket
import threading
import time
from typing import NamedTuple
from urllib.parse import parse_qs, quote, unquote

from retrieval.query import QueryEngine, QueryError

log = logging.getLogger(__name__)
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)  # seconds
OPEN = ("/", "/healthz", "/static", "/favicon.ico")  # no token needed: the page holds no data, probes need health
PATH_ARGUMENT = ("/api/sample", "/api/image", "/static")  # endpoints that take a key or file name in the path
INLINE = ("/", "/healthz", "/metrics", "/api/indexes", "/static", "/favicon.ico", "unknown")  # cheap: no thread
BACKLOG = 2048
IMAGE_MAX_AGE = 86400  # seconds a browser may keep an image; a key's image changes only with a rebuilt corpus
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff"}


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class Answer(NamedTuple):
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str]
    endpoint: str  # the metrics label: the route, not the full path


class Metrics:
    """prometheus_client collectors in a registry of their own (two services in one process stay apart):
    requests by endpoint and status, latency per endpoint, vectors per loaded index."""

    def __init__(self, catalog: dict[str, dict[str, int]]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("unicorpus_requests", "HTTP requests by endpoint and status.",
                                ("endpoint", "status"), registry=self.registry)
        self.latency = Histogram("unicorpus_request_duration_seconds", "Request latency by endpoint.", ("endpoint",),
                                 buckets=BUCKETS, registry=self.registry)
        vectors = Gauge("unicorpus_index_vectors", "Vectors in each loaded FAISS index.", ("space", "source"),
                        registry=self.registry)
        for space, sources in catalog.items():
            for source, n in sources.items():
                vectors.labels(space, source).set(n)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> tuple[str, bytes]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return CONTENT_TYPE_LATEST, generate_latest(self.registry)


class Params:
    """A query string checked against the parameters an endpoint takes: unknown or repeated ones are errors,
    and so is a value whose percent-escapes are not UTF-8."""

    def __init__(self, query: str, allowed: tuple[str, ...]):
        try:
            parsed = parse_qs(query, keep_blank_values=True, errors="strict")
            for name, values in parsed.items():  # raw bytes that were not UTF-8 arrive as lone surrogates
                "".join((name, *values)).encode("utf-8")
        except UnicodeError:
            raise QueryError("the query string is not valid UTF-8") from None
        unknown = sorted(set(parsed) - set(allowed))
        if unknown:
            raise QueryError(f"unknown parameter {unknown[0]!r} (this endpoint takes: {', '.join(allowed)})")
        repeated = sorted(name for name, values in parsed.items() if len(values) > 1)
        if repeated:
            raise QueryError(f"parameter {repeated[0]!r} given more than once")
        self.values = {name: values[0] for name, values in parsed.items()}

    def get(self, name: str, default=None):
        return self.values.get(name, default)

    def flag(self, name: str, default: bool) -> bool:
        value = self.values.get(name)
        if value is None:
            return default
        if value not in ("0", "1", "true", "false"):
            raise QueryError(f"{name}: expected 0 or 1, got {value!r}")
        return value in ("1", "true")


class Service:
    """The request logic, independent of the HTTP server: (method, raw path, raw query, headers) -> Answer."""

    def __init__(self, engine: QueryEngine, token: str | None = None):
        self.engine = engine
        self.token = token
        self.metrics = Metrics(engine.catalog())
        self.started = time.time()
        self.routes = {"/api/search": self.search, "/api/related": self.related, "/api/sample": self.sample,
                       "/api/image": self.image, "/api/indexes": self.indexes, "/healthz": self.health,
                       "/metrics": self.prometheus, "/": self.page, "/static": self.static,
                       "/favicon.ico": self.favicon}

    def route(self, path: str) -> tuple[str, str]:
        """(endpoint, the rest of the path, unescaped) of a still percent-escaped path:
        ``/api/sample/coco-1`` -> (``/api/sample``, ``coco-1``); ``%2F`` stays inside the key."""
        if path in self.routes:
            return path, ""
        for prefix in PATH_ARGUMENT:
            if path.startswith(f"{prefix}/"):
                try:
                    rest = unquote(path[len(prefix) + 1:], errors="strict")
                    rest.encode("utf-8")  # raw bytes that were not UTF-8 arrive as lone surrogates
                except UnicodeError:
                    raise QueryError("the path is not valid UTF-8") from None
                return prefix, rest
        raise HttpError(404, f"unknown endpoint {path!r}")

    def endpoint(self, path: str) -> str:
        """The route of ``path`` without raising (``unknown`` for none): which answers may skip the thread pool."""
        if path in self.routes:
            return path
        return next((prefix for prefix in PATH_ARGUMENT if path.startswith(f"{prefix}/")), "unknown")

    def handle(self, method: str, path: str, query: str, headers) -> Answer:
        """``path`` and ``query`` as they came on the request line (percent-escapes not yet decoded)."""
        endpoint = "unknown"
        try:
            endpoint, rest = self.route(path)
            if method != "GET":
                raise HttpError(405, f"method {method} not allowed on {endpoint}; use GET", {"Allow": "GET"})
            self.authorise(endpoint, headers.get("authorization"))
            status, content_type, body, extra = self.routes[endpoint](query, rest, headers)
            return Answer(status, content_type, body, extra, endpoint)
        except HttpError as e:
            return Answer(e.status, *_json_error(e.status, e.message), e.headers, endpoint)
        except QueryError as e:
            return Answer(e.status, *_json_error(e.status, self._public(str(e))), {}, endpoint)
        except Exception:
            log.exception("%s %s failed", method, path)
            return Answer(500, *_json_error(500, "internal error; see the service log"), {}, endpoint)

    def _public(self, message: str) -> str:
        """A message with the corpus's location on this server left out: clients need the key, not our disk."""
        return message.replace(self.engine.corpus.root, "<corpus>")

    def authorise(self, endpoint: str, header: str | None) -> None:
        if self.token is None or endpoint in OPEN:
            return
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise HttpError(401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="unicorpus"'})

    # --- endpoints: (query string, rest of the path, headers) -> (status, content type, body, headers) ---

    def search(self, query: str, rest: str, headers):
        p = Params(query, ("q", "tags", "key", "k", "index"))
        hits = self.engine.search(text=p.get("q"), tags=p.get("tags"), key=p.get("key"), k=p.get("k", "5"),
                                  index=p.get("index", "text"))
        return _json(200, {"results": [self._hit(hit) for hit in hits]})

    def related(self, query: str, rest: str, headers):
        p = Params(query, ("key", "kind", "k", "text_index"))
        if p.get("key") is None:
            raise QueryError("key: missing (the sample whose related items you want)")
        hits = self.engine.related(p.get("key"), p.get("kind", "images"), p.get("k", "10"), p.get("text_index"))
        return _json(200, {"key": p.get("key"), "kind": p.get("kind", "images"),
                           "results": [self._hit(hit) for hit in hits]})

    def sample(self, query: str, rest: str, headers):
        Params(query, ())
        if not rest:
            raise QueryError("sample: give the key in the path, /api/sample/<key>")
        sample = self.engine.sample(rest)
        sample["image"] = f"/api/image/{rest}?thumb=1" if sample["has_image"] else None
        return _json(200, sample)

    def image(self, query: str, rest: str, headers):
        """The stored image as it is (``thumb=0``, the default) or a JPEG thumbnail (``thumb=1``). The ETag is
        the image's sha256, so a browser's revalidation costs no read and no decode."""
        p = Params(query, ("thumb",))
        if not rest:
            raise QueryError("image: give the key in the path, /api/image/<key>")
        thumb = p.flag("thumb", False)
        sha256 = self.engine.image_sha256(rest)
        etag = f'"{sha256}-{self.engine.thumbnail_side if thumb else "original"}"'
        cache = {"Cache-Control": f"private, max-age={IMAGE_MAX_AGE}", "ETag": etag}
        if etag in (headers.get("if-none-match") or ""):
            return 304, "", b"", cache
        body, content_type = self.engine.image(rest, thumb=thumb)
        return 200, content_type, body, cache

    def indexes(self, query: str, rest: str, headers):
        Params(query, ())
        return _json(200, {"indexes": self.engine.catalog(), "max_k": self.engine.max_k})

    def health(self, query: str, rest: str, headers):
        Params(query, ())
        return _json(200, {"status": "ok", "uptime_s": round(time.time() - self.started, 3),
                           "indexes": self.engine.catalog()})

    def prometheus(self, query: str, rest: str, headers):
        Params(query, ())
        content_type, body = self.metrics.render()
        return 200, content_type, body, {}

    def page(self, query: str, rest: str, headers):
        return self._file("index.html")  # the page keeps its search in the query string; the server ignores it

    def favicon(self, query: str, rest: str, headers):
        return self._file("favicon.svg")

    def static(self, query: str, rest: str, headers):
        return self._file(rest)

    def _file(self, name: str):
        path = os.path.normpath(os.path.join(STATIC, name))
        if not path.startswith(STATIC + os.sep) or not os.path.isfile(path):
            raise HttpError(404, f"no static file {name!r}")
        with open(path, "rb") as f:
            return 200, mimetypes.guess_type(path)[0] or "application/octet-stream", f.read(), {}

    def _hit(self, hit) -> dict:
        has_image = self.engine.has_image(hit.key)
        return {**hit.to_dict(), "image": f"/api/image/{hit.key}?thumb=1" if has_image else None}


def _json(status: int, payload):
    return status, "application/json", json.dumps(payload, default=str).encode(), {}


def _json_error(status: int, message: str) -> tuple[str, bytes]:
    return "application/json", json.dumps({"error": message, "status": status}).encode()


def make_app(service: Service):
    """The ASGI app: every method and path reaches ``Service.handle`` (a plain ASGI endpoint, so Starlette's
    router adds no method check of its own, and a HEAD, OPTIONS or TRACE gets the same JSON 405 as a POST);
    answers get ``nosniff`` and are counted in the metrics."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    class Endpoint:
        async def __call__(self, scope, receive, send) -> None:
            started = time.perf_counter()
            request = Request(scope, receive)
            # as sent: percent-escapes still in (so %2F stays inside a key). uvicorn refuses raw non-ASCII bytes
            # on the request line; a more lenient server's would be UTF-8, or lone surrogates (then a 400)
            path = scope.get("raw_path", b"").decode("utf-8", "surrogateescape") or quote(scope["path"])
            query = scope.get("query_string", b"").decode("utf-8", "surrogateescape")
            args = (request.method, path, query, request.headers)
            if service.endpoint(path) in INLINE:
                answer = service.handle(*args)
            else:
                answer = await run_in_threadpool(service.handle, *args)
            headers = {**SECURITY_HEADERS, **answer.headers}
            response = Response(answer.body, answer.status, headers, media_type=answer.content_type or None)
            await response(scope, receive, send)
            service.metrics.observe(answer.endpoint, answer.status, time.perf_counter() - started)

    return Starlette(routes=[Route("/{path:path}", Endpoint())])


class HttpServer:
    """uvicorn serving ``make_app(service)`` on a socket bound at construction (so ``port`` is known before
    serving, also for port 0); ``serve_forever`` blocks (in any thread), ``shutdown`` stops it."""

    def __init__(self, service: Service, host: str = "127.0.0.1", port: int = 8765, backlog: int = BACKLOG):
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=backlog)
        self.host, self.port = host, self.socket.getsockname()[1]
        config = uvicorn.Config(make_app(service), backlog=backlog, log_level="warning", access_log=False,
                                lifespan="off", server_header=False)
        self.server = uvicorn.Server(config)
        self._stopped = threading.Event()
        self._stopped.set()

    @property
    def server_address(self) -> tuple[str, int]:
        """(host, port), as the standard library's servers name it (pipelines/demo.py reads it)."""
        return self.host, self.port

    def serve_forever(self) -> None:
        self._stopped.clear()
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        self.server.should_exit = True
        self._stopped.wait()

    def server_close(self) -> None:
        self.socket.close()


def make_server(service: Service, host: str = "127.0.0.1", port: int = 8765) -> HttpServer:
    return HttpServer(service, host, port)
