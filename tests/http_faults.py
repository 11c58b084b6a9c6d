"""A real HTTP server on 127.0.0.1 that misbehaves on request, for downloader and pipeline tests.

Paths: ``/img/<name>`` serves registered bytes; ``/status/<code>``; ``/flaky/<n>/<name>`` fails with 500
n times per URL, then serves; ``/busy/<name>`` answers 429 with Retry-After once; ``/slow/<name>``
drips the body slower than any test timeout; ``/truncated/<name>`` promises more bytes than it sends;
``/html/<name>`` a web page; ``/redirect/<hops>/<name>`` a chain of redirects; ``/loop`` redirects
forever; ``/big/<n>`` n bytes without Content-Length; ``/drop`` closes the connection without a reply.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # clients hanging up is the point here
        pass


class FaultServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: Counter = Counter()
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{path.lstrip('/')}"

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


def _handler(server: FaultServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            server.enter()
            try:
                with server._lock:
                    server.hits[self.path] += 1
                    hits = server.hits[self.path]
                self._route(self.path.strip("/").split("/"), hits)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                server.leave()

        def _route(self, parts: list[str], hits: int) -> None:
            kind, rest = parts[0], parts[1:]
            if kind == "img":
                self._send(200, server.files.get(rest[0]), "image/jpeg") if rest[0] in server.files else self._send(404, b"no")
            elif kind == "status":
                self._send(int(rest[0]), b"status")
            elif kind == "flaky":
                self._send(500, b"try again") if hits <= int(rest[0]) else self._send(200, server.files[rest[1]])
            elif kind == "busy":
                self._send(429, b"slow down", headers={"Retry-After": "1"}) if hits == 1 else self._send(200, server.files[rest[0]])
            elif kind == "slow":
                self._drip(server.files[rest[0]])
            elif kind == "truncated":
                data = server.files[rest[0]]
                self._send(200, data[: len(data) // 2], length=len(data))
                self.close_connection = True
            elif kind == "html":
                self._send(200, b"<html><body>not an image</body></html>", "text/html")
            elif kind == "redirect":
                hops = int(rest[0])
                location = f"/redirect/{hops - 1}/{rest[1]}" if hops > 1 else f"/img/{rest[1]}"
                self._send(302, b"", headers={"Location": location})
            elif kind == "loop":
                self._send(302, b"", headers={"Location": "/loop"})
            elif kind == "big":
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b"\xff" * int(rest[0]))
                self.close_connection = True
            elif kind == "drop":
                self.close_connection = True
            else:
                self._send(404, b"unknown route")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain", headers=None, length=None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _drip(self, data: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for i in range(0, len(data), 32):
                self.wfile.write(data[i:i + 32])
                self.wfile.flush()
                time.sleep(0.1)

    return Handler


def main() -> None:
    """``python -m tests.http_faults DIR PORT_FILE``: serve DIR's files under /img/ (and every fault
    route) in a process of its own, for benchmarks; writes the port to PORT_FILE."""
    import os
    import sys

    folder, port_file = sys.argv[1], sys.argv[2]
    with FaultServer() as server:
        for name in os.listdir(folder):
            with open(os.path.join(folder, name), "rb") as f:
                server.files[name] = f.read()
        with open(port_file, "w") as f:
            f.write(str(server._server.server_address[1]))
        threading.Event().wait()


if __name__ == "__main__":
    main()
