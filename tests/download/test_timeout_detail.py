"""A URL that times out mid-body gives the same reject and URL status rows in every run: how many bytes
arrived before the deadline varies with timing, so it is kept in the status table's ``bytes`` column
(a measurement, like ``elapsed_s``), never in the detail text that rejects repeat."""

import pyarrow.parquet as pq

from pipelines.raw_shard import ShardPaths, write_shard
from schemas.config import DownloadConfig, ImageConfig
from schemas.records import Candidate
from tests.images import jpeg

CONFIG = DownloadConfig(threads=4, timeout_s=0.5, retries=0)
TIMEOUTS = ("slow/large.jpg", "stall/large.jpg")  # dripped slower than the timeout; half the body, then silence


def _run(server, folder):
    records = [Candidate(f"cc-{row}", "cc", "pair", str(row), f"list.tsv:{row}", text="caption",
                         image_url=server.url(path)) for row, path in enumerate(TIMEOUTS)]
    paths = ShardPaths.of(folder, "ingest", "cc", 0)
    write_shard(paths, "ingest", records, ImageConfig(), "hash", CONFIG)
    measured = ("bytes", "elapsed_s")
    statuses = [{k: v for k, v in row.items() if k not in measured} for row in pq.read_table(paths.urls).to_pylist()]
    return open(paths.rejects, "rb").read(), statuses


def test_a_timeout_mid_body_gives_the_same_rows_in_two_runs(http_server, tmp_path):
    http_server.files["large.jpg"] = jpeg(400, 300)
    first = _run(http_server, str(tmp_path / "a"))
    http_server.drip_interval_s /= 2  # another run, another network: more bytes arrive before the deadline
    second = _run(http_server, str(tmp_path / "b"))
    assert first == second
    rejects, statuses = first
    assert [row["status"] for row in statuses] == ["timeout", "timeout"]
    assert {row["detail"] for row in statuses} == {"read timed out after 0.5 s"}
