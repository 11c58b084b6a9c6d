"""The pack stage on a cleaned, annotated and retrieved mini corpus (tests/pack/conftest.py) through the
DirectRunner: the packed shards are read back with plain ``webdataset`` (no project code) and checked
against the sidecar tables they were joined from."""

import contextlib
import dataclasses
import glob
import io
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
import yaml
from PIL import Image

from cli.main import main
from pipelines.runner import RunnerConfig
from pipelines.sidecar_tables import raw_shards, read_shard_input, read_sidecar, sample_texts
from pipelines.stages.clean import removed_reasons
from pipelines.stages.pack import read_pack_counts, run_pack
from schemas.packed import REGION_FEATS, REGION_PROBS, missing_fields
from schemas.tables import check_version
from tests.conftest import tree_digest
from tests.pack.conftest import SOURCES, WEAK

TASKS = ["pairs", "images", "texts", "tag_pairs", "weak_pairs", "cmcl"]
RATIOS = [0, 20, 40, 60, 80, 100]
ALL_TASKS = TASKS + [f"pairs_aligned_{x}" for x in RATIOS]


@pytest.fixture(scope="module")
def packed(annotated):
    """(config path, config, summary output) after one ``unicorpus pack``."""
    path, config = annotated
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["pack", "--config", path, "--quiet"]) == 0
    return path, config, out.getvalue()


def read_task(root, task) -> list[dict]:
    """Every sample of ``packed/<task>/`` through plain webdataset (PIL images, decoded json and npy)."""
    urls = sorted(glob.glob(f"{root}/packed/{task}/*.tar"))
    if not urls:
        return []
    return list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))


@pytest.fixture(scope="module")
def samples(packed):
    _, config, _ = packed
    return {task: read_task(config.output, task) for task in ALL_TASKS}


def removed(root) -> dict[str, str]:
    return {key: reason for source in SOURCES for key, reason in removed_reasons(root, source).items()}


def kept_rows(root, source) -> list[dict]:
    gone = removed(root)
    return [row for shard in raw_shards(root, source) for row in read_shard_input(root, source, shard).rows
            if row["key"] not in gone]


def test_plain_webdataset_reads_every_task_and_sizes_json_counts_each_shard(packed, samples):
    _, config, out = packed
    root = config.output
    for task in ALL_TASKS:
        assert samples[task], task
        sizes = json.loads(open(f"{root}/packed/{task}/sizes.json").read())
        assert sorted(sizes) == sorted(os.path.basename(p) for p in glob.glob(f"{root}/packed/{task}/*.tar"))
        for name, count in sizes.items():
            assert count == sum(1 for _ in wds.WebDataset(f"{root}/packed/{task}/{name}", shardshuffle=False))
        assert sum(sizes.values()) == len(samples[task])
        for sample in samples[task]:
            meta = sample["json"]
            assert meta["key"] == sample["__key__"] and meta["task"] == task
            for member in ("jpg", "png"):
                if member in sample:
                    assert isinstance(sample[member], Image.Image) and sample[member].size == (
                        meta["regions"]["width"], meta["regions"]["height"])
    assert "read == written + rejected for every source" in out


def test_no_sample_removed_by_clean_enters_packed(packed, samples):
    _, config, out = packed
    gone = removed(config.output)
    assert {r for r in gone.values()} == {"duplicate", "contaminated"}
    referenced = 0
    for task, task_samples in samples.items():
        for sample in task_samples:
            meta = sample["json"]
            keys = {meta["sample_key"], meta.get("text_key"), meta.get("text_from")}
            keys |= {item["key"] for item in meta.get("related_images", []) + meta.get("related_texts", [])
                     + meta.get("negatives", [])}
            assert not keys & set(gone), (task, meta["key"])
            referenced += len(keys)
    assert referenced
    tfidf = [n for s in samples["cmcl"] for n in s["json"]["negatives"] if n["method"] == "tfidf"]
    assert tfidf and all(n["key"] for n in tfidf)
    # what was left out, per source and why: exactly clean's removals of the packed sources
    for source in SOURCES:
        reasons = sorted({reason for key, reason in gone.items() if key.startswith(f"{source}-")})
        if reasons:
            assert f"  {source}: " in out
        for reason in reasons:
            count = sum(1 for key, r in gone.items() if r == reason and key.startswith(f"{source}-"))
            assert f"{reason} {count}" in out.split(f"  {source}: ")[1].splitlines()[0]


