"""`unicorpus serve` over real HTTP on 127.0.0.1: every endpoint, the bearer token, and every refusal."""

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from urllib.parse import quote, urlencode

import pytest

from pipelines.minicorpus import served
from retrieval.query import QueryEngine
from retrieval.service import Service
from tests.conftest import free_port, wait_for_port

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def service(ingested, mini_corpus, tmp_path_factory):
    """(base URL, an in-process engine over the same corpus to compare with)."""
    config, embedder = served.build(ingested[0], str(tmp_path_factory.getbasetemp() / "served"))
    path = served.write_config(mini_corpus[0], config)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--config", path, "--port", str(port),
                                "--token", TOKEN], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, process, timeout=180)
        yield f"http://127.0.0.1:{port}", QueryEngine(config, embedder=embedder)
    finally:
        process.terminate()
        process.wait(timeout=30)


def call(base, path, token=TOKEN, method="GET"):
    """(status, headers, body bytes) of one request; the JSON of a JSON answer is ``json.loads(body)``."""
    request = urllib.request.Request(base + path, method=method,
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get_json(base, path, **kwargs):
    status, headers, body = call(base, path, **kwargs)
    assert headers["Content-Type"] == "application/json", (path, body[:200])
    return status, json.loads(body)


def test_health_is_open_and_lists_the_indexes(service):
    base, engine = service
    status, body = get_json(base, "/healthz", token=None)
    assert status == 200 and body["status"] == "ok" and body["indexes"] == engine.catalog()


def test_token_is_required_everywhere_else(service):
    base, _ = service
    for path in ("/api/search?q=ball", "/api/sample/coco-504518", "/api/image/coco-504518", "/metrics",
                 "/api/related?key=coco-504518", "/api/indexes"):
        for token in (None, "wrong"):
            status, headers, body = call(base, path, token=token)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), path
            assert json.loads(body)["error"] == "missing or wrong bearer token"
    assert call(base, "/", token=None)[0] == 200  # the page holds no data; its API calls carry the token


def test_search_by_text_tags_and_key_as_the_engine_answers(service):
    base, engine = service
    for params, expected in (
        ({"q": "a red ball on the grass", "k": 4}, engine.search(text="a red ball on the grass", k=4)),
        ({"tags": "ball,tree", "index": "tags"}, engine.search(tags="ball,tree", index="tags")),
        (
            {"key": "coco-504518", "index": "text/coco", "k": 3},
            engine.search(key="coco-504518", index="text/coco", k=3),
        ),
    ):
        status, body = get_json(base, "/api/search?" + urlencode(params))
        assert status == 200
        assert [(r["rank"], r["key"], r["text_index"], r["text"]) for r in body["results"]] == \
            [(h.rank, h.key, h.text_index, h.text) for h in expected]
        assert [r["score"] for r in body["results"]] == pytest.approx([h.score for h in expected], abs=1e-5)
    images = [r["image"] for r in body["results"]]
    assert images == [f"/api/image/{r['key']}?thumb=1" for r in body["results"]]  # coco pairs all have images
    _, body = get_json(base, "/api/search?" + urlencode({"q": "a tent", "index": "text/bookcorpus", "k": 1}))
    assert body["results"][0]["image"] is None


