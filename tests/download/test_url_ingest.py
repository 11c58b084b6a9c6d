"""Ingest of a Conceptual Captions URL list through the real pipeline, against a misbehaving server:
nothing that serves a valid image is lost, every URL has one status row, reruns stay off the network."""

import dataclasses
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from pipelines.runner import RunnerConfig
from pipelines.stages.ingest import run_ingest
from schemas.config import ConceptualCaptionsConfig, CorpusConfig, DownloadConfig, ImageConfig, TextConfig
from schemas.keys import shard_of
from tests.http_server import FaultServer
from tests.images import jpeg

GOOD = [f"img/{i}.jpg" for i in range(12)] + ["flaky/1/12.jpg", "redirect/2/13.jpg", "busy/14.jpg"]
BAD = {"status/404": "http_404", "html/page": "not_an_image", "slow/15.jpg": "timeout",
       "truncated/16.jpg": "truncated", "img/missing.jpg": "http_404", "img/broken.jpg": "decode_error"}


@pytest.fixture
def url_source(tmp_path):
    with FaultServer() as server:
        for i in range(17):
            server.files[f"{i}.jpg"] = jpeg(40 + i, 30, color=(15 * i, 90, 160))
        whole = jpeg(200, 150)
        server.files["broken.jpg"] = whole[: len(whole) * 3 // 4]  # opens as a JPEG, does not decode
        paths = GOOD + list(BAD)
        (tmp_path / "cc").mkdir()
        (tmp_path / "cc" / "Train_GCC-training.tsv").write_text(
            "".join(f"caption number {i}\t{server.url(p)}\n" for i, p in enumerate(paths)))
        source = ConceptualCaptionsConfig(root=str(tmp_path / "cc"), images=None, shards=3)
        config = CorpusConfig(str(tmp_path / "corpus"), {"cc": source}, ImageConfig(), TextConfig(),
                              DownloadConfig(threads=8, timeout_s=1.0, retries=1, backoff_s=0.01))
        yield config, server, paths


def _statuses(config):
    files = sorted((Path(config.output) / "urls" / "cc").glob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def test_url_list_ingest_loses_nothing_and_accounts_for_every_url(url_source):
    config, server, paths = url_source
    (result,) = run_ingest(config, ["cc"], RunnerConfig(), show_progress=False)
    statuses = _statuses(config)
    assert sorted(row["url"] for row in statuses) == sorted(server.url(p) for p in paths)  # each exactly once
    by_url = {row["url"]: row["status"] for row in statuses}
    assert {p: by_url[server.url(p)] for p in BAD} == BAD
    assert all(by_url[server.url(p)] == "ok" for p in GOOD)
    assert result.counts.written == len(GOOD)
    assert dict(result.counts.rejected) == {"failed_download": len(BAD) - 1, "corrupt_image": 1}
    tars = sorted(str(p) for p in (Path(config.output) / "raw" / "cc").glob("*.tar"))
    images = {s["__key__"]: s["jpg"] for s in wds.WebDataset(tars, shardshuffle=False)}
    assert sorted(images.values()) == sorted(server.files[p.rsplit("/", 1)[1]] for p in GOOD)


def test_rerun_stays_off_the_network_and_retry_fetches_only_failures(url_source):
    config, server, paths = url_source
    run_ingest(config, ["cc"], RunnerConfig(), show_progress=False)
    hits = dict(server.hits)
    run_ingest(config, ["cc"], RunnerConfig(), show_progress=False)
    assert dict(server.hits) == hits

    failing = {f.name for f in (Path(config.output) / "urls" / "cc").glob("*.parquet")
               if any(row["status"] != "ok" for row in pq.read_table(f).to_pylist())}
    server.files["missing.jpg"] = jpeg(33, 33)  # the 404 starts to serve
    (retried,) = run_ingest(config, ["cc"], RunnerConfig(), show_progress=False, retry_failed=True)
    assert retried.skipped_shards == retried.shards - len(failing)  # only shards with failures are redone
    assert server.hits["/img/missing.jpg"] == hits["/img/missing.jpg"] + 1
    assert all(server.hits[f"/{p}"] == hits[f"/{p}"] for p in GOOD)  # good samples were copied, not fetched
    assert retried.counts.written == len(GOOD) + 1
    assert {row["url"]: row["status"] for row in _statuses(config)}[server.url("img/missing.jpg")] == "ok"


def test_status_table_is_fresh_after_overwrite(url_source):
    config, _, paths = url_source
    run_ingest(config, ["cc"], RunnerConfig(), show_progress=False)
    run_ingest(dataclasses.replace(config), ["cc"], RunnerConfig(), overwrite=True, show_progress=False)
    assert len(_statuses(config)) == len(paths)


def _shards(config):
    folder = Path(config.output) / "raw" / "cc"
    return {p.name: (p.read_bytes(), pq.read_table(p.with_suffix(".parquet")).to_pylist())
            for p in sorted(folder.glob("*.tar"))}


def test_a_slow_url_changes_no_shard_of_a_worker(url_source, tmp_path):
    """The 3 shards share one worker's download pool; a URL answering slower than the timeout, or the same
    row failing at once, gives the same tars and index rows (a slow URL only delays its own shard)."""
    config, server, paths = url_source
    run_ingest(config, ["cc"], RunnerConfig(), show_progress=False)
    tsv = Path(config.sources["cc"].root) / "Train_GCC-training.tsv"
    tsv.write_text(tsv.read_text().replace(server.url("slow/15.jpg"), server.url("status/410")))
    fast = dataclasses.replace(config, output=str(tmp_path / "fast"))
    run_ingest(fast, ["cc"], RunnerConfig(), show_progress=False)
    assert len(_shards(config)) == 3 and _shards(config) == _shards(fast)
    for name, (_, rows) in _shards(config).items():
        assert all(shard_of(row["key"], 3) == int(name[:5]) for row in rows)  # each sample where its key says
    status = {row["url"]: row["status"] for row in _statuses(fast)}
    assert status[server.url("status/410")] == "http_410" and server.url("slow/15.jpg") not in status
