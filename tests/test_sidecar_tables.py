"""Sidecar tables: images read at their tar offset, texts of a sample, atomic commit and completeness."""

import dataclasses
import functools
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.raw_shard import ShardPaths, iter_samples
from pipelines.runner import RunnerConfig
from pipelines.sidecar_tables import (
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
from pipelines.stages.per_shard import ShardAnnotator, run_sidecar_stage
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
    vg = [row for shard in raw_shards(config.output, "vg") for row in read_shard_input(config.output, "vg", shard).rows]
    for row in vg:  # every region description is a caption of its image (UNITER Table 1: 5.06M VG pairs)
        assert sample_texts(row) == list(enumerate(r["phrase"] for r in row["meta"]["regions"]))
        assert sample_texts(row)[0] == (0, row["text"])
    assert max(len(sample_texts(row)) for row in vg) > 1
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


class _KeyLengths(ShardAnnotator):
    """A real annotator of the smallest kind: one row per image with its key's length. ``setup`` leaves a
    file behind, so a test can see whether a worker started."""

    stage, folder, modalities, columns = "keylen", "ann/keylen", frozenset({"image"}), ["key", "modality"]
    schema = pa.schema([pa.field("key", pa.string()), pa.field("length", pa.int32())])

    def __init__(self, marker: str):
        self.marker = marker

    def params(self) -> dict:
        return {}

    def setup(self) -> None:
        open(self.marker, "a").close()

    def annotate(self, shard):
        rows = [{"key": r["key"], "length": len(r["key"])} for r in shard.rows if r["modality"] == "image"]
        return rows, [], len(rows)


def test_a_rerun_with_every_shard_done_starts_no_worker(ingested, tmp_path):
    config, expected, _ = ingested
    shutil.copytree(f"{config.output}/raw/coco_unlabeled", tmp_path / "raw" / "coco_unlabeled")
    config = dataclasses.replace(config, output=str(tmp_path))
    marker = tmp_path / "setup-ran"
    factory = functools.partial(_KeyLengths, str(marker))
    (first,) = run_sidecar_stage(config, factory, ["coco_unlabeled"], RunnerConfig(), show_progress=False)
    assert marker.exists() and first.counts.written == expected["coco_unlabeled"]["samples"]
    marker.unlink()
    (again,) = run_sidecar_stage(config, factory, ["coco_unlabeled"], RunnerConfig(), show_progress=False)
    assert not marker.exists() and again.skipped_shards == again.shards and again.counts == first.counts
    run_sidecar_stage(config, factory, ["coco_unlabeled"], RunnerConfig(), overwrite=True, show_progress=False)
    assert marker.exists()


def test_a_rerun_checks_done_tables_from_listings_not_an_exists_per_file(ingested, tmp_path, monkeypatch):
    """A per-shard stage's launcher learns which tables exist from one listing per folder (an ``exists`` per
    file is a request each on an object store, for every shard of the corpus) and reads each table's footer
    once to decide; the other open is the counts read back."""
    from collections import Counter

    from pipelines import storage

    config, _, _ = ingested
    shutil.copytree(f"{config.output}/raw/coco", tmp_path / "raw" / "coco")
    config = dataclasses.replace(config, output=str(tmp_path))
    factory = functools.partial(_KeyLengths, str(tmp_path / "setup-ran"))
    (first,) = run_sidecar_stage(config, factory, ["coco"], RunnerConfig(), show_progress=False)
    calls, real_exists, real_open = Counter(), storage.exists, storage.open_read
    monkeypatch.setattr(storage, "exists", lambda path: calls.update([("exists", path)]) or real_exists(path))
    monkeypatch.setattr(storage, "open_read", lambda path: calls.update([("open", path)]) or real_open(path))
    (again,) = run_sidecar_stage(config, factory, ["coco"], RunnerConfig(), show_progress=False)
    assert again.skipped_shards == again.shards == first.shards > 1
    assert not [path for kind, path in calls if kind == "exists" and "/coco/" in path]  # corpus.json: once a run
    tables = {path: n for (kind, path), n in calls.items() if "/ann/keylen/" in path}
    assert tables == {storage.join(str(tmp_path), "ann", "keylen", "coco", f"{s:05d}.parquet"): 2
                      for s in range(first.shards)}


class _KeyLengthsWithExtra(_KeyLengths):
    """``_KeyLengths`` with a stage-specific count in its footer (as rewrite's WordNet refusals)."""

    def table_metadata(self) -> dict[bytes, bytes]:
        return {b"test.extra": b"3"}

    def extra_counts(self, footer: dict[bytes, bytes]) -> dict:
        return {"extra": int(footer[b"test.extra"])}


def test_an_annotator_s_read_back_reads_each_footer_once_and_sizes_from_a_listing(ingested, tmp_path, monkeypatch):
    """Issue 15: reading back a committed table's counts opens its footer once (before: ``read_sidecar_counts``,
    then again for ``extra_counts``) and takes its bytes from one listing of the source's table folder (before:
    a ``storage.size`` match per table, a request each on an object store); the counts are those of the
    one-table-at-a-time reads."""
    from collections import Counter

    from pipelines import storage
    from pipelines.raw_shard import read_footer
    from pipelines.results import add_extras

    config, _, _ = ingested
    shutil.copytree(f"{config.output}/raw/coco", tmp_path / "raw" / "coco")
    config = dataclasses.replace(config, output=str(tmp_path))
    factory = functools.partial(_KeyLengthsWithExtra, str(tmp_path / "setup-ran"))
    (first,) = run_sidecar_stage(config, factory, ["coco"], RunnerConfig(), show_progress=False)
    table = functools.partial(storage.join, str(tmp_path), "ann", "keylen", "coco")
    expected, extra = {}, {}
    for shard in range(first.shards):  # as before: a table at a time, its footer twice and a size each
        paths = SidecarPaths.of(str(tmp_path), "ann/keylen", "keylen", "coco", shard)
        counts = read_sidecar_counts(paths)
        assert counts.bytes == storage.size(paths.table) > 0
        expected[shard] = counts
        extra = add_extras(extra, factory().extra_counts(read_footer(paths.table)))
    opens, matches = Counter(), Counter()
    real_open, real_match = storage.open_read, storage.FileSystems.match
    monkeypatch.setattr(storage, "open_read", lambda path: opens.update([path]) or real_open(path))
    monkeypatch.setattr(storage.FileSystems, "match",
                        lambda patterns, *a, **k: matches.update(patterns) or real_match(patterns, *a, **k))
    (again,) = run_sidecar_stage(config, factory, ["coco"], RunnerConfig(), show_progress=False)
    assert again.skipped_shards == again.shards == first.shards > 1
    tables = [table(f"{shard:05d}.parquet") for shard in range(first.shards)]
    assert {path: n for path, n in opens.items() if "/ann/keylen/" in path} == dict.fromkeys(tables, 2)  # done, counts
    assert not [path for path in matches if path in tables]  # no size per table
    assert matches[table("*")] == 2  # the done check's listing, the sizes' listing
    total = sum(expected.values(), type(first.counts)())
    assert again.counts == first.counts == total and again.extra == first.extra == extra == {"extra": 3 * first.shards}


def _with_removals(ingested, tmp_path) -> tuple[str, dict[int, list[str]]]:
    """A copy of coco's raw shards with ``clean``'s removals written by hand: two keys of shard 0 removed by
    dedup, one of shard 1 by decontam, none of the other shards. Returns (root, shard -> removed keys)."""
    from pipelines.raw_shard import reject_row, write_table
    from schemas.tables import REJECTS

    config, _, _ = ingested
    shutil.copytree(f"{config.output}/raw/coco", tmp_path / "raw" / "coco")
    root = str(tmp_path)
    removed = {}
    for shard, stage, reason, n in ((0, "dedup", Reason.DUPLICATE, 2), (1, "decontam", Reason.CONTAMINATED, 1)):
        keys = sorted(row["key"] for row in read_shard_input(root, "coco", shard, ["key"]).rows)[:n]
        rows = [reject_row(stage, Reject("coco", f"raw/coco#{key}", reason, "planted", key)) for key in keys]
        (tmp_path / "rejects" / stage / "coco").mkdir(parents=True)
        write_table(str(tmp_path / "rejects" / stage / "coco" / f"{shard:05d}.parquet"), rows, REJECTS)
        removed[shard] = keys
    return root, removed


def test_digests_from_listings_are_the_one_shard_digests_removals_included(ingested, tmp_path):
    """The launcher digests every shard from one listing of clean's folders; each digest is what a worker gets
    for its one shard, and the formula is the one before (the ingest hash, then the removed keys' hash), so
    no table is redone after the upgrade."""
    import hashlib
    import json

    from pipelines.raw_shard import read_footer
    from pipelines.stages.per_shard import AnnotatorWork, _with_digests
    from schemas.tables import PARAMS_KEY

    root, removed = _with_removals(ingested, tmp_path)
    shards = raw_shards(root, "coco")
    assert len(shards) > 2
    work = AnnotatorWork(functools.partial(_KeyLengths, str(tmp_path / "setup-ran")), root)
    listed = _with_digests(work, [("coco", shard) for shard in shards])
    assert listed == [("coco", shard, work.digest("coco", shard)) for shard in shards]
    digests = {shard: digest for _, shard, digest in listed}
    for shard in shards:
        ingested_hash = read_footer(ShardPaths.of(root, "ingest", "coco", shard).index)[PARAMS_KEY].decode()
        expected = ingested_hash
        if shard in removed:
            expected += "-" + hashlib.sha256(json.dumps(removed[shard]).encode()).hexdigest()[:16]
        assert raw_params_hash(root, "coco", shard) == expected
        assert digests[shard] == params_hash({}, expected)
        shard_input = read_shard_input(root, "coco", shard, ["modality"])
        assert shard_input.removed == len(removed.get(shard, []))
        assert shard_input.raw_hash == expected  # from the same open of the index (pack's digest)
        assert read_shard_input(root, "coco", shard, ["key"], keep_removed=True).raw_hash is None


def test_the_launcher_lists_clean_removals_once_per_folder_not_a_glob_per_shard(ingested, tmp_path, monkeypatch):
    """A per-shard stage's launcher learns which shards ``clean`` removed samples from (the digests, the counts
    read back) from one listing of ``rejects/dedup/<source>`` and ``rejects/decontam/<source>``: a glob per
    shard and removal stage was a LIST request each on an object store. Only the removal tables that exist are
    read: once for the digest, once for the count of samples left out."""
    from collections import Counter

    from pipelines import storage

    root, removed = _with_removals(ingested, tmp_path)
    config = dataclasses.replace(ingested[0], output=root)
    factory = functools.partial(_KeyLengths, str(tmp_path / "setup-ran"))
    (first,) = run_sidecar_stage(config, factory, ["coco"], RunnerConfig(), show_progress=False)
    assert first.removed == {"coco": sum(len(keys) for keys in removed.values())}
    calls, real = Counter(), {name: getattr(storage, name) for name in ("exists", "glob", "open_read")}
    for name in real:
        monkeypatch.setattr(storage, name, lambda path, name=name: calls.update([(name, path)]) or real[name](path))
    (again,) = run_sidecar_stage(config, factory, ["coco"], RunnerConfig(), show_progress=False)
    assert again.skipped_shards == again.shards == first.shards and again.removed == first.removed
    assert not [path for kind, path in calls if kind == "exists" and "/coco/" in path]
    assert not [path for kind, path in calls if kind == "glob" and re.search(r"/[0-9]{5}\.parquet$", path)]
    for stage in ("dedup", "decontam"):
        assert calls[("glob", storage.join(root, "rejects", stage, "coco", "*"))] == 2  # digests, counts
    reads = {path: n for (kind, path), n in calls.items()
             if kind == "open_read" and re.search("/rejects/(dedup|decontam)/", path)}
    assert reads == {storage.join(root, "rejects", stage, "coco", f"{shard:05d}.parquet"): 2
                     for shard, stage in ((0, "dedup"), (1, "decontam"))}


_IMAGES, _TEXTS = frozenset({"pair", "image"}), frozenset({"pair", "text"})  # detect's and parse's samples


def _has_modality_by_rows(root: str, source: str, modalities: frozenset[str]) -> bool:
    """The answer as before issue 15: every kept row's modality, shard by shard."""
    return any(row["modality"] in modalities for shard in raw_shards(root, source)
               for row in read_shard_input(root, source, shard, ["modality"]).rows)


def test_a_source_without_a_stage_s_modality_is_ruled_out_from_its_index_footers_without_a_row_read(
        ingested, monkeypatch):
    """Issue 15: which sources a stage applies to (detect: a sample with an image; parse: with text) comes first
    from the shape the shard writer keeps in each index footer: a text source for detect, an image folder for
    parse, is ruled out without a row read, its indexes opened once each, ``READ_THREADS`` at a time (before:
    every shard's modality column, in turn). The answers are those of the rows."""
    import threading

    from pipelines import storage
    from pipelines.stages.per_shard import has_modality

    config, _, _ = ingested
    root = config.output
    cases = [(source, modalities) for source in config.sources for modalities in (_IMAGES, _TEXTS)]
    expected = {case: _has_modality_by_rows(root, *case) for case in cases}
    assert not expected[("wiki", _IMAGES)] and not expected[("coco_unlabeled", _TEXTS)] and expected[("coco", _IMAGES)]
    real_open, opened = storage.open_read, []
    monkeypatch.setattr(storage, "open_read",
                        lambda path: opened.append((path, threading.current_thread())) or real_open(path))
    assert {case: has_modality(root, *case) for case in cases} == expected
    with monkeypatch.context() as one:  # rounds of 1, 2, 4 shards: the mini corpus' sources span several
        one.setattr(storage, "READ_THREADS", 1)
        assert {case: has_modality(root, *case) for case in cases} == expected
    real_read, rows_read = pq.ParquetFile.read, []
    monkeypatch.setattr(pq.ParquetFile, "read", lambda self, *a, **k: rows_read.append(1) or real_read(self, *a, **k))
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: rows_read.append(1) or pytest.fail("a row read"))
    for source, modalities in (("wiki", _IMAGES), ("bookcorpus", _IMAGES), ("coco_unlabeled", _TEXTS)):
        opened.clear()
        assert not has_modality(root, source, modalities)
        assert sorted(path for path, _ in opened) == [ShardPaths.of(root, "ingest", source, shard).index
                                                      for shard in raw_shards(root, source)]
        assert threading.main_thread() not in {thread for _, thread in opened}  # through ``storage.read_all``
    assert not rows_read