def test_sample_related_and_thumbnail(service):
    from PIL import Image

    base, engine = service
    status, sample = get_json(base, "/api/sample/coco-504518")
    assert status == 200 and sample["key"] == "coco-504518" and sample["image"] == "/api/image/coco-504518?thumb=1"
    assert sorted(r["label"] for r in sample["regions"]) == ["ball", "box"] and "feature" not in sample["regions"][0]
    status, headers, body = call(base, sample["image"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(body)) as image:
        assert image.format == "JPEG" and max(image.size) <= engine.thumbnail_side
    original = engine.image("coco-504518", thumb=False)[0]
    assert hashlib.sha256(original).hexdigest() == engine.corpus.row("coco-504518")["sha256"]
    for path in ("/api/image/coco-504518", "/api/image/coco-504518?thumb=0"):  # the original, as stored
        status, headers, body = call(base, path)
        assert status == 200 and body == original and headers["Content-Type"] == "image/jpeg"
    status, related = get_json(base, "/api/related?key=coco-504518&kind=images&k=3")
    assert status == 200 and [r["key"] for r in related["results"]] == [
        h.key for h in engine.related("coco-504518", k=3)
    ]
    assert all(r["image"] for r in related["results"])
    status, related = get_json(base, "/api/related?key=coco-504518&kind=texts&k=3&text_index=1")
    assert status == 200 and [(r["key"], r["text"]) for r in related["results"]] == \
        [(h.key, h.text) for h in engine.related("coco-504518", "texts", 3, 1)]


BAD = [
    ("/api/search?q=", 400, "empty query"),
    ("/api/search?q=%20%20", 400, "empty query"),
    ("/api/search", 400, "exactly one of"),
    ("/api/search?q=ball&tags=ball", 400, "exactly one of"),
    ("/api/search?q=ball&k=abc", 400, "k: expected an integer"),
    ("/api/search?q=ball&k=2.5", 400, "k: expected an integer"),
    ("/api/search?q=ball&k=0", 400, "1 <= k <= 1000"),
    ("/api/search?q=ball&k=100000", 400, "1 <= k <= 1000"),
    ("/api/search?q=ball&index=images", 400, "unknown space 'images'"),
    ("/api/search?q=ball&index=text/nope", 400, "no index 'text/nope'"),
    ("/api/search?tags=,,", 400, "empty tag list"),
    ("/api/search?q=ball&colour=red", 400, "unknown parameter 'colour'"),
    ("/api/search?q=ball&q=tree", 400, "given more than once"),
    ("/api/search?key=coco-999999999", 404, "no sample with key"),
    ("/api/related", 400, "key: missing"),
    ("/api/related?key=coco-504518&kind=videos", 400, "kind: expected one of images, texts"),
    ("/api/related?key=coco-504518&k=x", 400, "k: expected an integer"),
    ("/api/related?key={book}&kind=images", 404, "no links/related-images/bookcorpus/ table"),
    ("/api/related?key=coco-504518&kind=images&text_index=1", 400, "text_index: only for kind=texts"),
    ("/api/related?key=nosuch-1", 404, "no sample with key"),
    ("/api/sample/coco-999999999", 404, "no sample with key"),
    ("/api/sample", 400, "give the key in the path"),
    ("/api/image/nosuch-1", 404, "no sample with key"),
    ("/api/image/coco-504518?thumb=maybe", 400, "thumb: expected 0 or 1"),
    ("/api/nothing", 404, "unknown endpoint '/api/nothing'"),
    ("/static/../service.py", 404, "no static file"),
]


@pytest.mark.parametrize("path, status, message", BAD)
def test_bad_requests_get_a_json_4xx_with_a_message(service, path, status, message):
    base, engine = service
    book = engine.search(text="a tent", index="text/bookcorpus", k=1)[0].key  # a text-only sample
    got, body = get_json(base, path.format(book=book))
    assert (got, body["status"]) == (status, status) and message in body["error"], body


def test_wrong_method_is_a_json_405(service):
    base, _ = service
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "HEAD"):
        for path in ("/api/search?q=ball", "/healthz", "/"):
            status, headers, body = call(base, path, method=method)
            assert status == 405 and headers["Allow"] == "GET", (method, path)
            assert headers["Content-Type"] == "application/json" and headers["X-Content-Type-Options"] == "nosniff"
            if method != "HEAD":  # a HEAD answer has no body
                assert "use GET" in json.loads(body)["error"], (method, path)
    assert call(base, "/nowhere", method="POST")[0] == 404


@pytest.mark.parametrize("path, message", [
    ("/api/search?q=caf%E9%20ball", "the query string is not valid UTF-8"),
    ("/api/search?tags=caf%E9,ball", "the query string is not valid UTF-8"),
    ("/api/search?q=%FF%FE", "the query string is not valid UTF-8"),
    ("/api/sample/caf%E9", "the path is not valid UTF-8"),
])
def test_invalid_utf8_is_a_400(service, path, message):
    base, _ = service
    status, body = get_json(base, path)
    assert (status, body["error"]) == (400, message)


def raw_get(base: str, target: bytes) -> tuple[int, bytes]:
    """(status, body) of one GET whose request line carries ``target`` byte for byte (http.client refuses
    non-ASCII)."""
    import socket

    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        connection.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                           + b"\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_raw_bytes_on_the_request_line_are_a_400(service):
    """Bytes a client did not percent-escape make no valid request line (RFC 9112: the target is ASCII):
    uvicorn's parser answers 400 before the app; never a 200 with the bytes misread. The app itself,
    behind a more lenient server, refuses what is not UTF-8 as well (the lone surrogates they decode to)."""
    base, engine = service
    for target in (b"/api/related?key=caf\xe9", b"/api/sample/caf\xe9", "/api/related?key=café-1".encode()):
        assert raw_get(base, target)[0] == 400, target
    app = Service(engine)
    for path, query, message in (("/api/related", "key=caf\udce9", "the query string is not valid UTF-8"),
                                 ("/api/sample/caf\udce9", "", "the path is not valid UTF-8")):
        answer = app.handle("GET", path, query, {})
        assert (answer.status, json.loads(answer.body)["error"]) == (400, message)
    answer = app.handle("GET", "/api/related", "key=café-1", {})  # what a lenient server passes on as UTF-8
    assert (answer.status, json.loads(answer.body)["error"]) == (404, "no sample with key 'café-1' in the corpus")


