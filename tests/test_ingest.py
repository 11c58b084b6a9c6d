"""Ingest of the mini corpus through the real Beam DirectRunner."""

import dataclasses
import glob
import json
import os
from collections import Counter

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


def test_a_rerun_opens_each_shard_index_once_per_thing_it_learns_there(tmp_path, monkeypatch):
    """A rerun that writes nothing opens a shard's index three times: its footer's parameters (the resume check,
    whose answer the workers, the stale check and the source check take), its counts (also sizes.json's), and
    the dataset card's json shape and text (kept in its footer). Each open is a request or more on an object
    store; the first index was opened 8 times (22 requests to S3)."""
    from pipelines import storage

    config = _folder_config(tmp_path, n=8, shards=2)
    run_ingest(config, ["u"], RunnerConfig(), show_progress=False)
    opened, real = Counter(), storage.open_read

    def counted(path):
        opened[path] += 1
        return real(path)

    monkeypatch.setattr(storage, "open_read", counted)
    (again,) = run_ingest(config, ["u"], RunnerConfig(), show_progress=False)
    assert again.skipped_shards == again.shards == 2
    indexes = {path: n for path, n in opened.items() if path.endswith(".parquet") and "/raw/" in path}
    assert indexes == {storage.join(config.output, "raw", "u", f"{s:05d}.parquet"): 3 for s in range(2)}


def test_the_resume_check_lists_each_folder_once_and_reads_only_whole_shards_footers(tmp_path, monkeypatch):
    """Which shards a rerun reuses comes from one listing per folder, not an ``exists`` per file (on an object
    store each is a request, for every shard of the corpus: hours at the papers' size), then one footer read
    per shard whose files are all there. A shard without its tar, one without its rejects table and one of
    other parameters are not reused; with ``--retry-failed`` a shard without a URL table is."""
    from pipelines import storage
    from pipelines.sources import reader_for
    from pipelines.stages.ingest import _reusable_shards, params_hashes

    config = _folder_config(tmp_path, n=16, shards=5)
    run_ingest(config, ["u"], RunnerConfig(), show_progress=False)
    raw, rejects = os.path.join(config.output, "raw", "u"), os.path.join(config.output, "rejects", "ingest", "u")
    os.remove(os.path.join(raw, "00001.tar"))
    os.remove(os.path.join(rejects, "00002.parquet"))
    source = config.sources["u"]
    reader = reader_for("u", source, config.text)
    parts = reader.parts()
    hashes = params_hashes("u", source, config, parts, reader.inputs(parts))
    hashes = (*hashes[:3], "other", hashes[4])
    calls, real_exists, real_open = Counter(), storage.exists, storage.open_read
    monkeypatch.setattr(storage, "exists", lambda path: calls.update([("exists", path)]) or real_exists(path))
    monkeypatch.setattr(storage, "open_read", lambda path: calls.update([("open", path)]) or real_open(path))
    for retry_failed in (False, True):
        assert _reusable_shards(config.output, "u", hashes, retry_failed) == [0, 4]
    assert not [path for kind, path in calls if kind == "exists"]
    assert calls == {("open", os.path.join(raw, f"{s:05d}.parquet")): 2 for s in (0, 3, 4)}  # once a check


def test_batched_shards_are_the_bytes_of_writing_each_shards_records_at_once(ingested, tmp_path):
    """The pipeline hands records to the grouping in batches (``shard_batches``); every shard, index and
    rejects table of every source must still be what one ``write_shard`` of all the shard's records, grouped
    record by record as before, gives."""
    from collections import defaultdict

    from pipelines.raw_shard import ShardPaths, write_shard
    from pipelines.sources import reader_for
    from pipelines.stages.ingest import STAGE, params_hashes
    from schemas.keys import shard_of
    from schemas.records import shard_key

    config, _, _ = ingested
    for name, source in config.sources.items():
        reader = reader_for(name, source, config.text)
        parts = reader.parts()
        hashes = params_hashes(name, source, config, parts, reader.inputs(parts))
        shards = defaultdict(list)
        for record in (record for part in parts for record in reader.read(part)):
            shards[shard_of(shard_key(record), source.shards)].append(record)
        for shard, records in shards.items():
            write_shard(ShardPaths.of(str(tmp_path), STAGE, name, shard), STAGE, records, config.image,
                        hashes[shard], config.download)
    expected = tree_digest(tmp_path)
    assert len([p for p in expected if p.endswith(".tar")]) >= len(config.sources)
    written = {p: d for p, d in tree_digest(config.output).items()
               if p.startswith(("raw/", f"rejects/{STAGE}/", "urls/"))  # later stages' rejects are not ingest's
               and not p.endswith(("sizes.json", "features.json"))}
    assert written == expected


