"""Fetching images of URL-list sources, the way img2dataset does it, with one status per URL.

Every URL ends in exactly one ``Fetched``: ``ok`` with the body, or the reason it failed. Transient
failures (connection errors, timeouts, truncated bodies, 429, 5xx) are retried with exponential
backoff; other 4xx are final. The timeout bounds the connection and the whole body, so a server that
drips bytes cannot hold a worker. Bodies are capped at ``max_bytes`` while streaming.
"""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Iterator, Sequence
from urllib.parse import urlsplit

from schemas.config import DownloadConfig

MAX_REDIRECTS = 10
_CHUNK = 64 * 1024
_local = threading.local()


@dataclass(frozen=True)
class Fetched:
    url: str
    status: str  # ok | http_<code> | timeout | too_large | not_an_image | connection_error | truncated | invalid_url | too_many_redirects
    attempts: int
    bytes: int
    elapsed_s: float
    data: bytes | None = None  # the body, only when status == "ok"
    detail: str = ""


class _Failure(Exception):
    def __init__(self, status: str, detail: str, received: int = 0, retry: bool = False, wait: float = 0.0):
        super().__init__(detail)
        self.status, self.detail, self.received, self.retry, self.wait = status, detail, received, retry, wait


def fetch_all(urls: Sequence[str], config: DownloadConfig) -> list[Fetched]:
    """Same order as ``urls``; up to ``config.threads`` requests in flight."""
    results: list[Fetched | None] = [None] * len(urls)
    for position, result in fetch_each(urls, config):
        results[position] = result
    return results


def fetch_each(urls: Sequence[str], config: DownloadConfig) -> Iterator[tuple[int, Fetched]]:
    """``(position in urls, result)`` as each download finishes, so the caller can decode one image
    while others are still on the wire."""
    if not urls:
        return
    with ThreadPoolExecutor(max_workers=min(config.threads, len(urls))) as pool:
        futures = {pool.submit(fetch, url, config): position for position, url in enumerate(urls)}
        for future in as_completed(futures):
            yield futures[future], future.result()


def fetch(url: str, config: DownloadConfig) -> Fetched:
    started = time.monotonic()
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        return Fetched(str(url), "invalid_url", 0, 0, 0.0, detail="not an http(s) URL")
    attempt = 0
    while True:
        attempt += 1
        try:
            data = _get(url, config)
            return Fetched(url, "ok", attempt, len(data), time.monotonic() - started, data)
        except _Failure as failure:
            if not failure.retry or attempt > config.retries:
                return Fetched(url, failure.status, attempt, failure.received, time.monotonic() - started,
                               detail=failure.detail)
            time.sleep(max(failure.wait, config.backoff_s * 2 ** (attempt - 1)))


def _session():
    """One ``requests.Session`` per thread: connection reuse without sharing a pool across threads."""
    import requests

    if not hasattr(_local, "session"):
        _local.session = requests.Session()
        _local.session.max_redirects = MAX_REDIRECTS
    return _local.session


def _get(url: str, config: DownloadConfig) -> bytes:
    import requests

    deadline = time.monotonic() + config.timeout_s
    try:
        with _session().get(url, stream=True, timeout=config.timeout_s,
                            headers={"User-Agent": config.user_agent}) as response:
            _check_status(response)
            declared = int(response.headers.get("Content-Length") or -1)
            if declared > config.max_bytes:
                raise _Failure("too_large", f"Content-Length {declared} > max_bytes {config.max_bytes}")
            data = _read_body(response, config, deadline)
    except requests.TooManyRedirects as e:
        raise _Failure("too_many_redirects", f"more than {MAX_REDIRECTS} redirects") from e
    except (requests.Timeout, TimeoutError) as e:
        raise _Failure("timeout", f"no complete answer within {config.timeout_s} s", retry=True) from e
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
        raise _Failure("connection_error", type(e).__name__, retry=True) from e
    except requests.RequestException as e:
        raise _Failure("invalid_url", f"{type(e).__name__}: {e}") from e
    if 0 <= declared != len(data):
        raise _Failure("truncated", f"{len(data)} of {declared} bytes", len(data), retry=True)
    _check_image(data)
    return data


def _check_status(response) -> None:
    code = response.status_code
    if code == 200:
        return
    retry = code == 429 or code >= 500
    wait = float(response.headers["Retry-After"]) if str(response.headers.get("Retry-After", "")).isdigit() else 0.0
    raise _Failure(f"http_{code}", f"HTTP {code} {response.reason}", retry=retry, wait=min(wait, 5.0))


def _read_body(response, config: DownloadConfig, deadline: float) -> bytes:
    """The body, read as it arrives (``read1``), so the deadline holds against a server that drips
    bytes: a plain ``read(n)`` would wait for n bytes, each byte resetting the socket timeout."""
    body = bytearray()
    try:
        while chunk := response.raw.read1(_CHUNK):
            body += chunk
            if len(body) > config.max_bytes:
                raise _Failure("too_large", f"more than max_bytes {config.max_bytes}", len(body))
            if time.monotonic() > deadline:
                raise _Failure("timeout", f"body not complete within {config.timeout_s} s", len(body), retry=True)
    except _Failure:
        raise
    except Exception as e:  # urllib3 reports read timeouts and dropped connections with several types
        if "timed out" in str(e):
            raise _Failure("timeout", f"read timed out after {config.timeout_s} s", len(body), retry=True) from e
        raise _Failure("truncated", f"{type(e).__name__} after {len(body)} bytes", len(body), retry=True) from e
    return bytes(body)


def _check_image(data: bytes) -> None:
    """Only that the body opens as an image; full decoding is the shard writer's job."""
    from PIL import Image, UnidentifiedImageError

    try:
        Image.open(io.BytesIO(data)).close()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise _Failure("not_an_image", f"{type(e).__name__}: body of {len(data)} bytes", len(data)) from e