def test_every_sample_carries_the_fields_and_members_its_task_needs(samples):
    image_tasks = {"pairs", "images", "tag_pairs", "weak_pairs", "cmcl"} | {f"pairs_aligned_{x}" for x in RATIOS}
    text_tasks = set(ALL_TASKS) - {"images"}
    for task, task_samples in samples.items():
        for sample in task_samples:
            meta = sample["json"]
            assert missing_fields(task, meta) == [], (task, meta["key"])
            assert (("jpg" in sample) or ("png" in sample)) == (task in image_tasks)
            assert ("txt" in sample) == (task in text_tasks)
            if "txt" in sample:
                for phrase in meta["phrases"]:
                    assert sample["txt"][phrase["start"]:phrase["end"]] == phrase["text"]
            if task in image_tasks:
                regions = meta["regions"]
                assert len(regions["boxes"]) == len(regions["labels"]) == len(regions["scores"])
                assert all(0 <= v <= 1 for box in regions["boxes"] for v in box)
                assert (REGION_FEATS in sample) == regions["has_features"]
                assert (REGION_PROBS in sample) == regions["has_probs"]


def test_region_arrays_are_the_detector_outputs_in_float16(packed, samples):
    _, config, _ = packed
    detect = {row["key"]: row for row in read_sidecar(config.output, "ann/detect", "cc")}
    checked = 0
    for sample in samples["pairs"]:
        meta = sample["json"]
        if meta["source"] != "cc" or not meta["regions"]["boxes"]:
            continue
        regions = detect[meta["sample_key"]]["regions"]
        features, probs = sample[REGION_FEATS], sample[REGION_PROBS]
        assert features.dtype == np.float16 and probs.dtype == np.float16
        assert features.shape == (len(regions), len(regions[0]["feature"]))
        np.testing.assert_array_equal(features, np.array([r["feature"] for r in regions], np.float16))
        np.testing.assert_array_equal(probs, np.array([r["class_probs"] for r in regions], np.float16))
        assert meta["regions"]["labels"] == [r["label"] for r in regions]
        checked += 1
    assert checked
    coco = [s for s in samples["pairs"] if s["json"]["source"] == "coco"]
    assert coco and not any(s["json"]["regions"]["has_features"] for s in coco)  # ground truth: no detector


def test_units_are_packed_or_rejected_and_pairs_are_every_kept_caption(packed, samples):
    _, config, _ = packed
    root = config.output
    for source in SOURCES:
        for shard in raw_shards(root, source):
            counts = read_pack_counts(root, source, shard)
            table = pq.read_table(f"{root}/rejects/pack/{source}/{shard:05d}.parquet")
            check_version(table.schema, source)
            stages = table.column("stage").to_pylist()
            for task, c in counts["tasks"].items():
                assert c["units"] == c["packed"] + sum(c["rejected"].values())
                assert stages.count(f"pack/{task}") == sum(c["rejected"].values())
    captions = {(row["key"], i) for source in SOURCES for row in kept_rows(root, source) if row["modality"] == "pair"
                for i, _ in sample_texts(row)}
    pair_rejects = [row for path in glob.glob(f"{root}/rejects/pack/*/*.parquet")
                    for row in pq.read_table(path).to_pylist() if row["stage"] == "pack/pairs"]
    assert len(samples["pairs"]) + len(pair_rejects) == len(captions)
    packed_pairs = {(s["json"]["sample_key"], s["json"]["text_index"]) for s in samples["pairs"]}
    assert packed_pairs <= captions
    for sample in samples["pairs"]:  # the caption is the raw sample's own text
        assert dict(sample_texts(_raw_row(root, sample["json"])))[sample["json"]["text_index"]] == sample["txt"]
    images = {row["key"] for row in kept_rows(root, "coco_unlabeled")}
    assert {s["json"]["sample_key"] for s in samples["images"]} == images
    texts = {row["key"] for row in kept_rows(root, "bookcorpus")}
    assert {s["json"]["sample_key"] for s in samples["texts"]} == texts


