"""The retrieval HTTP service (``unicorpus serve``): search, related items, sample lookup with thumbnails,
health, Prometheus metrics and a small web page, on the standard library's ThreadingHTTPServer.

One ``QueryEngine`` (model + indexes, loaded at start) answers every request; this module only maps
URLs to its methods, errors to JSON 4xx answers, and counts. Binds 127.0.0.1 unless told otherwise;
with a token, every endpoint but ``/healthz`` and the page itself wants ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
import os
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from retrieval.query import QueryEngine, QueryError

log = logging.getLogger(__name__)
STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)  # seconds
OPEN = ("/", "/healthz", "/static")  # no token needed: the page holds no data, probes need health
PATH_ARGUMENT = ("/api/sample", "/api/image", "/static")  # endpoints that take a key or file name in the path


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class Metrics:
    """Request counts by endpoint and status, and a latency histogram per endpoint (Prometheus text)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, int]] = Counter()
        self.buckets: dict[str, list[int]] = {}
        self.sums: Counter[str] = Counter()

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.counts[(endpoint, status)] += 1
            counts = self.buckets.setdefault(endpoint, [0] * (len(BUCKETS) + 1))
            counts[next((i for i, bound in enumerate(BUCKETS) if seconds <= bound), len(BUCKETS))] += 1
            self.sums[endpoint] += seconds

    def render(self, catalog: dict[str, dict[str, int]]) -> str:
        lines = ["# HELP unicorpus_requests_total HTTP requests by endpoint and status.",
                 "# TYPE unicorpus_requests_total counter"]
        with self._lock:
            for (endpoint, status), n in sorted(self.counts.items()):
                lines.append(f'unicorpus_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
            lines += ["# HELP unicorpus_request_duration_seconds Request latency by endpoint.",
                      "# TYPE unicorpus_request_duration_seconds histogram"]
            for endpoint, counts in sorted(self.buckets.items()):
                cumulative = 0
                for bound, n in zip((*map(str, BUCKETS), "+Inf"), counts):
                    cumulative += n
                    lines.append(f'unicorpus_request_duration_seconds_bucket{{endpoint="{endpoint}",le="{bound}"}} '
                                 f"{cumulative}")
                lines.append(f'unicorpus_request_duration_seconds_sum{{endpoint="{endpoint}"}} {self.sums[endpoint]:.6f}')
                lines.append(f'unicorpus_request_duration_seconds_count{{endpoint="{endpoint}"}} {cumulative}')
        lines += ["# HELP unicorpus_index_vectors Vectors in each loaded FAISS index.",
                  "# TYPE unicorpus_index_vectors gauge"]
        for space, sources in catalog.items():
            for source, n in sources.items():
                lines.append(f'unicorpus_index_vectors{{space="{space}",source="{source}"}} {n}')
        return "\n".join(lines) + "\n"


class Params:
    """A query string checked against the parameters an endpoint takes: unknown or repeated ones are errors."""

    def __init__(self, query: str, allowed: tuple[str, ...]):
        parsed = parse_qs(query, keep_blank_values=True)
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
    """The request logic, independent of the HTTP server object: (method, path, query, headers) -> answer."""

    def __init__(self, engine: QueryEngine, token: str | None = None):
        self.engine = engine
        self.token = token
        self.metrics = Metrics()
        self.started = time.time()
        self.routes = {"/api/search": self.search, "/api/related": self.related, "/api/sample": self.sample,
                       "/api/image": self.image, "/api/indexes": self.indexes, "/healthz": self.health,
                       "/metrics": self.prometheus, "/": self.page, "/static": self.static}

    def route(self, path: str) -> tuple[str, str]:
        """(endpoint, the rest of the path): ``/api/sample/coco-1`` -> (``/api/sample``, ``coco-1``)."""
        if path in self.routes:
            return path, ""
        for prefix in PATH_ARGUMENT:
            if path.startswith(f"{prefix}/"):
                return prefix, unquote(path[len(prefix) + 1:])
        raise HttpError(404, f"unknown endpoint {path!r}")

    def handle(self, method: str, target: str, headers) -> tuple[int, str, bytes, dict[str, str], str]:
        """(status, content type, body, extra headers, endpoint label for the metrics)."""
        url = urlsplit(target)
        endpoint = "unknown"
        try:
            endpoint, rest = self.route(url.path)
            if method != "GET":
                raise HttpError(405, f"method {method} not allowed on {endpoint}; use GET", {"Allow": "GET"})
            self.authorise(endpoint, headers.get("Authorization"))
            status, content_type, body = self.routes[endpoint](url.query, rest)
            return status, content_type, body, {}, endpoint
        except HttpError as e:
            return e.status, *_json_error(e.status, e.message), e.headers, endpoint
        except QueryError as e:
            return e.status, *_json_error(e.status, str(e)), {}, endpoint
        except Exception:
            log.exception("%s %s failed", method, target)
            return 500, *_json_error(500, "internal error; see the service log"), {}, endpoint

    def authorise(self, endpoint: str, header: str | None) -> None:
        if self.token is None or endpoint in OPEN:
            return
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise HttpError(401, "missing or wrong bearer token", {"WWW-Authenticate": 'Bearer realm="unicorpus"'})

    # --- endpoints: (query string, rest of the path) -> (status, content type, body) ---------------

    def search(self, query: str, rest: str):
        p = Params(query, ("q", "tags", "key", "k", "index"))
        hits = self.engine.search(text=p.get("q"), tags=p.get("tags"), key=p.get("key"), k=p.get("k", "5"),
                                  index=p.get("index", "text"))
        return _json(200, {"results": [self._hit(hit) for hit in hits]})

    def related(self, query: str, rest: str):
        p = Params(query, ("key", "kind", "k", "text_index"))
        if p.get("key") is None:
            raise QueryError("key: missing (the sample whose related items you want)")
        hits = self.engine.related(p.get("key"), p.get("kind", "images"), p.get("k", "10"), p.get("text_index"))
        return _json(200, {"key": p.get("key"), "kind": p.get("kind", "images"),
                           "results": [self._hit(hit) for hit in hits]})

    def sample(self, query: str, rest: str):
        Params(query, ())
        if not rest:
            raise QueryError("sample: give the key in the path, /api/sample/<key>")
        sample = self.engine.sample(rest)
        sample["image"] = f"/api/image/{rest}?thumb=1" if sample["has_image"] else None
        return _json(200, sample)

    def image(self, query: str, rest: str):
        p = Params(query, ("thumb",))
        if not rest:
            raise QueryError("image: give the key in the path, /api/image/<key>")
        body, content_type = self.engine.image(rest, thumb=p.flag("thumb", True))
        return 200, content_type, body

    def indexes(self, query: str, rest: str):
        Params(query, ())
        return _json(200, {"indexes": self.engine.catalog(), "max_k": self.engine.max_k})

    def health(self, query: str, rest: str):
        Params(query, ())
        return _json(200, {"status": "ok", "uptime_s": round(time.time() - self.started, 3),
                           "indexes": self.engine.catalog()})

    def prometheus(self, query: str, rest: str):
        Params(query, ())
        return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render(self.engine.catalog()).encode()

    def page(self, query: str, rest: str):
        Params(query, ())
        return self._file("index.html")

    def static(self, query: str, rest: str):
        return self._file(rest)

    def _file(self, name: str):
        path = os.path.normpath(os.path.join(STATIC, name))
        if not path.startswith(STATIC + os.sep) or not os.path.isfile(path):
            raise HttpError(404, f"no static file {name!r}")
        with open(path, "rb") as f:
            return 200, mimetypes.guess_type(path)[0] or "application/octet-stream", f.read()

    def _hit(self, hit) -> dict:
        has_image = self.engine.has_image(hit.key)
        return {**hit.to_dict(), "image": f"/api/image/{hit.key}?thumb=1" if has_image else None}


def _json(status: int, payload) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(payload, default=str).encode()


def _json_error(status: int, message: str) -> tuple[str, bytes]:
    return "application/json", json.dumps({"error": message, "status": status}).encode()


def make_handler(service: Service) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "unicorpus"
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body leave as two writes: no 40 ms delayed-ACK wait

        def _answer(self) -> None:
            started = time.perf_counter()
            status, content_type, body, headers, endpoint = service.handle(self.command, self.path, self.headers)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            if self.command != "GET":
                self.close_connection = True  # its unread body would be taken for the next request
            service.metrics.observe(endpoint, status, time.perf_counter() - started)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

        def log_message(self, format, *args) -> None:  # noqa: A002 (the base class's name)
            log.info("%s %s", self.address_string(), format % args)

    return Handler


def make_server(service: Service, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(service))
    server.daemon_threads = True
    return server
