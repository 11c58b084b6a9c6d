"""clean on the ingested mini corpus: planted duplicates and evaluation images are removed, recorded,
and skipped by readers."""

import glob
import json
import os

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines.demo import check_clean
from pipelines.runner import RunnerConfig, pipeline_options
from pipelines.shard_transforms import ReadShards
from pipelines.stages.clean import removed_keys, run_clean
from pipelines.summary import format_clean_summary
from tests.conftest import tree_digest


@pytest.fixture(scope="module")
def cleaned(ingested, tmp_path_factory):
    """clean on a copy of the shared ingested corpus: its removals would hold for every later test's reads."""
    import dataclasses
    import shutil

    config, expected, _ = ingested
    root = tmp_path_factory.mktemp("cleaned")
    shutil.copytree(config.output, root, dirs_exist_ok=True)
    config = dataclasses.replace(config, output=str(root))
    return config, expected, run_clean(config)


def _rejects(root, stage):
    return [row for path in sorted(glob.glob(os.path.join(root, "rejects", stage, "*", "*.parquet")))
            for row in pq.read_table(path).to_pylist()]


def test_planted_duplicates_and_eval_images_are_found(cleaned):
    _, expected, (_, duplicates, contaminations) = cleaned
    assert expected["_clean"]["duplicates"] and expected["_clean"]["contaminated"]
    assert check_clean(expected["_clean"], duplicates, contaminations) == []
    assert {c.matched_by for c in contaminations} >= {"coco_id", "flickr_id", "url"}


def test_every_removed_sample_is_one_reject_naming_why(cleaned):
    config, _, (results, duplicates, contaminations) = cleaned
    dedup, decontam = _rejects(config.output, "dedup"), _rejects(config.output, "decontam")
    contaminated = {c.key for c in contaminations}
    assert sorted(r["key"] for r in decontam) == sorted(contaminated)
    assert sorted(r["key"] for r in dedup) == sorted(d.key for d in duplicates if d.key not in contaminated)
    kept_of = {d.key: d.duplicate_of for d in duplicates}
    for row in dedup:
        assert row["reason"] == "duplicate" and kept_of[row["key"]] in row["detail"]
        assert row["location"].startswith(f"raw/{row['source']}/") and row["location"].endswith(".tar")
    assert all(r["reason"] == "contaminated" and " by " in r["detail"] for r in decontam)
    assert sum(r.removed for r in results) == len(dedup) + len(decontam)


def test_readers_skip_removed_keys(cleaned):
    config, _, (results, _, _) = cleaned
    source = next(r for r in results if r.removed)
    removed = removed_keys(config.output, source.name)
    assert len(removed) == source.removed
    pattern = os.path.join(config.output, "raw", source.name, "*.tar")
    keys = [k for f in sorted(glob.glob(pattern.replace(".tar", ".parquet")))
            for k in pq.read_table(f).column("key").to_pylist()]
    with beam.Pipeline(options=pipeline_options(RunnerConfig())) as pipeline:
        samples = pipeline | ReadShards(pattern, exclude=frozenset(removed))
        assert_that(samples | beam.Map(lambda s: s["__key__"]), equal_to([k for k in keys if k not in removed]))


def test_manifest_summary_and_rerun(cleaned):
    config, _, (results, _, _) = cleaned
    with open(os.path.join(config.output, "corpus.json")) as f:
        manifest = json.load(f)
    for result in results:
        counts = manifest["stages"]["clean"][result.name]["counts"]
        assert counts["kept"] == result.samples - result.removed and counts["removed"] == result.removed
        assert counts["duplicates_by_kind"] == dict(result.duplicates)
        assert counts["contaminated_by_eval_set"] == dict(result.contaminated)
    assert "ingest" in manifest["stages"]  # the ingest entries stay
    table = format_clean_summary(results)
    assert "TOTAL" in table and "matched per evaluation set" in table
    before = {k: v for k, v in tree_digest(config.output).items() if k.startswith("rejects/d")}
    run_clean(config)
    assert {k: v for k, v in tree_digest(config.output).items() if k.startswith("rejects/d")} == before


def test_contamination_spreads_to_every_copy_kept_or_dropped():
    from pipelines.dedup import Duplicate
    from pipelines.evalsets import Contamination
    from pipelines.stages.clean import inherited

    duplicates = [Duplicate("b", "a", "exact_image", 0), Duplicate("c", "a", "near_image", 2)]
    found = [Contamination("c", "cc", "coco_karpathy", "url", "url http://x/1.jpg")]  # a dropped copy gives it away
    sources = {"a": "coco_unlabeled", "b": "sbu", "c": "cc"}
    spread = inherited(duplicates, found, sources)
    assert sorted((c.key, c.eval_set, c.matched_by) for c in spread) == [
        ("a", "coco_karpathy", "duplicate"), ("b", "coco_karpathy", "duplicate")]
    assert all("copy of c" in c.detail for c in spread)


def test_stages_after_clean_read_shards_without_the_removals_and_hash_them(cleaned):
    from pipelines.raw_shard import ShardPaths, read_footer
    from pipelines.sidecar_tables import raw_params_hash, raw_shards, read_shard_input
    from schemas.tables import PARAMS_KEY

    config, _, (results, _, _) = cleaned
    source = next(r for r in results if r.removed).name
    removed = removed_keys(config.output, source)
    seen = 0
    for shard in raw_shards(config.output, source):
        kept, everything = (read_shard_input(config.output, source, shard, ["key"], keep_removed=keep)
                            for keep in (False, True))
        gone = {row["key"] for row in everything.rows} & removed
        assert {row["key"] for row in kept.rows} == {row["key"] for row in everything.rows} - removed
        assert kept.removed == len(gone) and everything.removed == 0
        ingested = read_footer(ShardPaths.of(config.output, "ingest", source, shard).index)[PARAMS_KEY]
        # a shard's removals are part of its hash: a new clean redoes exactly the tables of changed shards
        assert (raw_params_hash(config.output, source, shard) == ingested.decode()) == (not gone)
        seen += len(gone)
    assert seen == len(removed) > 0
