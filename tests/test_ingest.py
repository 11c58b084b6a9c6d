"""Ingest of the mini corpus through the real Beam DirectRunner."""

import dataclasses
import glob
import json
import os

import pyarrow.parquet as pq
import webdataset as wds

from pipelines.runner import RunnerConfig
from pipelines.stages.ingest import run_ingest
from pipelines.summary import format_summary
from schemas import SCHEMA_VERSION
from tests.conftest import tree_digest


def test_every_source_matches_the_planted_ground_truth(ingested):
    config, expected, results = ingested
    assert [r.name for r in results] == list(config.sources) and len(results) >= 11
    for result in results:
        want = expected[result.name]
        assert result.counts.written == want["samples"], result.name
        assert dict(result.counts.rejected) == want["rejects"], result.name
        assert result.counts.records_in == result.counts.written + result.counts.rejected_total


def test_shards_read_back_with_plain_webdataset_and_pyarrow(ingested):
    config, _, results = ingested
    for result in results:
        tars = sorted(glob.glob(os.path.join(config.output, "raw", result.name, "*.tar")))
        assert len(tars) == result.shards
        samples = list(wds.WebDataset(tars, shardshuffle=False))
        index_keys = [k for t in tars for k in pq.read_table(t[:-4] + ".parquet").column("key").to_pylist()]
        assert [s["__key__"] for s in samples] == index_keys
        assert len(samples) == result.counts.written
        for sample in samples:
            meta = json.loads(sample["json"])
            modality = meta["modality"]
            assert ("txt" in sample) == (modality != "image"), sample["__key__"]
            assert any(ext in sample for ext in ("jpg", "png")) == (modality != "text"), sample["__key__"]


def test_rejects_name_file_and_reason(ingested):
    config, _, results = ingested
    for result in results:
        files = glob.glob(os.path.join(config.output, "rejects", "ingest", result.name, "*.parquet"))
        rows = [row for f in files for row in pq.read_table(f).to_pylist()]
        assert len(rows) == result.counts.rejected_total
        assert all(row["location"] and row["reason"] and row["source"] == result.name for row in rows)


def test_manifest_records_parameters_and_counts(ingested):
    config, _, results = ingested
    with open(os.path.join(config.output, "corpus.json")) as f:
        manifest = json.load(f)
    assert manifest["schema_version"] == SCHEMA_VERSION
    for result in results:
        entry = manifest["stages"]["ingest"][result.name]
        assert entry["counts"]["written"] == result.counts.written
        assert entry["counts"]["read"] == result.counts.records_in
        assert entry["params"]["config"]["shards"] == config.sources[result.name].shards


def test_rerun_reuses_every_shard_and_changes_no_byte(ingested):
    config, _, results = ingested
    before = tree_digest(config.output)
    again = run_ingest(config, list(config.sources), RunnerConfig(), show_progress=False)
    assert tree_digest(config.output) == before
    assert [r.skipped_shards for r in again] == [r.shards for r in results]
    assert [r.counts for r in again] == [r.counts for r in results]


def test_changed_parameters_redo_and_remove_stale_shards(ingested, tmp_path):
    config, _, _ = ingested
    name = next(n for n, s in config.sources.items() if s.kind == "coco")
    source = dataclasses.replace(config.sources[name], shards=1)
    small = dataclasses.replace(config, output=str(tmp_path), sources={name: source})
    first = run_ingest(dataclasses.replace(small, sources={name: config.sources[name]}), [name], RunnerConfig(),
                       show_progress=False)[0]
    second = run_ingest(small, [name], RunnerConfig(), show_progress=False)[0]
    assert second.shards == 1 and second.skipped_shards == 0
    assert sorted(os.listdir(tmp_path / "raw" / name)) == ["00000.parquet", "00000.tar", "sizes.json"]
    assert second.counts == first.counts
    with open(tmp_path / "raw" / name / "sizes.json") as f:  # open_clip's sizes: only the shards there now
        assert json.load(f) == {"00000.tar": second.counts.written}


def test_summary_table(ingested):
    _, _, results = ingested
    table = format_summary(results)
    assert all(r.name in table for r in results) and "TOTAL" in table
    assert "read == written + rejected for every source" in table


def test_read_shards_source_gives_back_every_sample(ingested):
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from pipelines.shard_io import ReadShards
    from pipelines.runner import pipeline_options

    config, _, results = ingested
    keys = [k for f in sorted(glob.glob(os.path.join(config.output, "raw", "*", "*.parquet")))
            for k in pq.read_table(f).column("key").to_pylist()]
    assert len(keys) == sum(r.counts.written for r in results)
    with beam.Pipeline(options=pipeline_options(RunnerConfig())) as pipeline:
        samples = pipeline | ReadShards(os.path.join(config.output, "raw", "*", "*.tar"))
        assert_that(samples | beam.Map(lambda s: s["__key__"]), equal_to(keys))
        assert_that(samples | "Members" >> beam.Map(lambda s: "json" in s and ("txt" in s or "jpg" in s or "png" in s)),
                    equal_to([True] * len(keys)), label="EveryMember")