def test_error_bodies_hold_no_server_path(service):
    base, engine = service
    book = engine.search(text="a tent", index="text/bookcorpus", k=1)[0].key
    bodies = [call(base, path.format(book=book))[2].decode() for path, _, _ in BAD]
    bodies += [call(base, p)[2].decode() for p in ("/api/image/" + book, "/api/related?key=nosuch-1")]
    assert len(bodies) == len(BAD) + 2
    for body in bodies:
        assert engine.corpus.root not in body and "/tmp" not in body and "site-packages" not in body, body


def test_headers_nosniff_everywhere_and_cache_headers_on_images(service):
    base, _ = service
    for path in ("/", "/healthz", "/api/search?q=ball", "/api/search?q=", "/api/nothing", "/static/app.js",
                 "/api/image/coco-504518?thumb=1", "/metrics"):
        assert call(base, path)[1]["X-Content-Type-Options"] == "nosniff", path
    for path in ("/api/image/coco-504518?thumb=1", "/api/image/coco-504518"):
        status, headers, body = call(base, path)
        assert status == 200 and headers["Cache-Control"].startswith("private, max-age=") and headers["ETag"]
        revalidated = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {TOKEN}",
                                                                   "If-None-Match": headers["ETag"]})
        try:
            urllib.request.urlopen(revalidated, timeout=60)
            raise AssertionError("expected 304")
        except urllib.error.HTTPError as e:
            assert e.code == 304 and e.read() == b"" and e.headers["ETag"] == headers["ETag"]
    thumb, original = (call(base, p)[1]["ETag"] for p in ("/api/image/coco-504518?thumb=1", "/api/image/coco-504518"))
    assert thumb != original


def test_favicon_and_page_with_a_query_string(service):
    base, _ = service
    status, headers, body = call(base, "/favicon.ico", token=None)
    assert status == 200 and headers["Content-Type"] == "image/svg+xml" and body.startswith(b"<svg")
    status, headers, body = call(base, "/?q=a+red+ball&k=3", token=None)  # a shared page link
    assert status == 200 and b"<title>unicorpus search</title>" in body


def test_metrics_count_requests_by_endpoint_and_status(service):
    base, engine = service

    def metrics():
        status, headers, body = call(base, "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        return body.decode()

    def count(text, endpoint, status):
        found = re.search(rf'^unicorpus_requests_total{{endpoint="{re.escape(endpoint)}",status="{status}"}} '
                          r'(\d+)(\.0)?$', text, re.M)
        return int(found.group(1)) if found else 0

    before = metrics()
    for _ in range(3):
        call(base, "/api/search?q=ball&k=2")
    call(base, "/api/search?q=ball&k=0")
    call(base, "/api/sample/coco-999999999")
    after = metrics()
    assert count(after, "/api/search", 200) - count(before, "/api/search", 200) == 3
    assert count(after, "/api/search", 400) - count(before, "/api/search", 400) == 1
    assert count(after, "/api/sample", 404) - count(before, "/api/sample", 404) == 1
    total = int(re.search(r'^unicorpus_request_duration_seconds_count{endpoint="/api/search"} (\d+)(\.0)?$',
                          after, re.M)[1])
    infinite = int(re.search(r'^unicorpus_request_duration_seconds_bucket{endpoint="/api/search",le="\+Inf"} '
                             r'(\d+)(\.0)?$', after, re.M)[1])
    assert total == infinite == sum(count(after, "/api/search", s) for s in (200, 400, 401, 404, 405))
    for space, sources in engine.catalog().items():
        for source, n in sources.items():
            assert f'unicorpus_index_vectors{{source="{source}",space="{space}"}} {float(n)}\n' in after


def test_key_with_a_slash_or_space_is_one_path_segment(service):
    base, _ = service
    status, body = get_json(base, "/api/sample/" + quote("coco 1/2", safe=""))
    assert status == 404 and "'coco 1/2'" in body["error"]


@pytest.mark.parametrize("serve, message", [
    ({"port": 70000}, "retrieval.serve.port: expected 0..65535"),
    ({"token": "  "}, "retrieval.serve.token: empty"),
    ({"max_k": 0}, "retrieval.serve.max_k: expected a positive integer"),
    ({"threads": 0}, "retrieval.serve.threads: expected a positive integer"),
    ({"colour": "red"}, "colour"),
])
def test_serve_config_is_checked_with_its_dotted_key(tmp_path, serve, message):
    from schemas.config import parse_config
    from schemas.config_errors import ConfigError

    data = {"output": "out", "sources": {"books": {"kind": "bookcorpus", "root": str(tmp_path)}},
            "retrieval": {"serve": serve}}
    with pytest.raises(ConfigError, match=message):
        parse_config(data, str(tmp_path))


HUGE_KEY = "coco-504518"
RSS_BOUND_MB = 200  # under one full decode (10000 x 10000 x 3 = 300 MB; the old thumbnail code peaked at 756 MB)


def _rss_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith(f"{field}:")))


