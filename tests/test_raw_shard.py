import hashlib
import json

import pyarrow.parquet as pq
import webdataset as wds

from pipelines.raw_shard import ShardPaths, is_complete, iter_samples, read_counts, write_shard
from pipelines.shard_transforms import shard_batches
from schemas.config import ImageConfig
from schemas.keys import shard_of
from schemas.records import Candidate, Reject, shard_key
from tests.images import jpeg


def _records(tmp_path):
    (tmp_path / "img").mkdir(exist_ok=True)
    (tmp_path / "img" / "a.jpg").write_bytes(jpeg(color=(1, 2, 3)))
    (tmp_path / "img" / "bad.jpg").write_bytes(b"garbage")
    return [
        Candidate("s-c", "s", "pair", "c", "cap.json[2]", text="a red ball", image_path=str(tmp_path / "img" / "a.jpg"),
                  meta={"captions": ["a red ball", "a ball"]}),
        Candidate("s-a", "s", "image", "a", "list.csv:3", image_bytes=jpeg(80, 60)),
        Candidate("s-t", "s", "text", "t", "doc.txt:1", text="Ünïcode sentence."),
        Candidate("s-a", "s", "image", "a", "list.csv:9", image_bytes=jpeg(10, 10)),  # duplicate key
        Candidate("s-m", "s", "image", "m", "list.csv:4", image_path=str(tmp_path / "img" / "missing.jpg")),
        Candidate("s-x", "s", "image", "x", "list.csv:5", image_path=str(tmp_path / "img" / "bad.jpg")),
        Reject("s", "cap.json[7]", "empty_text", "caption is empty", "s-e"),
    ]


def _write(tmp_path, out, records=None):
    paths = ShardPaths.of(str(out), "ingest", "s", 3)
    counts = write_shard(paths, "ingest", records or _records(tmp_path), ImageConfig(), "hash1")
    return paths, counts


def test_shard_contents_and_accounting(tmp_path):
    paths, counts = _write(tmp_path, tmp_path / "out")
    assert paths.tar.endswith("raw/s/00003.tar") and paths.rejects.endswith("rejects/ingest/s/00003.parquet")
    assert (counts.records_in, counts.written, counts.rejected_total) == (7, 3, 4)
    assert counts.rejected == {"duplicate_id": 1, "missing_image": 1, "corrupt_image": 1, "empty_text": 1}
    assert read_counts(paths) == counts

    samples = list(wds.WebDataset(paths.tar, shardshuffle=False))  # no project code
    assert [s["__key__"] for s in samples] == ["s-a", "s-c", "s-t"]  # sorted by key
    assert samples[0]["jpg"] == jpeg(80, 60)  # the first of the duplicates by location is kept
    assert samples[1]["txt"] == b"a red ball" and set(samples[2]) >= {"txt", "json"} and "jpg" not in samples[2]
    meta = json.loads(samples[1]["json"])
    assert meta["meta"]["captions"] == ["a red ball", "a ball"] and meta["modality"] == "pair"
    assert meta["sha256"] == hashlib.sha256(samples[1]["jpg"]).hexdigest()

    index = pq.read_table(paths.index)
    assert index.column("key").to_pylist() == ["s-a", "s-c", "s-t"]
    tar_bytes = open(paths.tar, "rb").read()
    for row in index.to_pylist():  # offsets allow random access to an image without reading the tar
        if row["image_offset"] is not None:
            image = tar_bytes[row["image_offset"]:row["image_offset"] + row["image_size"]]
            assert hashlib.sha256(image).hexdigest() == row["sha256"]
    rejects = pq.read_table(paths.rejects).to_pylist()
    dup = next(r for r in rejects if r["reason"] == "duplicate_id")
    assert dup["location"] == "list.csv:9" and "list.csv:3" in dup["detail"]


def test_shards_are_byte_identical_whatever_the_record_order(tmp_path):
    a, _ = _write(tmp_path, tmp_path / "a")
    b, _ = _write(tmp_path, tmp_path / "b", list(reversed(_records(tmp_path))))
    for left, right in zip(a.all(), b.all(), strict=True):
        assert open(left, "rb").read() == open(right, "rb").read(), left
    assert not list((tmp_path / "a").rglob("*.tmp-*"))


