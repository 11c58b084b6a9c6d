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


# --- the shapes kept in the index footers (issue 15): the card reads no member, the same card comes out -------

def _written_corpus(root) -> dict[str, list[list]]:
    """Two sources written by the real shard writer, their json shapes differing across shards, one shard
    without a sample (its only record refused)."""
    from pipelines.raw_shard import ShardPaths, write_shard
    from schemas.config import ImageConfig
    from schemas.records import Candidate, Reject
    from tests.images import jpeg

    def pair(i, meta, text="a ball"):
        kind = "pair" if text is not None else "image"
        return Candidate(f"cc-{i}", "cc", kind, str(i), f"cc.tsv:{i}", text=text, image_bytes=jpeg(8, 6), meta=meta)

    def sentence(i, meta):
        return Candidate(f"books-{i}", "books", "text", str(i), f"b.txt:{i}", text=f"sentence {i}", meta=meta)

    shards = {"cc": [[pair(0, {"width": None}), pair(1, {"width": 4, "score": 1})],
                     [Reject("cc", "cc.tsv:9", "empty_text", "caption is empty", "cc-9")],
                     [pair(2, {"score": 2.5, "tags": [None]})],
                     [pair(3, {"url": "http://x", "tags": ["ball"], "flag": True}, text=None)]],
              "books": [[sentence(0, {})], [sentence(1, {"n": 1})], [sentence(2, {"n": 2.5, "title": "t"})]]}
    for source, records in shards.items():
        for shard, shard_records in enumerate(records):
            write_shard(ShardPaths.of(str(root), "ingest", source, shard), "ingest", shard_records, ImageConfig(), "h")
    return shards


def _card(root) -> bytes:
    from pipelines.card import write_card

    write_card(str(root), ["cc", "books"])
    return (root / "README.md").read_bytes()


def _without_shape_footers(root) -> None:
    """Every index as written before issue 15: the same rows, no shape keys in its footer."""
    from schemas.tables import HAS_TEXT_KEY, IMAGE_FORMATS_KEY, JSON_TYPE_KEY

    for path in root.glob("raw/*/*.parquet"):
        table = pq.read_table(path)
        assert JSON_TYPE_KEY in table.schema.metadata
        shape_keys = (JSON_TYPE_KEY, IMAGE_FORMATS_KEY, HAS_TEXT_KEY)
        kept = {k: v for k, v in table.schema.metadata.items() if k not in shape_keys}
        pq.write_table(table.replace_schema_metadata(kept), path, compression="zstd")


def test_the_card_from_footers_is_the_card_from_columns(tmp_path):
    """Footers, kept features and (an older corpus) columns give the same card, byte for byte; the shape is the
    type of every member at once."""
    from pipelines.card import forget_features
    from pipelines.manifest_io import update_manifest

    _written_corpus(tmp_path)
    for source in ("cc", "books"):
        members = [json.loads(m) for p in sorted((tmp_path / "raw" / source).glob("*.parquet"))
                   for m in pq.read_table(p).column("json").to_pylist()]
        assert source_shape(str(tmp_path), source)[0] == pa.array(members).type
    assert pq.read_table(tmp_path / "raw" / "cc" / "00001.parquet").num_rows == 0
    from_footers = _card(tmp_path)
    assert not list(tmp_path.glob("raw/*/features.json"))  # no ingest in corpus.json: nothing to name them by
    update_manifest(str(tmp_path), "ingest", {s: {"params_hash": f"hash-{s}"} for s in ("cc", "books")})
    assert _card(tmp_path) == from_footers and len(list(tmp_path.glob("raw/*/features.json"))) == 2
    assert _card(tmp_path) == from_footers  # now from the kept features
    _without_shape_footers(tmp_path)
    for source in ("cc", "books"):
        forget_features(str(tmp_path), source)
    assert _card(tmp_path) == from_footers  # the columns, for indexes written before the footers held shapes
    text = from_footers.decode()
    assert "- name: jpg\n    dtype: image" in text and "- name: txt" in text and "- name: flag" in text


def test_a_kept_features_file_of_another_ingest_is_not_trusted(tmp_path):
    from pipelines.manifest_io import update_manifest

    _written_corpus(tmp_path)
    update_manifest(str(tmp_path), "ingest", {s: {"params_hash": "old"} for s in ("cc", "books")})
    before = _card(tmp_path)
    kept = tmp_path / "raw" / "books" / "features.json"
    kept.write_text(json.dumps({"params_hash": "old", "features": []}))
    assert _card(tmp_path) != before  # trusted: it names the ingest in corpus.json
    update_manifest(str(tmp_path), "ingest", {"books": {"params_hash": "new"}})
    assert _card(tmp_path) == before and json.loads(kept.read_text())["params_hash"] == "new"
    for broken in ("{half", "[1, 2]", '{"features": []}'):  # not what the card writes: read the shards again
        kept.write_text(broken)
        assert _card(tmp_path) == before and json.loads(kept.read_text())["params_hash"] == "new"


def test_a_shard_whose_own_members_disagree_fails_the_card_naming_the_source(tmp_path):
    """The writer keeps no shape for it (the shard is still written); the card reads its columns and fails."""
    from pipelines.raw_shard import ShardPaths, write_shard
    from schemas.config import ImageConfig
    from schemas.records import Candidate
    from schemas.tables import JSON_TYPE_KEY

    records = [Candidate(f"vg-{i}", "vg", "text", str(i), f"vg:{i}", text="t", meta={"coco_id": coco_id})
               for i, coco_id in enumerate([3, "three"])]
    paths = ShardPaths.of(str(tmp_path), "ingest", "vg", 0)
    assert write_shard(paths, "ingest", records, ImageConfig(), "h").written == 2
    assert JSON_TYPE_KEY not in pq.read_schema(paths.index).metadata
    with pytest.raises(ValueError, match="source vg: its samples' json members do not share one shape"):
        source_shape(str(tmp_path), "vg")