@pytest.fixture(scope="module")
def huge_image_service(ingested, mini_corpus, tmp_path_factory):
    """The served corpus copied, with HUGE_KEY's stored image replaced by a 100-megapixel JPEG (appended to
    its shard's tar; the raw index row points at it), served by `unicorpus serve` in its own process."""
    import dataclasses
    import shutil
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from retrieval.corpus import Corpus
    from schemas.keys import shard_name

    config, _ = served.build(ingested[0], str(tmp_path_factory.getbasetemp() / "served"))
    root = str(tmp_path_factory.mktemp("huge") / "served")
    shutil.copytree(config.output, root)
    config = dataclasses.replace(config, output=root)
    source, shard, _ = Corpus.from_config(config).locate(HUGE_KEY)
    gradient = Image.linear_gradient("L").resize((10000, 10000))  # smooth: a realistic file size, not noise
    huge = io.BytesIO()
    Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.ROTATE_90), gradient.point(lambda v: 255 - v)))\
        .save(huge, "JPEG", quality=90)
    del gradient
    data = huge.getvalue()
    tar_path = f"{root}/raw/{source}/{shard_name(shard)}.tar"
    with tarfile.open(tar_path, "a") as tar:
        info = tarfile.TarInfo(f"{HUGE_KEY}.huge.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with tarfile.open(tar_path) as tar:
        offset = tar.getmember(f"{HUGE_KEY}.huge.jpg").offset_data
    index_path = f"{root}/raw/{source}/{shard_name(shard)}.parquet"
    table = pq.read_table(index_path)
    rows = table.to_pylist()
    for row in rows:
        if row["key"] == HUGE_KEY:
            row.update(image_offset=offset, image_size=len(data), width=10000, height=10000,
                       sha256=hashlib.sha256(data).hexdigest())
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), index_path)
    path = served.write_config(mini_corpus[0], config)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--config", path, "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, process, timeout=180)
        yield f"http://127.0.0.1:{port}", process, data
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
        assert "DecompressionBombWarning" not in stderr, stderr  # the serve process says nothing about it


def test_twenty_concurrent_thumbnails_of_a_100_megapixel_jpeg_stay_under_the_memory_bound(huge_image_service):
    """Issue 13: 10 such requests took the standard-library server from 1.9 to 8.8 GB (a full decode each)."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    base, process, data = huge_image_service
    status, _, body = call(base, "/api/search?q=ball&k=10", token=None)  # model and indexes warm
    other = next(hit["image"] for hit in json.loads(body)["results"] if hit["image"] and hit["key"] != HUGE_KEY)
    assert call(base, other, token=None)[0] == 200  # PIL loaded, a small thumbnail made
    before = _rss_kb(process.pid, "VmRSS")
    with open(f"/proc/{process.pid}/clear_refs", "w") as f:
        f.write("5")  # reset the process's peak RSS (VmHWM) to its RSS now
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: call(base, f"/api/image/{HUGE_KEY}?thumb=1", token=None), range(20)))
    peak = _rss_kb(process.pid, "VmHWM")
    assert [status for status, _, _ in answers] == [200] * 20
    assert len({body for _, _, body in answers}) == 1  # one decode, shared
    with Image.open(io.BytesIO(answers[0][2])) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (256, 256)
        centre = thumb.convert("RGB").getpixel((128, 128))
    assert all(abs(c - 128) < 16 for c in centre), centre  # the gradients' middle: the real image, scaled
    print(f"RSS {before / 1024:.0f} MB, peak growth {(peak - before) / 1024:.1f} MB over 20 thumbnail requests")
    assert (peak - before) / 1024 < RSS_BOUND_MB, f"RSS grew {(peak - before) / 1024:.0f} MB"
    status, headers, body = call(base, f"/api/image/{HUGE_KEY}", token=None)  # the original, byte for byte
    assert status == 200 and body == data


def test_thumbnails_of_many_images_decode_at_most_the_bound_at_once():
    """retrieval.thumbnails.Thumbnails: distinct keys decode at most ``decodes`` at a time; one key's concurrent
    requests share one read; a cached thumbnail is not read again."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from retrieval.thumbnails import Thumbnails

    lock, state, reads = threading.Lock(), {"now": 0, "most": 0}, []
    image = io.BytesIO()
    Image.new("RGB", (1200, 900), "teal").save(image, "JPEG")

    def read(key):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            reads.append(key)
        threading.Event().wait(0.05)  # a slow read, so that requests overlap
        with lock:
            state["now"] -= 1
        return image.getvalue()

    thumbnails = Thumbnails(read, decodes=2, cached=100)
    with ThreadPoolExecutor(16) as pool:
        distinct = list(pool.map(lambda i: thumbnails.get(f"k{i}", 64), range(16)))
    assert 1 <= state["most"] <= 2 and sorted(reads) == sorted(f"k{i}" for i in range(16))
    with Image.open(io.BytesIO(distinct[0])) as thumb:
        assert thumb.size == (64, 48)
    reads.clear()
    with ThreadPoolExecutor(16) as pool:
        same = list(pool.map(lambda i: thumbnails.get("new", 64), range(16)))
    assert reads == ["new"] and len(set(same)) == 1
    thumbnails.get("k3", 64)
    assert reads == ["new"]  # cached


