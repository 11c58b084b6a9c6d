"""A real HTTP server on 127.0.0.1 that serves images and misbehaves on request: for the downloader's
tests, pipeline integration tests and download benchmarks.

    with FaultServer() as server:                    # or the ``http_server`` pytest fixture below
        urls = server.register({"a.jpg": jpeg_bytes, "b/c.png": png_bytes})  # -> URLs under /img/
        server.url("flaky/2/a.jpg")                  # 500 twice per URL, then a.jpg

Routes (``<name>``: a registered file; the content type follows its extension):

    /img/<name>             the bytes (404 when unknown)
    /status/<code>          that status, always
    /flaky/<n>/<name>       500 the first n times (per URL), then the file
    /busy/<name>[?after=S]  429 with ``Retry-After: S`` (default 1) the first time, then the file
    /delay/<seconds>/<name> waits, then the file (slow but within a timeout)
    /slow/<name>            drips the file, ``drip_bytes`` every ``drip_interval_s`` (slower than a timeout)
    /stall/<name>           headers and half the body, then silence until shutdown
    /hang                   reads the request, never answers
    /truncated/<name>       promises the whole file (Content-Length), sends half, closes
    /html/<anything>        a web page, 200
    /redirect/<hops>/<name> a chain of ``hops`` 302s ending at /img/<name>
    /loop                   redirects to itself forever
    /big/<n>                n bytes, no Content-Length (ends when the connection closes)
    /sized/<n>              n bytes with their Content-Length
    /gzip/<name>            the file with ``Content-Encoding: gzip``
    /drop                   closes the connection without answering

Bookkeeping: ``hits`` (requests per path, query included), ``in_flight`` and ``max_in_flight`` (requests
being answered at once), ``user_agents``. Thousands of URLs are fine: one dict lookup per request,
keep-alive connections, a deep listen backlog, no logging.

``python -m tests.http_server DIR PORT_FILE`` serves DIR's files under /img/ (and every fault route)
in a process of its own, for benchmarks, and writes its port to PORT_FILE.
"""

from __future__ import annotations

import gzip
import mimetypes
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

HTML = b"<!doctype html><html><body><p>not an image</p></body></html>"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # many clients connecting at once must not see refused or delayed SYNs

    def handle_error(self, request, client_address) -> None:  # clients hanging up is the point here
        pass