def _raw_row(root, meta):
    return next(row for shard in raw_shards(root, meta["source"])
                for row in read_shard_input(root, meta["source"], shard).rows if row["key"] == meta["sample_key"])


def test_weak_pairs_carry_each_retrieved_sentence_with_its_links(packed, samples):
    _, config, _ = packed
    root = config.output
    gone = removed(root)
    links = {(row["query_key"], row["rank"]): row for source in WEAK["images"]
             for row in read_sidecar(root, "links/weak-books", source)}
    expected = {k for k, row in links.items() if k[0] not in gone and row["key"] not in gone}
    assert {(s["json"]["sample_key"], s["json"]["rank"]) for s in samples["weak_pairs"]} == expected
    region_links = [row for source in WEAK["images"] for row in read_sidecar(root, "links/weak-books-regions", source)]
    linked = 0
    for sample in samples["weak_pairs"]:
        meta = sample["json"]
        link = links[(meta["sample_key"], meta["rank"])]
        assert sample["txt"] == link["text"] and meta["text_key"] == link["key"]
        assert meta["score"] == pytest.approx(link["score"], abs=1e-6)
        rows = [r for r in region_links if (r["query_key"], r["key"], r["text_index"]) ==
                (meta["sample_key"], link["key"], link["text_index"])]
        assert len(meta["phrase_regions"]) == len(rows)
        for pr in meta["phrase_regions"]:
            assert sample["txt"][pr["start"]:pr["end"]] == pr["phrase"]
            assert 0 <= pr["region"] < len(meta["regions"]["boxes"])
            linked += 1
    assert linked


def test_cmcl_inlines_rewrites_and_related_items(packed, samples):
    _, config, _ = packed
    cmcl = config.pack.cmcl
    assert samples["cmcl"]
    inlined = 0
    for sample in samples["cmcl"]:
        meta = sample["json"]
        assert {p["method"] for p in meta["positives"]} <= {"back_translation"}
        assert len(meta["negatives"]) <= cmcl.negatives
        assert {n["method"] for n in meta["negatives"]} <= {"scene_graph", "tfidf"}
        assert len(meta["related_texts"]) <= cmcl.related_texts
        assert len(meta["related_images"]) <= cmcl.related_images
        for i, item in enumerate(meta["related_images"]):
            assert item["member"] == f"related_{i}.{item['member'].rsplit('.', 1)[1]}"
            assert isinstance(sample[item["member"]], Image.Image)
            assert sample[item["member"]].size == (item["regions"]["width"], item["regions"]["height"])
            assert (f"related_{i}.{REGION_FEATS}" in sample) == item["regions"]["has_features"]
            assert item["key"] != meta["sample_key"]
            inlined += 1
    assert inlined
    assert any(meta["positives"] for meta in (s["json"] for s in samples["cmcl"]))
    assert any(meta["negatives"] for meta in (s["json"] for s in samples["cmcl"]))


def test_alignment_ratio_corpora_keep_exactly_x_percent_aligned_per_shard(packed):
    _, config, _ = packed
    root = config.output
    aligned_sets = []
    captions = {}
    deranged = 0
    for x in RATIOS:
        task = f"pairs_aligned_{x}"
        aligned = set()
        for url in sorted(glob.glob(f"{root}/packed/{task}/*.tar")):
            shard_samples = list(wds.WebDataset(url, shardshuffle=False).decode())
            n = len(shard_samples)
            flags = [s["json"]["aligned"] for s in shard_samples]
            assert sum(flags) == round(n * x / 100), (task, url)
            for sample in shard_samples:
                meta = sample["json"]
                if meta["aligned"]:
                    assert meta["text_from"] == meta["sample_key"] and meta["text_from_index"] == meta["text_index"]
                    aligned.add(meta["key"])
                else:
                    assert meta["text_from"] != meta["sample_key"]
                captions.setdefault((meta["text_from"], meta["text_from_index"]), sample["txt"])
                assert captions[(meta["text_from"], meta["text_from_index"])] == sample["txt"]
            unaligned = [s["json"] for s in shard_samples if not s["json"]["aligned"]]
            largest = max(Counter(m["sample_key"] for m in unaligned).values(), default=0)
            if unaligned and len(unaligned) >= 2 * largest:  # then a derangement of their own captions
                assert sorted((m["sample_key"], m["text_index"]) for m in unaligned) == sorted(
                    (m["text_from"], m["text_from_index"]) for m in unaligned)
                deranged += 1
        aligned_sets.append(aligned)
    for smaller, larger in pairwise(aligned_sets):
        assert smaller <= larger  # nested: raising X only aligns more pairs
    assert deranged


