"""The downloader against a real misbehaving HTTP server on 127.0.0.1 (tests/http_server.py)."""

import socket
import struct
import time
import zlib

import pytest

from pipelines import download
from pipelines.download import Fetched, fetch_all, fetch_each
from schemas.config import DownloadConfig
from tests.images import jpeg

# Small timeouts and backoffs keep the file fast; 32 threads let every case of a batch run at once.
CONFIG = DownloadConfig(threads=32, timeout_s=0.5, retries=2, backoff_s=0.01, max_bytes=200_000,
                        user_agent="unicorpus-test/1.0")


def png(width=30, height=20, color=(0, 120, 50)) -> bytes:
    return jpeg(width, height, color, fmt="PNG")


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size (all ``Image.open`` reads) and has no real pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture
def server(http_server):
    http_server.register({"a.jpg": jpeg(64, 48), "b.png": png(), "c.jpg": jpeg(200, 150, (90, 90, 10)),
                          "deep/d.jpg": jpeg(40, 40, (1, 2, 3)), "hop.jpg": jpeg(50, 20, (7, 7, 7))})
    return http_server


# path, status, attempts (retries=2: a transient failure is tried 3 times)
FAULTS = [
    ("img/a.jpg", "ok", 1),
    ("img/b.png", "ok", 1),
    ("img/deep/d.jpg", "ok", 1),
    ("img/absent.jpg", "http_404", 1),  # 4xx: final at once
    ("status/403", "http_403", 1),
    ("status/410", "http_410", 1),
    ("status/500", "http_500", 3),  # 5xx: retried, then given up
    ("status/503", "http_503", 3),
    ("status/429", "http_429", 3),  # 429 every time
    ("flaky/2/a.jpg", "ok", 3),  # 500 twice, then the image
    ("busy/b.png?after=0", "ok", 2),  # 429 once, then the image
    ("slow/c.jpg", "timeout", 3),  # drips slower than the timeout
    ("stall/c.jpg", "timeout", 3),  # half the body, then silence
    ("hang", "timeout", 3),  # no answer at all
    ("truncated/c.jpg", "truncated", 3),  # Content-Length promises more than comes
    ("html/page", "not_an_image", 1),
    ("redirect/3/hop.jpg", "ok", 1),
    ("loop", "too_many_redirects", 1),
    ("big/300000", "too_large", 1),  # no Content-Length: counted while streaming
    ("sized/300000", "too_large", 1),  # Content-Length: refused before reading
    ("gzip/c.jpg", "ok", 1),  # Content-Encoding is undone
    ("drop", "connection_error", 3),  # connection closed without an answer
]
INVALID = ["ftp://example.com/a.jpg", "not a url", "", "http://", "http://127.0.0.1:99999/a.jpg",
           "http://[::1/a.jpg", "//127.0.0.1/a.jpg", "file:///etc/hostname"]


