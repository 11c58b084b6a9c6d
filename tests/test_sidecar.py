"""Sidecar tables: images read at their tar offset, texts of a sample, atomic commit and completeness."""

import pyarrow.parquet as pq
import pytest

from pipelines.shards import ShardPaths, iter_samples
from pipelines.sidecar import (
    SidecarPaths,
    is_done,
    params_hash,
    raw_params_hash,
    raw_shards,
    read_shard_input,
    read_sidecar,
    read_sidecar_counts,
    sample_texts,
    write_sidecar,
)
from schemas.records import Reason, Reject
from schemas.tables import ANN_PARSE


def test_image_bytes_at_the_index_offset_are_the_tar_member(ingested):
    config, _, _ = ingested
    shard = raw_shards(config.output, "coco")[0]
    shard_input = read_shard_input(config.output, "coco", shard)
    members = {s["__key__"]: s for s in iter_samples(ShardPaths.of(config.output, "ingest", "coco", shard).tar)}
    assert shard_input.rows
    for row in shard_input.rows:
        assert shard_input.image_bytes(row) == members[row["key"]][row["image_format"]]


def test_sample_texts_are_every_caption_or_the_one_text(ingested):
    config, _, _ = ingested
    coco = read_shard_input(config.output, "coco", raw_shards(config.output, "coco")[0]).rows[0]
    assert [t for _, t in sample_texts(coco)] == [c["caption"] for c in coco["meta"]["captions"]]
    assert sample_texts(coco)[0] == (0, coco["text"])
    book = read_shard_input(config.output, "bookcorpus", raw_shards(config.output, "bookcorpus")[0]).rows[0]
    assert sample_texts(book) == [(0, book["text"])]
    image_only = read_shard_input(config.output, "coco_unlabeled", raw_shards(config.output, "coco_unlabeled")[0])
    assert sample_texts(image_only.rows[0]) == []


def test_write_sidecar_commits_table_and_rejects_and_is_done_by_hash(tmp_path):
    paths = SidecarPaths.of(str(tmp_path), "ann/parse", "parse", "src", 3)
    assert paths.table.endswith("ann/parse/src/00003.parquet")
    assert paths.rejects.endswith("rejects/parse/src/00003.parquet")
    row = {"key": "src-1", "source": "src", "text_index": 0, "text": "a ball", "noun_phrases": [], "objects": [],
           "relations": []}
    reject = Reject("src", "src-2#0", Reason.EMPTY_TEXT, "no text", "src-2")
    digest = params_hash({"model": "m"}, "raw-hash")
    counts = write_sidecar(paths, "parse", [row], [reject], ANN_PARSE, digest, records_in=2)
    assert (counts.records_in, counts.written, dict(counts.rejected)) == (2, 1, {"empty_text": 1})
    assert read_sidecar_counts(paths) == counts
    assert is_done(paths, digest)
    assert not is_done(paths, params_hash({"model": "other"}, "raw-hash"))
    assert not is_done(paths, params_hash({"model": "m"}, "re-ingested"))
    assert list(read_sidecar(str(tmp_path), "ann/parse", "src")) == [row]
    assert pq.read_table(paths.rejects).to_pylist()[0]["reason"] == "empty_text"
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_a_source_without_shards_says_run_ingest_first(tmp_path, ingested):
    config, _, _ = ingested
    with pytest.raises(ValueError, match="run ingest first"):
        raw_shards(str(tmp_path), "coco")
    assert len(raw_params_hash(config.output, "coco", raw_shards(config.output, "coco")[0])) == 16