def test_rerun_skips_every_shard_and_overwrite_is_byte_identical(packed):
    path, config, _ = packed
    root = config.output
    before = {k: v for k, v in tree_digest(root).items() if k.startswith(("packed", "rejects/pack"))}
    assert any(k.endswith(".tar") for k in before)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["pack", "--config", path, "--quiet"]) == 0
    shards = sum(len(raw_shards(root, s)) for s in SOURCES)
    assert f"{shards} ({shards} reused)" in out.getvalue()
    tasks = run_pack(config, None, RunnerConfig(), overwrite=True, show_progress=False)
    assert all(r.skipped_shards == 0 for r in tasks)
    after = {k: v for k, v in tree_digest(root).items() if k.startswith(("packed", "rejects/pack"))}
    assert after == before


def test_a_missing_sidecar_row_is_a_reject_naming_the_table(packed, tmp_path):
    _, config, _ = packed
    root = tmp_path / "corpus"
    shutil.copytree(config.output, root)
    gone = removed(config.output)
    shard = raw_shards(config.output, "coco")[-1]
    parse_path = root / f"ann/parse/coco/{shard:05d}.parquet"
    table = pq.read_table(parse_path)
    position = next(i for i, key in enumerate(table.column("key").to_pylist()) if key not in gone)
    dropped = table.slice(position, 1).to_pylist()[0]
    pq.write_table(pa.concat_tables([table.slice(0, position), table.slice(position + 1)]), parse_path)
    pack = dataclasses.replace(config.pack, tasks=["pairs", "cmcl"], aligned_ratios=[])
    copy = dataclasses.replace(config, output=str(root), pack=pack)
    tasks = run_pack(copy, ["coco"], RunnerConfig(), overwrite=True, show_progress=False)
    rejects = [row for row in pq.read_table(root / f"rejects/pack/coco/{shard:05d}.parquet").to_pylist()
               if row["reason"] == "missing_row"]
    assert {row["stage"] for row in rejects} == {"pack/pairs", "pack/cmcl"}
    assert all(row["key"] == dropped["key"] and "ann/parse" in row["detail"]
               and row["location"] == f"ann/parse/coco/{shard:05d}.parquet" for row in rejects)
    assert all(f"text {dropped['text_index']}" in row["detail"] for row in rejects)
    for result in tasks:
        assert result.counts.rejected["missing_row"] == 1
        assert result.counts.records_in == result.counts.written + result.counts.rejected_total


def test_a_missing_table_stops_pack_before_any_pipeline_naming_the_stage(packed, tmp_path):
    _, config, _ = packed
    root = tmp_path / "corpus"
    shutil.copytree(config.output, root)
    os.remove(root / "links/related-texts/cc/00000.parquet")
    with pytest.raises(ValueError, match=r"pack cmcl: no .*links/related-texts/cc/00000.parquet; run `unicorpus "
                                         r"retrieve` first"):
        run_pack(dataclasses.replace(config, output=str(root)), ["cc"], RunnerConfig(), show_progress=False)
    assert not glob.glob(f"{root}/rejects/pack/cc/*.tmp-*")