def test_every_fault_ends_with_its_status_and_attempts(server):
    urls = [server.url(path) for path, _, _ in FAULTS] + INVALID
    started = time.monotonic()
    results = fetch_all(urls, CONFIG)
    elapsed = time.monotonic() - started
    assert [(r.url, r.status, r.attempts) for r in results] == \
        [(server.url(p), status, n) for p, status, n in FAULTS] + [(u, "invalid_url", 0) for u in INVALID]
    assert all(isinstance(r, Fetched) and r.detail for r in results if r.status != "ok")
    assert all(r.data is None for r in results if r.status != "ok")
    by_path = {p: r for (p, _, _), r in zip(FAULTS, results[:len(FAULTS)], strict=True)}
    assert by_path["img/absent.jpg"].detail == "HTTP 404 Not Found"
    assert by_path["img/b.png"].data == server.files["b.png"]
    assert by_path["gzip/c.jpg"].data == server.files["c.jpg"]
    assert by_path["sized/300000"].bytes == 0 and "Content-Length" in by_path["sized/300000"].detail
    assert by_path["big/300000"].bytes == CONFIG.max_bytes + 1  # never holds more than max_bytes + 1
    assert 0 < by_path["truncated/c.jpg"].bytes < len(server.files["c.jpg"])
    assert "timed out" in by_path["slow/c.jpg"].detail
    # the server saw exactly the attempts reported: 4xx was asked once, 5xx three times
    assert [server.hits["/" + p] for p, _, _ in FAULTS if not p.startswith(("redirect", "loop"))] == \
        [n for p, _, n in FAULTS if not p.startswith(("redirect", "loop"))]
    assert [server.hits[p] for p in ("/redirect/3/hop.jpg", "/redirect/2/hop.jpg", "/redirect/1/hop.jpg")] == [1] * 3
    assert server.hits["/img/hop.jpg"] == 1 and by_path["redirect/3/hop.jpg"].data == server.files["hop.jpg"]
    assert server.hits["/loop"] == download.MAX_REDIRECTS + 1
    # timeouts did not hang (three attempts of 0.5 s each; the bound only separates "ends" from "hangs")
    assert elapsed < 30
    for path in ("slow/c.jpg", "stall/c.jpg", "hang"):
        assert by_path[path].elapsed_s < 20


def test_every_valid_image_arrives_intact_and_in_order(server):
    images = {f"many/{i}.jpg": jpeg(20 + i % 7, 20, (i, 255 - i, 3 * i % 256)) for i in range(150)}
    urls = server.register(images)
    tricky = [(server.url("flaky/1/a.jpg"), "a.jpg"), (server.url("redirect/2/b.png"), "b.png"),
              (server.url("busy/deep/d.jpg?after=0"), "deep/d.jpg"), (server.url("gzip/c.jpg"), "c.jpg")]
    mixed = urls[:50] + [u for u, _ in tricky] + urls[50:]
    expected = [images[n] for n in list(images)[:50]] + [server.files[n] for _, n in tricky] + \
        [images[n] for n in list(images)[50:]]
    results = fetch_all(mixed, DownloadConfig(threads=8, timeout_s=2.0, retries=2, backoff_s=0.01))
    assert [r.url for r in results] == mixed
    assert [r.status for r in results] == ["ok"] * len(mixed)
    assert [r.data for r in results] == expected  # none lost, none swapped, byte for byte
    assert all(r.bytes == len(r.data) for r in results)


def test_requests_really_overlap_and_threads_bound_them(server):
    slow = [server.url(f"delay/0.3/a.jpg?n={i}") for i in range(8)]
    results = fetch_all(slow, DownloadConfig(threads=8, timeout_s=5.0))
    assert all(r.status == "ok" for r in results)
    assert server.max_in_flight > 1  # counted at the server, not by the wall clock

    server.wait_idle()
    server.reset_stats()
    results = fetch_all([server.url(f"delay/0.05/a.jpg?m={i}") for i in range(9)], DownloadConfig(threads=3))
    assert all(r.status == "ok" for r in results)
    assert 1 < server.max_in_flight <= 3


def test_a_dripping_server_is_cut_off_at_the_deadline(server):
    server.files["long.jpg"] = jpeg(400, 300) + b"\0" * 4000  # dripping it all would take over 10 s
    (result,) = fetch_all([server.url("slow/long.jpg")], DownloadConfig(timeout_s=0.5, retries=0))
    assert result.status == "timeout" and result.attempts == 1
    assert 0 < result.bytes < len(server.files["long.jpg"]) // 4
    assert result.elapsed_s < 5.0  # the deadline covers the whole body (dripping it all takes > 10 s)