def test_changed_parameters_redo_and_remove_stale_shards(ingested, tmp_path):
    config, _, _ = ingested
    name = next(n for n, s in config.sources.items() if s.kind == "coco")
    source = dataclasses.replace(config.sources[name], shards=1)
    small = dataclasses.replace(config, output=str(tmp_path), sources={name: source})
    first = run_ingest(dataclasses.replace(small, sources={name: config.sources[name]}), [name], RunnerConfig(),
                       show_progress=False)[0]
    second = run_ingest(small, [name], RunnerConfig(), show_progress=False)[0]
    assert second.shards == 1 and second.skipped_shards == 0
    assert sorted(os.listdir(tmp_path / "raw" / name)) == ["00000.parquet", "00000.tar", "features.json",
                                                          "sizes.json"]
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

    from pipelines.runner import pipeline_options
    from pipelines.shard_transforms import ReadShards

    config, _, results = ingested
    keys = [k for f in sorted(glob.glob(os.path.join(config.output, "raw", "*", "*.parquet")))
            for k in pq.read_table(f).column("key").to_pylist()]
    assert len(keys) == sum(r.counts.written for r in results)
    with beam.Pipeline(options=pipeline_options(RunnerConfig())) as pipeline:
        samples = pipeline | ReadShards(os.path.join(config.output, "raw", "*", "*.tar"))
        assert_that(samples | beam.Map(lambda s: s["__key__"]), equal_to(keys))
        assert_that(samples | "Members" >> beam.Map(lambda s: "json" in s and ("txt" in s or "jpg" in s or "png" in s)),
                    equal_to([True] * len(keys)), label="EveryMember")


def _coco_with(root, images, annotations):
    """A tiny COCO release under ``root`` (JSON written with escapes, as a release may hold them)."""
    from PIL import Image

    from schemas.config import CocoConfig, CorpusConfig

    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    os.makedirs(os.path.join(root, "train2017"), exist_ok=True)
    with open(os.path.join(root, "annotations", "captions_train2017.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations}, f)
    for image in images:
        if "\ud800" not in image["file_name"]:
            Image.new("RGB", (4, 3), (10, 20, 30)).save(os.path.join(root, "train2017", image["file_name"]))
    return CorpusConfig(output=os.path.join(root, "out"), sources={"coco": CocoConfig(root=str(root), shards=2)})


def test_lone_surrogates_become_rejects_not_a_dead_run(tmp_path):
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 4, "height": 3} for i in (1, 2)]
    images.append({"id": 3, "file_name": "bad\ud800.jpg", "width": 4, "height": 3})
    annotations = [{"id": 10, "image_id": 1, "caption": "lone \ud800 surrogate"},
                   {"id": 11, "image_id": 2, "caption": "a good caption"},
                   {"id": 12, "image_id": 3, "caption": "another good caption"}]
    config = _coco_with(tmp_path, images, annotations)
    (result,) = run_ingest(config, ["coco"], RunnerConfig(), show_progress=False)
    assert (result.counts.records_in, result.counts.written) == (4, 1)
    assert dict(result.counts.rejected) == {"non_utf8": 2, "empty_text": 1}  # image 1 has no caption left
    rows = [r for f in glob.glob(str(tmp_path / "out" / "rejects" / "ingest" / "coco" / "*.parquet"))
            for r in pq.read_table(f).to_pylist()]
    bad = {r["location"]: r for r in rows if r["reason"] == "non_utf8"}
    assert set(bad) == {"annotations/captions_train2017.json[annotations][0]",
                        "annotations/captions_train2017.json[images][2]"}
    assert "meta.file_name" in bad["annotations/captions_train2017.json[images][2]"]["detail"]
    assert not glob.glob(str(tmp_path / "out" / "**" / "*.tmp-*"), recursive=True)