def test_two_worker_processes_pack_the_same_bytes(packed, tmp_path):
    """Nothing process-local: with the DirectRunner's two worker processes (each its own setup) the packed
    tars, sizes.json and rejects are the bytes of the in-process run."""
    path, config, _ = packed
    root = tmp_path / "corpus"
    shutil.copytree(config.output, root, ignore=shutil.ignore_patterns("packed", "pack", "corpus.json"))
    with open(path) as f:
        data = yaml.safe_load(f)
    data["output"] = str(root)
    copy = tmp_path / "corpus.yaml"
    copy.write_text(yaml.safe_dump(data))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "pack", "--config", str(copy), "--quiet", "--workers", "2"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "read == written + rejected for every source" in done.stdout

    def packed_files(base):
        return {k: v for k, v in tree_digest(base).items() if k.startswith(("packed", "rejects/pack"))}

    expected = packed_files(config.output)
    assert len(expected) > 20 and packed_files(root) == expected


def test_a_job_reads_of_other_shards_only_the_rows_it_inlines_and_keeps_nothing(packed, monkeypatch):
    """Issue 15: a worker's memory must not grow with the corpus. Of another shard a job reads the detect
    rows of the related images it inlines (``cmcl.related_images`` per pair at most) and the parse rows of
    its retrieved sentences, never a whole table; nothing outlives the job; and the samples are those packed
    from whole tables."""
    import pipelines.pack as logic
    from pipelines.stages.pack import pack_settings

    _, config, _ = packed
    settings = dataclasses.replace(pack_settings(config), tasks=("weak_pairs", "cmcl"))
    real_read_rows, reads = logic.read_rows, []

    def recording(path, folder, keys=None):
        rows = real_read_rows(path, folder, keys)
        reads.append((path, folder, keys, len(rows)))
        return rows

    def whole(path, folder, keys=None):
        return real_read_rows(path, folder)

    def pack_all(read_rows):
        monkeypatch.setattr(logic, "read_rows", read_rows)
        packer = logic.ShardPacker(settings)
        packer.setup()
        state = dict(vars(packer))
        out = {}
        for source in ("coco", "cc"):
            for shard in raw_shards(config.output, source):
                reads.clear()
                tasks, _ = packer.pack(source, shard)
                out[(source, shard)] = {task: [(s.key, s.members) for s in o.samples] for task, o in tasks}
                yield source, shard, list(reads)
        assert vars(packer) == state  # no table, row or open tar of a finished job stays in the worker
        results.append(out)

    results: list = []
    gone, limit = removed(config.output), settings.cmcl.related_images
    related_reads = parse_reads = read_rows = whole_rows = 0
    for source, shard, job_reads in pack_all(recording):
        pairs = [row for row in read_shard_input(config.output, source, shard).rows if row["modality"] == "pair"]
        links = pq.read_table(f"{config.output}/links/related-images/{source}/{shard:05d}.parquet").to_pylist()
        inlined = {link["key"] for row in pairs
                   for link in logic.first_kept([r for r in links if r["query_key"] == row["key"]], limit, gone)}
        for path, folder, keys, count in job_reads:
            if keys is None:  # the job's own tables
                assert f"/{source}/{shard:05d}.parquet" in path
                continue
            assert count <= len(keys), path
            read_rows += count
            whole_rows += pq.read_metadata(path).num_rows
            if folder == "ann/detect":
                assert keys <= inlined and len(keys) <= limit * len(pairs)
                related_reads += 1
            else:
                assert folder == "ann/parse" and not keys & set(gone)
                parse_reads += 1
    assert related_reads and parse_reads and read_rows < whole_rows
    for _ in pack_all(whole):
        pass
    assert results[0] == results[1]


