"""Several shards over one download pool (pipelines/shard_downloads.py) against the misbehaving server: a
shard waiting for a slow URL does not hold back its neighbours, and every shard's files are the bytes
``write_shard`` makes of it alone."""

import threading

import pyarrow.parquet as pq
import pytest

from pipelines.raw_shard import ShardJob, ShardPaths, write_shard
from pipelines.shard_downloads import ShardWriter
from schemas.config import DownloadConfig, ImageConfig
from schemas.records import Candidate
from tests.images import jpeg

CONFIG = DownloadConfig(threads=4, timeout_s=3.0, retries=0, max_bytes=200_000)  # time for good URLs on a busy machine
# shard -> (path, URL status); shard 0 waits for a body dripped slower than the timeout (10 s for 3 kB)
SHARDS = {
    0: [("slow/large.jpg", "timeout"), ("img/1.jpg", "ok")],
    1: [("img/2.jpg", "ok"), ("status/404", "http_404"), ("html/page", "not_an_image"), ("img/3.jpg", "ok")],
    2: [("truncated/4.jpg", "truncated"), ("img/broken.jpg", "decode_error"), ("sized/300000", "too_large"),
        ("img/5.jpg", "ok")],
}


def _records(server, shard):
    return [Candidate(f"cc-{shard}-{row}", "cc", "pair", f"{shard}-{row}", f"list.tsv:{row}", text=f"caption {row}",
                      image_url=server.url(path)) for row, (path, _) in enumerate(SHARDS[shard])]


def _serve(server):
    server.register({f"{i}.jpg": jpeg(40 + 10 * i, 30, color=(20 * i, 90, 160)) for i in range(6)})
    server.files["large.jpg"] = jpeg(400, 300)
    whole = jpeg(200, 150)
    server.files["broken.jpg"] = whole[: len(whole) * 3 // 4]  # opens as a JPEG, does not decode


def _files(paths: ShardPaths):
    """Tar and index bytes; rejects and URL statuses less timings."""
    rejects = [(r["key"], r["reason"], r["location"]) for r in pq.read_table(paths.rejects).to_pylist()]
    statuses = [(r["url"], r["status"], r["attempts"]) for r in pq.read_table(paths.urls).to_pylist()]
    return open(paths.tar, "rb").read(), open(paths.index, "rb").read(), rejects, statuses


def test_shards_sharing_a_pool_are_written_as_their_urls_finish(http_server, tmp_path):
    _serve(http_server)
    writer = ShardWriter(ImageConfig(), CONFIG)
    committed = []
    for shard in SHARDS:
        paths = ShardPaths.of(str(tmp_path / "shared"), "ingest", "cc", shard)
        committed += writer.add(ShardJob.of(paths, "ingest", _records(http_server, shard), f"hash{shard}"))
    committed += writer.finish()
    order = [int(paths.index.rsplit("/", 1)[1][:5]) for paths, _ in committed]
    assert sorted(order) == [0, 1, 2] and order[-1] == 0  # 1 and 2 did not wait for 0's slow URL
    assert {shard: counts.written for shard, (_, counts) in zip(order, committed, strict=True)} == \
        {shard: sum(status == "ok" for _, status in rows) for shard, rows in SHARDS.items()}

    for shard, rows in SHARDS.items():  # the same bytes as a shard written alone, every failure told apart
        alone = ShardPaths.of(str(tmp_path / "alone"), "ingest", "cc", shard)
        write_shard(alone, "ingest", _records(http_server, shard), ImageConfig(), f"hash{shard}", CONFIG)
        shared = ShardPaths.of(str(tmp_path / "shared"), "ingest", "cc", shard)
        assert _files(shared) == _files(alone)
        assert _files(shared)[3] == [(http_server.url(path), status, 1) for path, status in rows]



def test_a_shard_that_cannot_be_written_stops_the_downloads_and_leaves_no_file(http_server, tmp_path):
    _serve(http_server)
    (tmp_path / "out" / "raw").mkdir(parents=True)
    (tmp_path / "out" / "raw" / "cc").write_text("a file where the shard folder belongs")
    writer = ShardWriter(ImageConfig(), CONFIG)
    with pytest.raises(OSError):
        for shard in (1, 2):
            writer.add(ShardJob.of(ShardPaths.of(str(tmp_path / "out"), "ingest", "cc", shard), "ingest",
                                   _records(http_server, shard), "hash"))
        writer.finish()
    assert not [t for t in threading.enumerate() if t.name.startswith("fetch")]  # the pool is shut down
    assert [p.name for p in (tmp_path / "out").rglob("*") if p.is_file()] == ["cc"]