# --- resume that notices what changed; sources that read nothing; progress of this run only ----------------


def _folder_config(root, n=40, shards=8):
    from PIL import Image

    from schemas.config import CorpusConfig, ImageFolderConfig

    folder = root / "unlabeled2017"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (4, 3), (i, 2 * i, 3 * i)).save(folder / f"{i:04d}.png")
    return CorpusConfig(output=str(root / "out"), sources={"u": ImageFolderConfig(root=str(root), shards=shards)})


def _shard_of_file(name, shards=8):
    from schemas.keys import make_key, shard_of

    return shard_of(make_key("u", name), shards)


def _index_mtimes(config):
    return {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(config.output, "raw", "u", "*.parquet"))}


def test_added_removed_and_changed_files_redo_only_their_shards(tmp_path):
    from PIL import Image

    config = _folder_config(tmp_path)
    first = run_ingest(config, ["u"], RunnerConfig(), show_progress=False)[0]
    assert (first.counts.written, first.shards, first.skipped_shards) == (40, 8, 0)
    folder = tmp_path / "unlabeled2017"

    Image.new("RGB", (4, 3), (1, 1, 1)).save(folder / "new.png")
    before = _index_mtimes(config)
    added = run_ingest(config, ["u"], RunnerConfig(), show_progress=False)[0]
    assert (added.counts.records_in, added.counts.written, added.skipped_shards) == (41, 41, 7)
    redone = {p for p, t in _index_mtimes(config).items() if before[p] != t}
    assert redone == {os.path.join(config.output, "raw", "u", f"{_shard_of_file('new'):05d}.parquet")}

    (folder / "0007.png").unlink()
    removed = run_ingest(config, ["u"], RunnerConfig(), show_progress=False)[0]
    assert (removed.counts.written, removed.skipped_shards) == (40, 7)

    changed = folder / "0009.png"
    Image.new("RGB", (5, 5), (9, 9, 9)).save(changed)  # edited in place: another size and mtime
    again = run_ingest(config, ["u"], RunnerConfig(), show_progress=False)[0]
    assert again.skipped_shards == 7
    rows = [r for p in glob.glob(os.path.join(config.output, "raw", "u", "*.parquet"))
            for r in pq.read_table(p).to_pylist()]
    assert {(r["width"], r["height"]) for r in rows if r["source_id"] == "0009"} == {(5, 5)}
    assert run_ingest(config, ["u"], RunnerConfig(), show_progress=False)[0].skipped_shards == 8


def test_an_edited_annotation_file_redoes_the_source(tmp_path):
    images = [{"id": 1, "file_name": "1.jpg", "width": 4, "height": 3}]
    config = _coco_with(tmp_path, images, [{"id": 10, "image_id": 1, "caption": "a dog"}])
    first = run_ingest(config, ["coco"], RunnerConfig(), show_progress=False)[0]
    _coco_with(tmp_path, images, [{"id": 10, "image_id": 1, "caption": "a dog on a beach"}])
    again = run_ingest(config, ["coco"], RunnerConfig(), show_progress=False)[0]
    assert first.skipped_shards == 0 and again.skipped_shards == 0
    rows = [
        r
        for p in glob.glob(os.path.join(config.output, "raw", "coco", "*.parquet"))
        for r in pq.read_table(p).to_pylist()
    ]
    assert [r["text"] for r in rows] == ["a dog on a beach"]