def test_the_launcher_digests_every_stage_from_listings_as_one_shard_at_a_time(annotated, monkeypatch):
    """Issue 15: pack's, retrieve's and embed's (tags: ann/detect is an input) launchers digest every shard from
    one listing of clean's folders and of the input tables' folders, not an ``exists`` or a glob per shard
    file (a request each on an object store); each digest is the one a single shard's call gives (clean
    removed duplicates and evaluation images from these sources)."""
    from functools import partial

    from pipelines import storage
    from pipelines.stages.embed import EmbedAnnotator
    from pipelines.stages.pack import PackWork, _shared_inputs, pack_settings
    from pipelines.stages.per_shard import AnnotatorWork, _with_digests
    from pipelines.stages.retrieve import LinkWork, linkers

    _, config = annotated
    root = config.output
    for stage in ("dedup", "decontam"):
        assert glob.glob(os.path.join(root, "rejects", stage, "*", "*.parquet"))
    settings = pack_settings(config)
    works = [(PackWork(settings, _shared_inputs(settings), SOURCES), SOURCES),
             *((LinkWork(linker), linker.sources) for linker in linkers(config)),
             (AnnotatorWork(partial(EmbedAnnotator, config.retrieval.embed, "tags"), root), ["coco", "cc"])]
    assert len(works) == 5  # pack, weak pairs, related images, related texts, embed tags
    real_exists, real_glob, calls = storage.exists, storage.glob, Counter()
    for work, sources in works:
        work.params()  # the stage's own inputs (indexes, collections): once a run, not per shard
        jobs = [(source, shard) for source in sources for shard in raw_shards(root, source)]
        alone = [(*job, work.digest(*job)) for job in jobs]
        calls.clear()
        monkeypatch.setattr(storage, "exists", lambda path: calls.update([("exists", path)]) or real_exists(path))
        monkeypatch.setattr(storage, "glob", lambda pattern: calls.update([("glob", pattern)]) or real_glob(pattern))
        assert _with_digests(work, jobs) == alone
        monkeypatch.undo()
        assert not [path for kind, path in calls if kind == "exists"], work
        assert all(pattern.endswith("/*") for kind, pattern in calls), work  # folders listed, each once
        assert max(calls.values()) == 1 and len(calls) >= 2 * len(sources), work


def test_a_pack_digest_opens_the_raw_index_and_each_removal_table_of_its_shard_once(annotated, monkeypatch):
    """Issue 15: pack's digest of a shard reads the raw index's modalities and its footer (the ingest hash) in one
    open, and each of clean's removal tables of the shard once; before, twice each (the rows, then
    ``raw_params_hash``), for every shard of the corpus."""
    from pipelines import storage
    from pipelines.raw_shard import ShardPaths
    from pipelines.sidecar_tables import raw_params_hash
    from pipelines.stages.pack import PackWork, _shared_inputs, pack_settings
    from pipelines.stages.per_shard import _with_digests

    _, config = annotated
    root = config.output
    settings = pack_settings(config)
    work = PackWork(settings, _shared_inputs(settings), SOURCES)
    jobs = [(source, shard) for source in SOURCES for shard in raw_shards(root, source)]
    real_open, opened = storage.open_read, []  # a list: appends are atomic in the reading threads
    monkeypatch.setattr(storage, "open_read", lambda path: opened.append(path) or real_open(path))
    digests = _with_digests(work, jobs)
    monkeypatch.undo()
    indexes = Counter(path for path in opened if "/raw/" in path)
    assert indexes == {ShardPaths.of(root, "ingest", source, shard).index: 1 for source, shard in jobs}
    removals = Counter(path for path in opened if "/rejects/dedup/" in path or "/rejects/decontam/" in path)
    assert removals and set(removals.values()) == {1}
    assert digests == [(*job, work.digest(*job)) for job in jobs]
    for source, shard in jobs:  # the raw part of the digest is the one before, so no shard is packed again
        assert read_shard_input(root, source, shard, ["modality"]).raw_hash == raw_params_hash(root, source, shard)


