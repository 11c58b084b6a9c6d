"""The downloader against a real misbehaving HTTP server on 127.0.0.1."""

import pytest

from pipelines.download import fetch_all
from schemas.config import DownloadConfig
from tests.http_faults import FaultServer
from tests.images import jpeg

CONFIG = DownloadConfig(threads=8, timeout_s=1.0, retries=2, backoff_s=0.01, max_bytes=200_000)


@pytest.fixture(scope="module")
def server():
    with FaultServer() as server:
        for i in range(20):
            server.files[f"{i}.jpg"] = jpeg(64 + i, 48, color=(10 * i, 100, 200))
        yield server


CASES = [
    ("img/3.jpg", "ok", 1),
    ("status/404", "http_404", 1),  # 4xx: final at once
    ("status/403", "http_403", 1),
    ("status/503", "http_503", 3),  # 5xx: retried, then given up
    ("flaky/2/4.jpg", "ok", 3),  # 500 twice, then the image
    ("busy/5.jpg", "ok", 2),  # 429 with Retry-After, then the image
    ("slow/6.jpg", "timeout", 3),  # drips slower than the timeout
    ("truncated/7.jpg", "truncated", 3),
    ("html/page", "not_an_image", 1),
    ("redirect/3/8.jpg", "ok", 1),
    ("loop", "too_many_redirects", 1),
    ("big/300000", "too_large", 1),
    ("drop", "connection_error", 3),
]


def test_every_fault_ends_with_its_status(server):
    results = fetch_all([server.url(path) for path, _, _ in CASES] + ["ftp://x/y.jpg", "not a url"], CONFIG)
    got = [(r.status, r.attempts) for r in results]
    assert got == [(status, attempts) for _, status, attempts in CASES] + [("invalid_url", 0)] * 2
    assert all(r.detail for r in results if r.status != "ok")


def test_every_valid_image_arrives_intact_and_in_order(server):
    paths = [f"img/{i}.jpg" for i in range(10, 20)] + ["flaky/1/9.jpg", "redirect/2/2.jpg"]
    results = fetch_all([server.url(p) for p in paths], CONFIG)
    assert [r.url for r in results] == [server.url(p) for p in paths]
    expected = [server.files[p.rsplit("/", 1)[1]] for p in paths]
    assert [r.data for r in results] == expected
    assert all(r.status == "ok" and r.bytes == len(r.data) for r in results)


def test_requests_run_concurrently(server):
    server.max_in_flight = 0
    fetch_all([server.url(f"slow/{i}.jpg") for i in range(8)], DownloadConfig(threads=8, timeout_s=5.0))
    assert server.max_in_flight > 1


def test_content_length_over_the_limit_is_refused_before_reading(server):
    server.files["huge.jpg"] = b"\xff\xd8" + b"\0" * 300_000
    (result,) = fetch_all([server.url("img/huge.jpg")], CONFIG)
    assert result.status == "too_large" and result.bytes == 0 and "Content-Length" in result.detail


def test_a_dripping_server_is_cut_off_at_the_timeout(server):
    server.files["long.jpg"] = jpeg(400, 300) + b"\0" * 4000  # takes over 10 s to drip
    (result,) = fetch_all([server.url("slow/long.jpg")], DownloadConfig(timeout_s=0.5, retries=0))
    assert result.status == "timeout" and result.bytes < len(server.files["long.jpg"]) // 4  # cut off early