class FaultServer:
    """The server, started by ``with`` (or ``start()``) in a background thread."""

    def __init__(self, files: Mapping[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.hits: Counter = Counter()
        self.user_agents: Counter = Counter()
        self.in_flight = self.max_in_flight = 0
        self.drip_bytes, self.drip_interval_s = 32, 0.1
        self._lock = threading.Lock()
        self._closing = threading.Event()  # ends /hang and /stall at shutdown
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="fault-server")

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- use -------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def register(self, files: Mapping[str, bytes]) -> list[str]:
        """Serve each ``name -> bytes`` at ``/img/<name>``; their URLs, in the mapping's order."""
        self.files.update(files)
        return [self.url(f"img/{name}") for name in files]

    def wait_idle(self, timeout_s: float = 5.0) -> None:
        """Until no request is being answered (a handler finishes just after its client has the body)."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.005)

    def reset_stats(self) -> None:
        with self._lock:
            self.hits.clear()
            self.user_agents.clear()
            self.max_in_flight = self.in_flight

    def _enter(self, path: str, user_agent: str | None) -> int:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.hits[path] += 1
            self.user_agents[user_agent] += 1
            return self.hits[path]

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


@pytest.fixture
def http_server() -> Iterator[FaultServer]:
    """A fresh server per test (starting one takes about a millisecond)."""
    with FaultServer() as server:
        yield server


def _handler(server: FaultServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real image hosts do
        disable_nagle_algorithm = True  # else headers and body as two writes cost a 40 ms delayed ACK each

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            hits = server._enter(self.path, self.headers.get("User-Agent"))
            try:
                split = urlsplit(self.path)
                parts = split.path.strip("/").split("/")
                self._route(parts[0], parts[1:], parse_qs(split.query), hits)
            except KeyError:  # a fault route naming a file nobody registered
                self._send(404, b"no such image")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            finally:
                server._leave()

        def _route(self, kind: str, rest: list[str], query: dict, hits: int) -> None:
            if kind == "img":
                self._file("/".join(rest))
            elif kind == "status":
                code = int(rest[0])
                self._send(code, b"" if code in (204, 304) else f"status {code}".encode())
            elif kind == "flaky":
                self._send(500, b"try again") if hits <= int(rest[0]) else self._file("/".join(rest[1:]))
            elif kind == "busy":
                after = query.get("after", ["1"])[0]
                if hits == 1:
                    self._send(429, b"slow down", headers={"Retry-After": after})
                else:
                    self._file("/".join(rest))
            elif kind == "delay":
                time.sleep(float(rest[0]))
                self._file("/".join(rest[1:]))
            elif kind == "slow":
                self._drip(server.files["/".join(rest)])
            elif kind == "stall":
                data = server.files["/".join(rest)]
                self._head(200, _content_type(rest[-1]), len(data))
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                server._closing.wait(60)
                self.close_connection = True
            elif kind == "hang":
                server._closing.wait(60)
                self.close_connection = True
            elif kind == "truncated":
                data = server.files["/".join(rest)]
                self._head(200, _content_type(rest[-1]), len(data))
                self.wfile.write(data[: len(data) // 2])
                self.close_connection = True
            elif kind == "html":
                self._send(200, HTML, "text/html; charset=utf-8")
            elif kind == "redirect":
                hops, name = int(rest[0]), "/".join(rest[1:])
                location = f"/redirect/{hops - 1}/{name}" if hops > 1 else f"/img/{name}"
                self._send(302, b"", headers={"Location": location})
            elif kind == "loop":
                self._send(302, b"", headers={"Location": "/loop"})
            elif kind in ("big", "sized"):
                self._stream_bytes(int(rest[0]), with_length=kind == "sized")
            elif kind == "gzip":
                self._send(200, gzip.compress(server.files["/".join(rest)]), _content_type(rest[-1]),
                           headers={"Content-Encoding": "gzip"})
            elif kind == "drop":
                self.close_connection = True
            else:
                self._send(404, b"unknown route")

        def _file(self, name: str) -> None:
            data = server.files.get(name)
            if data is None:
                self._send(404, b"no such image")
            else:
                self._send(200, data, _content_type(name))

        def _head(self, code: int, content_type: str, length: int | None, headers=None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            if length is None:
                self.send_header("Connection", "close")
            else:
                self.send_header("Content-Length", str(length))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()

        def _send(self, code: int, body: bytes, content_type: str = "text/plain", headers=None) -> None:
            self._head(code, content_type, len(body), headers)
            self.wfile.write(body)

        def _drip(self, data: bytes) -> None:
            self._head(200, "image/jpeg", len(data))
            step = server.drip_bytes
            for i in range(0, len(data), step):
                if server._closing.is_set():
                    break
                self.wfile.write(data[i:i + step])
                self.wfile.flush()
                time.sleep(server.drip_interval_s)
            self.close_connection = True

        def _stream_bytes(self, n: int, with_length: bool) -> None:
            """n bytes that start like a JPEG, in 64 KiB writes (a client that stops reading breaks the pipe)."""
            self._head(200, "image/jpeg", n if with_length else None)
            block = b"\xff\xd8\xff\xe0" + b"\0" * (64 * 1024 - 4)
            sent = 0
            while sent < n:
                piece = block[: min(len(block), n - sent)]
                self.wfile.write(piece)
                sent += len(piece)
                block = b"\0" * len(block)
            self.close_connection = True

    return Handler


def _content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def main() -> None:
    """``python -m tests.http_server DIR PORT_FILE``: serve DIR's files (recursively) under /img/."""
    import os
    import sys

    folder, port_file = sys.argv[1], sys.argv[2]
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder).replace(os.sep, "/")] = f.read()
    with FaultServer(files) as server:
        with open(port_file + ".tmp", "w") as f:
            f.write(str(server.port))
        os.replace(port_file + ".tmp", port_file)  # readers never see an empty port file
        threading.Event().wait()


if __name__ == "__main__":
    main()
