"""Fetching images of URL-list sources, the way img2dataset does it, with one status per URL.

Every URL ends in exactly one ``Fetched``, never an exception: ``ok`` with the body, or why not.

- Timeouts: ``timeout_s`` bounds the connection, the wait for the answer and the whole body (a deadline
  from the start of the attempt; the socket timeout is lowered to what is left before every read), so a
  server that drips bytes cannot hold a thread. DNS resolution is not covered (the OS resolver blocks).
- Retries, ``config.retries`` extra attempts after ``backoff_s * 2**k`` (k = 0, 1, ...): only for
  failures that may pass: connection errors, timeouts (as img2dataset does: a busy server often answers
  the next time; the price is up to ``(retries + 1) * timeout_s`` per dead URL), truncated bodies, HTTP
  429 and 5xx. A numeric ``Retry-After`` lengthens the wait, up to ``MAX_RETRY_AFTER_S``. Other 4xx,
  redirect loops, oversized bodies, non-images and bad URLs are final.
- ``truncated``: the connection ended before the body did (fewer bytes than Content-Length, a broken
  chunked body, a reset mid-body). Without Content-Length a cut body cannot be told from a whole one;
  the image check below, or the writer's decoding, catches most.
- Size: Content-Length over ``max_bytes`` is refused before reading; otherwise bytes are counted while
  streaming and at most ``max_bytes + 1`` are ever held.
- ``not_an_image``: the body does not open as an image (PIL reads the header only; full decoding is
  the shard writer's job, which records its own errors).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from schemas.config import DownloadConfig

MAX_REDIRECTS = 10
MAX_RETRY_AFTER_S = 5.0  # a server asking for longer is waited on this long, then asked again
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Fetched:
    url: str
    # ok | http_<code> | timeout | too_large | not_an_image | connection_error | truncated | invalid_url
    # | too_many_redirects
    status: str
    attempts: int  # requests made (0 for an invalid URL)
    bytes: int  # body bytes received in the last attempt
    elapsed_s: float  # over all attempts, waits included
    data: bytes | None = None  # the body, only when status == "ok"
    detail: str = ""  # why, for people: "HTTP 404 Not Found", "read timed out after 2.0 s"


class _Failure(Exception):
    """One failed attempt: its status, whether another attempt may help, and how long to wait first."""

    def __init__(self, status: str, detail: str, received: int = 0, retry: bool = False, wait: float = 0.0):
        super().__init__(detail)
        self.status, self.detail, self.received, self.retry, self.wait = status, detail, received, retry, wait


def fetch_all(urls: Sequence[str], config: DownloadConfig) -> list[Fetched]:
    """Same order as ``urls``; up to ``config.threads`` requests in flight (a thread pool, one
    ``requests.Session`` per thread)."""
    results: list[Fetched | None] = [None] * len(urls)
    for position, result in fetch_each(urls, config):
        results[position] = result
    return results  # type: ignore[return-value]


def fetch_each(urls: Sequence[str], config: DownloadConfig) -> Iterator[tuple[int, Fetched]]:
    """``(position in urls, result)`` as each download finishes, so the caller can decode one image
    while others are still on the wire. Closing the generator early cancels the URLs not yet started."""
    if not urls:
        return
    with FetchPool(config, threads=min(config.threads, len(urls))) as pool:
        pool.submit(None, urls)
        while pool.outstanding:
            _, position, result = pool.next()
            yield position, result


class FetchPool:
    """One thread pool (one ``requests.Session`` per thread) for the URLs of many callers, each list
    submitted under a tag; results come back as they finish, whoever submitted them. A URL slower than
    the others holds one thread, not the URLs queued behind it: several shards of one worker share a
    pool, so one shard's slow URL does not stall its neighbours (``pipelines.shard_downloads``)."""

    def __init__(self, config: DownloadConfig, threads: int | None = None) -> None:
        self.config = config
        self.threads = threads or config.threads
        self.outstanding = 0  # submitted, result not yet taken with next()
        self._local, self._sessions, self._lock = threading.local(), [], threading.Lock()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="fetch")

    def submit(self, tag: object, urls: Sequence[str]) -> None:
        for position, url in enumerate(urls):
            future = self._pool.submit(self._fetch, url)
            future.add_done_callback(lambda done, position=position: self._done.put((tag, position, done)))
        self.outstanding += len(urls)

    def next(self) -> tuple[object, int, Fetched]:
        """The next finished URL, waiting for one: ``(tag, position in its list, result)``."""
        tag, position, future = self._done.get()
        self.outstanding -= 1
        return tag, position, future.result()

    def close(self) -> None:
        """Cancels the URLs not yet started, waits for those on the wire (each within its timeout)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        for session in self._sessions:
            session.close()

    def __enter__(self) -> FetchPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _fetch(self, url: str) -> Fetched:
        if not hasattr(self._local, "session"):  # connection reuse without sharing a pool across threads
            self._local.session = _new_session(self.config)
            with self._lock:
                self._sessions.append(self._local.session)
        return fetch(url, self.config, self._local.session)


def fetch(url: str, config: DownloadConfig, session=None) -> Fetched:
    """One URL, with retries. ``session``: a ``requests.Session`` to reuse (else one just for this URL)."""
    problem = _invalid(url)
    if problem:
        return Fetched(str(url), "invalid_url", 0, 0, 0.0, detail=problem)
    own = session is None
    session = session or _new_session(config)
    started, attempt = time.monotonic(), 0
    try:
        while True:
            attempt += 1
            try:
                data = _attempt(session, url, config)
                return Fetched(url, "ok", attempt, len(data), time.monotonic() - started, data)
            except _Failure as failure:
                if not failure.retry or attempt > config.retries:
                    return Fetched(url, failure.status, attempt, failure.received, time.monotonic() - started,
                                   detail=failure.detail)
                time.sleep(max(failure.wait, config.backoff_s * 2 ** (attempt - 1)))
    finally:
        if own:
            session.close()


def _invalid(url) -> str:
    """Why ``url`` cannot be fetched without asking anyone, or ``""``."""
    if not isinstance(url, str):
        return f"not a string: {type(url).__name__}"
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number or out of range)
    except ValueError as e:
        return f"cannot parse: {e}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"unsupported scheme {parts.scheme!r}" if parts.scheme else "not an absolute http(s) URL"
    if not parts.hostname:
        return "no host"
    return ""


def _new_session(config: DownloadConfig):
    import requests

    session = requests.Session()
    session.max_redirects = MAX_REDIRECTS
    session.headers["User-Agent"] = config.user_agent
    return session


def _attempt(session, url: str, config: DownloadConfig) -> bytes:
    """One request: the whole body within ``timeout_s``, or a ``_Failure``."""
    import requests
    from urllib3.util import Timeout

    deadline = time.monotonic() + config.timeout_s
    timeout = Timeout(connect=config.timeout_s, read=config.timeout_s, total=config.timeout_s)
    try:
        with session.get(url, stream=True, timeout=timeout) as response:
            _check_status(response)
            declared = _content_length(response)
            if declared is not None and declared > config.max_bytes:
                raise _Failure("too_large", f"Content-Length {declared} > max_bytes {config.max_bytes}")
            data = _read_body(response, config, deadline)
            if declared is not None and response.raw.tell() < declared:  # urllib3 usually says so first
                raise _Failure("truncated", f"{response.raw.tell()} of {declared} bytes, then the connection ended",
                               len(data), retry=True)
    except _Failure:
        raise
    except requests.TooManyRedirects as e:
        raise _Failure("too_many_redirects", f"more than {MAX_REDIRECTS} redirects") from e
    except requests.Timeout as e:
        raise _Failure("timeout", f"no answer within {config.timeout_s} s ({type(e).__name__})", retry=True) from e
    except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema,
            requests.exceptions.URLRequired) as e:  # also a redirect to such a URL
        raise _Failure("invalid_url", f"{type(e).__name__}: {e}") from e
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, OSError) as e:
        raise _Failure("connection_error", f"{type(e).__name__}: {_short(e)}", retry=True) from e
    except Exception as e:  # whatever else a hostile server or URL provokes: a status, never a crash
        raise _Failure("connection_error", f"{type(e).__name__}: {_short(e)}") from e
    _check_image(data)
    return data


def _check_status(response) -> None:
    code = response.status_code
    if 200 <= code < 300:
        return
    retry = code == 429 or code >= 500
    raise _Failure(f"http_{code}", f"HTTP {code} {response.reason or ''}".rstrip(), retry=retry,
                   wait=_retry_after(response.headers.get("Retry-After")) if retry else 0.0)


def _retry_after(value: str | None) -> float:
    """Seconds of a numeric ``Retry-After``, capped; an HTTP date or garbage counts as none."""
    try:
        seconds = float(value) if value is not None else 0.0
    except ValueError:
        return 0.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S) if seconds == seconds else 0.0  # NaN -> 0


def _content_length(response) -> int | None:
    try:
        value = int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None
    return value if value >= 0 else None


def _read_body(response, config: DownloadConfig, deadline: float) -> bytes:
    """The (decoded) body as it arrives, never more than ``max_bytes + 1`` of it, within the deadline.

    ``read1`` returns what has arrived instead of waiting for a full chunk, and the socket timeout is
    set to the time left before each read: a server sending a byte now and then cannot stretch it."""
    from urllib3.exceptions import ReadTimeoutError

    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    body = bytearray()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Failure("timeout", _late(config), len(body), retry=True)
            if sock is not None:
                sock.settimeout(left)
            chunk = response.raw.read1(min(_CHUNK, config.max_bytes + 1 - len(body)), decode_content=True)
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > config.max_bytes:
                raise _Failure("too_large", f"body over max_bytes {config.max_bytes}", len(body))
    except _Failure:
        raise
    except (TimeoutError, ReadTimeoutError) as e:
        raise _Failure("timeout", _late(config), len(body), retry=True) from e  # it was set to the time left
    except Exception as e:  # IncompleteRead, ProtocolError, a reset, a broken chunk or gzip stream
        raise _Failure("truncated", f"{type(e).__name__} after {len(body)} bytes: {_short(e)}", len(body),
                       retry=True) from e
    finally:
        if sock is not None:  # a kept-alive connection sends its next request with the usual timeout
            try:
                sock.settimeout(config.timeout_s)
            except OSError:
                pass


def _late(config: DownloadConfig) -> str:
    """The same words in every run: how much arrived varies with timing (it is the status row's ``bytes``)."""
    return f"read timed out after {config.timeout_s} s"


def _check_image(data: bytes) -> None:
    """Only that the body opens as an image (the header); full decoding is the shard writer's job."""
    from PIL import Image

    from pipelines.images import open_stored

    try:
        with open_stored(data):  # no decompression-bomb warning: the shard writer checks image.max_pixels
            pass
    except Image.DecompressionBombError as e:
        raise _Failure("too_large", f"image of too many pixels: {e}", len(data)) from e
    except Exception as e:
        raise _Failure("not_an_image", f"{type(e).__name__}: body of {len(data)} bytes does not open as an image",
                       len(data)) from e


def _short(e: Exception, limit: int = 200) -> str:
    text = str(e)
    return text if len(text) <= limit else text[: limit - 3] + "..."

