"""The dataset card's shape of a source: one shard's members held at a time, the same type as over all at once."""

import json
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.card import source_shape

SHARDS = [  # the fields and types differ per shard; together they unify
    [{"key": "s-0", "meta": {"width": None}}, {"key": "s-1", "meta": {"width": 4}, "score": 1}],
    [{"key": "s-2", "score": 2.5, "tags": [None]}],
    [{"key": "s-3", "meta": {"width": 8, "url": "http://x"}, "tags": ["ball"], "flag": True}],
]


def _write_shards(root, source: str, shards: list[list[dict]], image_format: str | None = "jpg") -> None:
    folder = root / "raw" / source
    folder.mkdir(parents=True)
    for i, members in enumerate(shards):
        pq.write_table(pa.table({"json": [json.dumps(m) for m in members],
                                 "image_format": [image_format] * len(members),
                                 "text": pa.array([None] * len(members), pa.string())}), folder / f"{i:05d}.parquet")


def test_shape_is_the_type_of_every_member_at_once(tmp_path):
    _write_shards(tmp_path, "cc", SHARDS)
    shape, formats, has_text = source_shape(str(tmp_path), "cc")
    assert shape == pa.array([m for shard in SHARDS for m in shard]).type  # fields in order of first appearance
    assert [f.name for f in shape] == ["key", "meta", "score", "tags", "flag"]
    assert shape.field("score").type == pa.float64() and shape.field("meta").type.field("width").type == pa.int64()
    assert formats == ["jpg"] and not has_text


def test_members_that_disagree_across_shards_name_the_source(tmp_path):
    _write_shards(tmp_path, "vg", [[{"coco_id": 3}], [{"coco_id": "three"}]])
    with pytest.raises(ValueError, match="source vg: its samples' json members do not share one shape"):
        source_shape(str(tmp_path), "vg")


def test_a_source_without_samples_has_an_empty_shape(tmp_path):
    _write_shards(tmp_path, "books", [[]], image_format=None)
    assert source_shape(str(tmp_path), "books") == (pa.struct([]), [], False)


def _heap_peak(root, source: str) -> int:
    tracemalloc.start()
    try:
        source_shape(str(root), source)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_holds_one_shard_of_members_at_a_time(tmp_path):
    """Eight shards cost about what one does: a source of 500M sentences must fit the launching process."""
    shard = [{"key": f"k-{i}", "meta": {"caption": "a red ball on the grass " * 4, "n": i}} for i in range(2000)]
    _write_shards(tmp_path, "one", [shard])
    _write_shards(tmp_path, "eight", [shard] * 8)
    source_shape(str(tmp_path), "one")  # imports and caches once, outside the measures
    one, eight = _heap_peak(tmp_path, "one"), _heap_peak(tmp_path, "eight")
    assert eight < 1.5 * one, (one, eight)  # all members at once: 6.5x