def test_shard_batches_hand_on_every_record_once_under_its_shard(tmp_path):
    records = _records(tmp_path) * 3  # 21 records, over 4 shards
    by_record = {}
    for record in records:
        by_record.setdefault(shard_of(shard_key(record), 4), []).append(record)
    for size in (1, 5, 21, 1000):
        batches = list(shard_batches(records, 4, size))
        assert all(shard_of(shard_key(r), 4) == shard for shard, batch in batches for r in batch)
        joined = {}
        for shard, batch in batches:
            joined.setdefault(shard, []).extend(batch)
        assert joined == by_record  # each shard's records, in reading order
        assert len(batches) <= -(-len(records) // size) * len(by_record)  # a pair per shard per ``size`` read


def test_completion_is_tied_to_the_parameters(tmp_path):
    paths, _ = _write(tmp_path, tmp_path / "out")
    assert is_complete(paths, "hash1") and not is_complete(paths, "hash2")
    (tmp_path / "out" / "raw" / "s" / "00003.tar").unlink()
    assert not is_complete(paths, "hash1")


def test_iter_samples_matches_webdataset(tmp_path):
    paths, _ = _write(tmp_path, tmp_path / "out")
    ours = list(iter_samples(paths.tar))
    theirs = list(wds.WebDataset(paths.tar, shardshuffle=False))
    assert [s["__key__"] for s in ours] == [s["__key__"] for s in theirs]
    assert all(o[k] == t[k] for o, t in zip(ours, theirs, strict=True) for k in ("json",))


def test_long_keys_survive_the_tar_format(tmp_path):
    key = "s-" + "x" * 150
    paths, counts = _write(tmp_path, tmp_path / "out", [Candidate(key, "s", "text", "x", "f:1", text="hi")])
    assert [s["__key__"] for s in wds.WebDataset(paths.tar, shardshuffle=False)] == [key]


def test_text_that_is_not_unicode_is_a_reject_naming_record_and_field(tmp_path):
    """Lone surrogates (from a JSON ``\\ud800`` escape, or a file name that is not UTF-8) cannot be written as
    UTF-8: the sample is a non_utf8 reject with its location and key; the rest of the shard is written."""
    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg())
    records = [
        Candidate("s-ok", "s", "pair", "ok", "c.json[0]", text="fine", image_path=str(image)),
        Candidate("s-text", "s", "pair", "text", "c.json[1]", text="lone \ud800 surrogate", image_path=str(image)),
        Candidate("s-meta", "s", "image", "meta", "c.json[2]", image_path=str(image),
                  meta={"objects": [{"names": ["ok", "caf\udce9"]}]}),
        Candidate("s-path", "s", "image", "path", "caf\udce9/\ud800.jpg", image_path=str(tmp_path / "\ud800.jpg")),
        Reject("s", "list\udcff.txt:3", "empty_text", "empty caption \udcff", "s-r"),
    ]
    paths, counts = _write(tmp_path, tmp_path / "out", records)
    assert (counts.written, dict(counts.rejected)) == (1, {"non_utf8": 3, "empty_text": 1})
    rows = {r["key"]: r for r in pq.read_table(paths.rejects).to_pylist()}
    assert rows["s-text"]["location"] == "c.json[1]" and "text" in rows["s-text"]["detail"]
    assert "meta.objects[0].names[1]" in rows["s-meta"]["detail"]
    assert rows["s-path"]["location"] == "caf\\udce9/\\ud800.jpg"  # escaped, so the rejects table can hold it
    assert rows["s-r"]["location"] == "list\\udcff.txt:3" and rows["s-r"]["detail"] == "empty caption \\udcff"
    assert [s["__key__"] for s in iter_samples(paths.tar)] == ["s-ok"]


def test_a_writer_that_fails_leaves_no_temporary_files(tmp_path):
    import pytest

    broken = Candidate("s-x", "s", "text", "x", "doc.txt:1", text="a", meta={"not json": {1, 2}})
    out = tmp_path / "out"
    with pytest.raises(TypeError):
        _write(tmp_path, out, [*_records(tmp_path), broken])
    assert not [p for p in out.rglob("*") if p.is_file()]  # no .tar.tmp-* that looks like output


def test_an_image_over_max_pixels_is_a_too_large_reject(tmp_path):
    from tests.test_images import _png_header

    records = [Candidate("s-big", "s", "image", "big", "list.csv:1", image_bytes=_png_header(9500, 9500)),
               Candidate("s-ok", "s", "image", "ok", "list.csv:2", image_bytes=jpeg(4, 3))]
    paths, counts = _write(tmp_path, tmp_path / "out", records)
    assert (counts.written, dict(counts.rejected)) == (1, {"too_large": 1})
    (row,) = pq.read_table(paths.rejects).to_pylist()
    assert row["key"] == "s-big" and "90250000 pixels > image.max_pixels" in row["detail"]