def test_retry_after_is_honoured_and_capped(server, monkeypatch):
    config = DownloadConfig(timeout_s=2.0, retries=1, backoff_s=0.01)
    (waited,) = fetch_all([server.url("busy/a.jpg?after=1")], config)
    assert waited.status == "ok" and waited.attempts == 2 and waited.elapsed_s >= 1.0  # not the 0.01 s backoff
    monkeypatch.setattr(download, "MAX_RETRY_AFTER_S", 0.2)
    (capped,) = fetch_all([server.url("busy/a.jpg?after=3600")], config)
    assert capped.status == "ok" and capped.attempts == 2 and capped.elapsed_s < 60  # not the 3600 s asked
    (dated,) = fetch_all([server.url("busy/a.jpg?after=Wed, 21 Oct 2015 07:28:00 GMT")], config)
    assert dated.status == "ok" and dated.attempts == 2


def test_backoff_doubles_between_attempts(server):
    (result,) = fetch_all([server.url("status/502")], DownloadConfig(retries=2, backoff_s=0.1))
    assert result.status == "http_502" and result.attempts == 3
    assert result.elapsed_s >= 0.1 + 0.2


def test_no_retries_means_one_attempt(server):
    config = DownloadConfig(retries=0, backoff_s=5.0, timeout_s=0.5)
    results = fetch_all([server.url("status/503"), server.url("drop"), server.url("truncated/c.jpg")], config)
    assert [(r.status, r.attempts) for r in results] == [("http_503", 1), ("connection_error", 1), ("truncated", 1)]
    assert all(r.elapsed_s < 4.0 for r in results)  # no 5 s backoff after the last attempt


def test_max_bytes_boundary(server):
    size = len(server.files["c.jpg"])
    at, under = (fetch_all([server.url("img/c.jpg")], DownloadConfig(max_bytes=n))[0] for n in (size, size - 1))
    assert at.status == "ok" and at.data == server.files["c.jpg"]
    assert under.status == "too_large" and under.bytes == 0  # Content-Length says so before the body


def test_decompression_bomb_is_too_large_not_a_crash(server):
    server.files["bomb.png"] = png_header(30000, 30000)  # 900 Mpixel declared in 60 bytes
    (result,) = fetch_all([server.url("img/bomb.png")], DownloadConfig())
    assert result.status == "too_large" and "pixels" in result.detail


def test_user_agent_is_sent(server):
    fetch_all([server.url("img/a.jpg"), server.url("redirect/1/a.jpg")], DownloadConfig(user_agent="probe/2"))
    assert server.user_agents == {"probe/2": 3}


def test_connection_refused_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    (result,) = fetch_all([f"http://127.0.0.1:{port}/a.jpg"], DownloadConfig(retries=1, backoff_s=0.01))
    assert result.status == "connection_error" and result.attempts == 2


def test_thousands_of_distinct_urls(server):
    files = {f"bulk/{i:05d}.png": png(8, 8, (i % 256, i // 256, 9)) for i in range(2000)}
    urls = server.register(files)
    results = fetch_all(urls, DownloadConfig(threads=16))
    assert [r.data for r in results] == list(files.values())
    assert sum(server.hits[f"/img/{name}"] for name in files) == len(files)  # each fetched once


def test_fetch_each_reports_every_position_once(server):
    urls = [server.url(p) for p in ("img/a.jpg", "status/404", "delay/0.2/b.png", "img/c.jpg")] + ["nope"]
    got = dict(fetch_each(urls, DownloadConfig(threads=4, retries=0)))
    assert sorted(got) == list(range(len(urls)))
    assert [got[i].url for i in range(len(urls))] == urls
    assert list(fetch_each([], DownloadConfig())) == [] and fetch_all([], DownloadConfig()) == []


def test_closing_fetch_each_early_cancels_what_has_not_started(server):
    urls = [server.url(f"delay/0.2/a.jpg?k={i}") for i in range(40)]
    started = time.monotonic()
    results = fetch_each(urls, DownloadConfig(threads=2))
    next(results)
    results.close()
    assert time.monotonic() - started < 2.0  # 40 x 0.2 s / 2 threads would be 4 s
    assert sum(server.hits.values()) < 10