def test_a_source_that_reads_nothing_is_an_error_naming_it_and_where_it_looked(tmp_path):
    import pytest

    from pipelines.sources import SourceError
    from schemas.config import CorpusConfig, ImageFolderConfig

    (tmp_path / "unlabeled2017").mkdir()
    (tmp_path / "unlabeled2017" / "README.txt").write_text("no images here")
    config = CorpusConfig(output=str(tmp_path / "out"), sources={"u": ImageFolderConfig(root=str(tmp_path))})
    with pytest.raises(SourceError, match=r"source u: no image file .*under .*unlabeled2017"):
        run_ingest(config, ["u"], RunnerConfig(), show_progress=False)
    coco = _coco_with(tmp_path / "coco", [{"id": 1, "file_name": "1.jpg", "width": 4, "height": 3}],
                      [{"id": 10, "image_id": 1, "caption": "a dog"}])
    run_ingest(coco, ["coco"], RunnerConfig(), show_progress=False)
    before = tree_digest(coco.output)
    _coco_with(tmp_path / "coco", [], [])  # the same file, now without images
    with pytest.raises(SourceError, match=r"source coco: no record read from .*captions_train2017\.json"):
        run_ingest(coco, ["coco"], RunnerConfig(), show_progress=False)
    kept = {p: d for p, d in before.items() if p != "raw/coco/features.json"}  # the card's: read from shards again
    assert tree_digest(coco.output) == kept  # the earlier run's shards and manifest are left as they were


def test_progress_and_rate_count_only_this_runs_work(tmp_path, capsys):
    config = _folder_config(tmp_path, n=16, shards=4)
    run_ingest(config, ["u"], RunnerConfig(), show_progress=False)
    reused = run_ingest(config, ["u"], RunnerConfig(), show_progress=True)[0]
    err = capsys.readouterr().err
    assert "[u] shards (4 reused): 0shard" in err and "4/4" not in err
    row = next(line for line in format_summary([reused]).splitlines() if line.startswith("u "))
    assert row.split()[5] == "-" and "4 (4 reused)" in row  # no samples written by this run: no rate
    redone = run_ingest(config, ["u"], RunnerConfig(), overwrite=True, show_progress=True)[0]
    lines = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("[u] shards")]
    assert " 0/4 " in lines[0] and " 4/4 " in lines[-1]
    assert redone.fresh.written == 16 and redone.skipped_shards == 0


def test_a_rerun_of_one_source_reads_no_member_and_no_shard_of_the_others(tmp_path, monkeypatch):
    """The dataset card of a rerun takes the shapes kept in its source's index footers and the other sources'
    kept features: no ``json`` column is read, and no index of another source opened (issue 15: it parsed
    every sample of the corpus, hours at the papers' size, on every ingest)."""
    from pipelines import storage

    config = _folder_config(tmp_path / "a", n=8, shards=2)
    other = _folder_config(tmp_path / "b", n=6, shards=3).sources["u"]
    config = dataclasses.replace(config, sources={"u": config.sources["u"], "v": other})
    run_ingest(config, ["u", "v"], RunnerConfig(), show_progress=False)
    card = (tmp_path / "a" / "out" / "README.md").read_bytes()
    opened, asked = [], []  # paths opened; the columns of each parquet read (None: all)
    real_open, real_read_table, real_read = storage.open_read, pq.read_table, pq.ParquetFile.read

    def open_read(path):
        opened.append(path)
        return real_open(path)

    def read_table(source, *args, columns=None, **kwargs):
        asked.append(columns)
        return real_read_table(source, *args, columns=columns, **kwargs)

    def read(self, columns=None, *args, **kwargs):
        asked.append(columns)
        return real_read(self, columns, *args, **kwargs)

    monkeypatch.setattr(storage, "open_read", open_read)
    monkeypatch.setattr(pq, "read_table", read_table)
    monkeypatch.setattr(pq.ParquetFile, "read", read)
    (again,) = run_ingest(config, ["u"], RunnerConfig(), show_progress=False)
    assert again.skipped_shards == again.shards == 2
    assert (tmp_path / "a" / "out" / "README.md").read_bytes() == card
    assert asked and all(c is not None and "json" not in c for c in asked), asked
    assert not [p for p in opened if "/raw/v/" in p and p.endswith(".parquet")]
    assert [p for p in opened if "/raw/u/" in p and p.endswith(".parquet")]