def query_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "cli.main", "query", *args], capture_output=True, text=True,
                          timeout=120, **kwargs)


def test_query_cli_asks_a_running_server(service):
    """`unicorpus query --server URL` answers as the engine does, with no model of its own."""
    base, engine = service
    out = query_cli("--server", base, "--token", TOKEN, "a red ball on the grass", "-k", "3", "--json")
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)["results"]
    assert [(r["rank"], r["key"], r["text"]) for r in results] == \
        [(h.rank, h.key, h.text) for h in engine.search(text="a red ball on the grass", k=3)]
    out = query_cli("--server", base, "--key", "coco-504518", "--related", "images", "-k", "2",
                    env={**os.environ, "UNICORPUS_TOKEN": TOKEN})  # the token from the environment
    assert out.returncode == 0 and out.stdout.splitlines()[1].split()[3] == engine.related("coco-504518", k=1)[0].key
    for args, message in ((["ball", "-k", "0"], "1 <= k <= 1000"), (["--key", "coco-999999999"], "no sample with key"),
                          (["--index", "text/nope", "ball"], "no index 'text/nope'")):
        out = query_cli("--server", base, "--token", TOKEN, *args)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and message in out.stderr, (args, out.stderr)
        assert "<corpus>" not in out.stderr or "no sample" in out.stderr
    out = query_cli("--server", base, "--token", "wrong", "ball")
    assert out.returncode == 2 and out.stderr == "unicorpus query: error: missing or wrong bearer token\n"


def test_interactive_history_on_a_terminal(service, tmp_path):
    """--interactive on a real terminal (a pty): the up arrow recalls the last question, and the next session
    starts with this one's history."""
    import pty
    import select

    base, engine = service
    history = tmp_path / "history"

    def session(keys: list[bytes]) -> bytes:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the CLI on the terminal's slave side
            env = {**os.environ, "TERM": "xterm", "UNICORPUS_TOKEN": TOKEN}
            os.execve(sys.executable, [sys.executable, "-m", "cli.main", "query", "--server", base, "-i",
                                       "--history", str(history), "--json", "-k", "1"], env)
        output = b""

        def read_until(count: int) -> None:
            nonlocal output
            while output.count(b"query> ") < count:
                ready, _, _ = select.select([fd], [], [], 60)
                assert ready, f"no prompt; so far: {output[-500:]!r}"
                output += os.read(fd, 65536)

        try:
            read_until(1)
            for n, key in enumerate(keys, start=2):
                os.write(fd, key)
                read_until(n)
            os.write(fd, b"quit\r")
            while True:  # until the child closes the terminal
                ready, _, _ = select.select([fd], [], [], 60)
                try:
                    chunk = os.read(fd, 65536) if ready else b""
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
        finally:
            _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, output[-500:]
        return output

    first = session([b"a red ball on the grass\r", b"\x1b[A\r"])  # a question, then the up arrow and Enter
    best = engine.search(text="a red ball on the grass", k=1)[0].key
    assert first.count(f'"key": "{best}"'.encode()) == 2
    assert "a red ball on the grass" in history.read_text()
    second = session([b"\x1b[A\x1b[A\r"])  # quit, then the question of the first session
    assert second.count(f'"key": "{best}"'.encode()) == 1