def test_an_index_without_the_footer_shape_answers_from_its_modality_column(ingested, tmp_path):
    """An index written before the shape keys (issue 15) is read by its ``modality`` column, clean's removals
    applied: the same answers as the rows, whichever modalities."""
    from pipelines.stages.per_shard import has_modality
    from schemas.tables import HAS_TEXT_KEY, IMAGE_FORMATS_KEY, JSON_TYPE_KEY

    root, _ = _with_removals(ingested, tmp_path)  # coco, with removals
    config = ingested[0]
    shutil.copytree(f"{config.output}/raw/coco_unlabeled", tmp_path / "raw" / "coco_unlabeled")
    shutil.copytree(f"{config.output}/raw/wiki", tmp_path / "raw" / "wiki")
    for index in tmp_path.glob("raw/*/*.parquet"):
        table = pq.read_table(index)
        shape_keys = {JSON_TYPE_KEY, IMAGE_FORMATS_KEY, HAS_TEXT_KEY}
        assert shape_keys <= set(table.schema.metadata)
        pq.write_table(table.replace_schema_metadata({k: v for k, v in table.schema.metadata.items()
                                                      if k not in shape_keys}), index)
    for source in ("coco", "coco_unlabeled", "wiki"):
        for modalities in (_IMAGES, _TEXTS, frozenset({"image"}), frozenset({"text"})):
            assert has_modality(root, source, modalities) == _has_modality_by_rows(root, source, modalities)