def test_sizes_json_and_left_out_read_each_shard_footer_once_concurrently(packed, monkeypatch):
    """Issue 15: after the pipelines, ``sizes.json`` of every task and the samples left out per source come from the
    shards' footers, each read once (before: once per task with a tar of the shard for the sizes, in turn) and
    ``READ_THREADS`` at a time; the files and counts are those of the one-at-a-time reads."""
    import threading
    from types import SimpleNamespace

    from pipelines import storage
    from pipelines.stages.pack import left_out, write_sizes

    _, config, _ = packed
    root = config.output
    tasks = tuple(sorted(os.path.basename(path) for path in glob.glob(f"{root}/packed/*")))
    assert len(tasks) == len(ALL_TASKS)
    before = {task: open(f"{root}/packed/{task}/sizes.json", "rb").read() for task in tasks}
    for task in tasks:  # the sizes one footer read at a time, as before
        expected = {os.path.basename(tar): read_pack_counts(root, os.path.basename(tar)[:-10], int(tar[-9:-4]))
                    ["tasks"][task]["packed"] for tar in sorted(glob.glob(f"{root}/packed/{task}/*.tar"))}
        assert json.loads(before[task]) == expected
    expected_left = {source: dict(sorted(sum((Counter(read_pack_counts(root, source, shard)["left_out"])
                                              for shard in raw_shards(root, source)), Counter()).items()))
                     for source in SOURCES}
    assert any(expected_left.values())
    real_open, opened = storage.open_read, []
    monkeypatch.setattr(storage, "open_read",
                        lambda path: opened.append((path, threading.current_thread())) or real_open(path))
    write_sizes(root, tasks)
    footers = Counter(path for path, _ in opened)
    assert set(footers.values()) == {1} and all("/rejects/pack/" in path for path in footers)
    assert threading.main_thread() not in {thread for _, thread in opened}
    assert {task: open(f"{root}/packed/{task}/sizes.json", "rb").read() for task in tasks} == before
    opened.clear()
    assert left_out(root, [SimpleNamespace(removed={source: 0 for source in SOURCES})]) == expected_left
    footers = Counter(path for path, _ in opened)
    assert sorted(footers) == sorted(f"{root}/rejects/pack/{source}/{shard:05d}.parquet" for source in SOURCES
                                     for shard in raw_shards(root, source))
    assert set(footers.values()) == {1} and threading.main_thread() not in {thread for _, thread in opened}


def test_a_pack_run_reads_each_shard_footer_once_after_its_done_check(packed, tmp_path, monkeypatch):
    """Issue 15: a pack run reads a shard's footer once for its counts per task, its samples left out,
    ``sizes.json`` and corpus.json's ``left_out`` (before: four times, the read back's two and those of
    ``write_sizes`` and ``left_out``), besides the launcher's done check; the counts and files are those of
    the footer read by each."""
    from pipelines import storage
    from pipelines.manifest_io import read_manifest
    from pipelines.stages.pack import left_out, recorded_left_out

    _, config, _ = packed
    root = tmp_path / "corpus"
    shutil.copytree(config.output, root)
    config = dataclasses.replace(config, output=str(root))
    tasks = sorted(os.path.basename(path) for path in glob.glob(f"{root}/packed/*"))
    sizes = {task: (root / "packed" / task / "sizes.json").read_bytes() for task in tasks}
    manifest = read_manifest(str(root))
    footers = [storage.join(str(root), "rejects", "pack", source, f"{shard:05d}.parquet")
               for source in SOURCES for shard in raw_shards(str(root), source)]
    opens, real_open = Counter(), storage.open_read
    monkeypatch.setattr(storage, "open_read", lambda path: opens.update([path]) or real_open(path))
    results = run_pack(config, None, RunnerConfig(), show_progress=False)
    assert all(r.skipped_shards == r.shards > 0 for r in results)
    assert {path: n for path, n in opens.items() if "/rejects/pack/" in path} == dict.fromkeys(footers, 2)
    monkeypatch.setattr(storage, "open_read", real_open)
    assert {task: (root / "packed" / task / "sizes.json").read_bytes() for task in tasks} == sizes
    assert read_manifest(str(root))["stages"]["pack"] == manifest["stages"]["pack"]
    recorded = manifest["stages"]["pack"]["left_out"]
    assert left_out(str(root), results) == recorded == recorded_left_out(str(root)) and any(recorded.values())
    for result in results:  # the counts per task, a footer read at a time
        counts = [read_pack_counts(str(root), *job)["tasks"].get(result.name) for job in
                  ((source, shard) for source in SOURCES for shard in raw_shards(str(root), source))]
        assert result.counts.written == sum(c["packed"] for c in counts if c)
        assert result.counts.records_in == sum(c["units"] for c in counts if c)
        assert result.counts.bytes == sum(c["bytes"] for c in counts if c)
