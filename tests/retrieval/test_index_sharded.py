"""Sharded IVF builds (train once, one partial index per part, on-disk merge of the inverted lists) against
the in-process build: real FAISS, real parquet emb tables, real Beam pipelines (DirectRunner, in-process
and two worker processes)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace

import faiss
import numpy as np
import pytest

from benchmarks.index_build import write_emb_tables
from pipelines.runner import RunnerConfig
from retrieval.index import (
    IVFDATA_FILE,
    WORK_DIR,
    SearchIndex,
    build_or_update,
    is_sharded,
    run_serially,
)
from retrieval.index_plan import plan_index
from schemas.config import CorpusConfig
from schemas.stages import IndexConfig, RetrievalConfig
from tests.retrieval.test_index import DIM, clustered, ivf_config, parts_of

IN_PROCESS, SHARDED = "never", "always"


def sq8_config(n: int, **changes) -> IndexConfig:
    """A budget where only 8-bit codes fit (DIM + 8 bytes a vector): compressed codes merge as exactly as floats."""
    return ivf_config(n, memory_budget_mb=n * (DIM + 16) / 2**20, **changes)


def searched(folder: str, queries: np.ndarray, k: int = 10):
    index = SearchIndex.load(folder)
    return (*index.search(queries, k), index)


def curve(info: dict) -> list[tuple[int, float]]:
    return [(c["nprobe"], c["recall"]) for c in info["tuning"]]


def centroids(folder: str) -> np.ndarray:
    index = faiss.read_index(os.path.join(folder, "trained.faiss"))
    ivf = faiss.extract_index_ivf(index)
    return ivf.quantizer.reconstruct_n(0, ivf.nlist)


@pytest.mark.parametrize("make_config", [ivf_config, sq8_config], ids=["ivf_flat", "ivf_sq8"])
def test_merged_index_equals_the_in_process_one(tmp_path, make_config):
    x = clustered(12_000, seed=21)
    queries = clustered(60, seed=22)
    config = make_config(len(x), recall_queries=200)
    one = build_or_update(str(tmp_path / "one"), parts_of(x, 3000), replace(config, sharded=IN_PROCESS), "m", DIM).info
    assert "shards" not in one and one["index_type"] == ("ivf_flat" if make_config is ivf_config else "ivf_sq8")
    want_scores, want_ids, want = searched(str(tmp_path / "one"), queries)
    for size in (len(x), 3000):  # 1 and 4 partial indexes
        folder = str(tmp_path / f"sharded-{size}")
        info = build_or_update(folder, parts_of(x, size), replace(config, sharded=SHARDED), "m", DIM).info
        assert info["shards"] == len(x) // size and info["ivfdata"] == IVFDATA_FILE
        for key in ("factory", "search_params", "recall", "vectors", "params"):
            assert info[key] == one[key], key
        assert curve(info) == curve(one) and len(curve(one)) > 1  # the same recall at every nprobe tried
        np.testing.assert_array_equal(centroids(folder), centroids(str(tmp_path / "one")))  # one training
        scores, ids, index = searched(folder, queries)
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(scores, want_scores)
        assert index.ids.equals(want.ids)
        assert sorted(os.listdir(folder)) == ["build.json", "ids.parquet", "index.faiss", IVFDATA_FILE, "trained.faiss"]


def test_the_folder_moves_with_its_lists(tmp_path):
    """index.faiss names its lists file without a folder: a copied corpus serves from the copy."""
    x = clustered(6000, seed=23)
    build_or_update(str(tmp_path / "a"), parts_of(x, 2000), ivf_config(len(x), sharded=SHARDED), "m", DIM)
    queries = clustered(20, seed=24)
    _, ids_before, _ = searched(str(tmp_path / "a"), queries)
    shutil.move(str(tmp_path / "a"), str(tmp_path / "b"))
    _, ids, _ = searched(str(tmp_path / "b"), queries)
    np.testing.assert_array_equal(ids, ids_before)


KILLED_BUILD = """
import os, signal, sys
from retrieval.index import build_or_update
from tests.retrieval.test_index_sharded import killed_build_inputs

def killed(job, parts):  # trains, fills two partials, then the process is killed: no clean-up runs
    queries = job.train([job.draw(i, part) for i, part in enumerate(parts)])
    for i, part in enumerate(parts[:2]):
        job.fill(i, part, queries)
    os.kill(os.getpid(), signal.SIGKILL)

build_or_update(sys.argv[1], *killed_build_inputs(), run_sharded=killed)
"""


def killed_build_inputs():
    """parts, config, model, dim of the build the subprocess starts and the test resumes."""
    return parts_of(clustered(8000, seed=25), 2000), ivf_config(8000, sharded=SHARDED, recall_queries=200), "m", DIM


def test_a_killed_build_redoes_only_missing_partials(tmp_path):
    parts, config, model, dim = killed_build_inputs()
    folder = str(tmp_path / "i")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    killed = subprocess.run([sys.executable, "-c", KILLED_BUILD, folder], env={**os.environ, "PYTHONPATH": repo},
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not os.path.exists(os.path.join(folder, "build.json"))
    done = {os.path.join(folder, WORK_DIR, n): os.stat(os.path.join(folder, WORK_DIR, n)).st_mtime_ns
            for n in os.listdir(os.path.join(folder, WORK_DIR)) if n.startswith("0000")}
    assert len(done) == 2
    trained = [n for n in os.listdir(os.path.join(folder, WORK_DIR)) if n.startswith("trained-")]
    trained_mtime = os.stat(os.path.join(folder, WORK_DIR, trained[0])).st_mtime_ns
    written: list[str] = []

    def resumed(job, parts):
        assert len(job.train_ids) == 0  # the trained index is reused, not retrained
        assert os.stat(job.trained).st_mtime_ns == trained_mtime
        written.extend(job.partial(i, p) for i, p in enumerate(parts) if not os.path.exists(job.partial(i, p)))
        run_serially(job, parts)
        assert all(os.stat(path).st_mtime_ns == mtime for path, mtime in done.items())

    info = build_or_update(folder, parts, config, model, dim, run_sharded=resumed).info
    assert len(written) == 2 and not set(written) & set(done)
    assert not os.path.exists(os.path.join(folder, WORK_DIR))  # partials go once build.json is written
    whole = build_or_update(str(tmp_path / "whole"), parts, config, model, dim).info
    assert info["search_params"] == whole["search_params"] and info["recall"] == whole["recall"]
    with open(os.path.join(folder, IVFDATA_FILE), "rb") as a, open(tmp_path / "whole" / IVFDATA_FILE, "rb") as b:
        assert a.read() == b.read()


def test_adding_parts_to_a_sharded_index_keeps_its_quantizer(tmp_path):
    x = clustered(12_000, seed=26)
    parts = parts_of(x, 3000)
    config = ivf_config(9000, recall_queries=200)
    sharded, local = str(tmp_path / "sharded"), str(tmp_path / "local")
    build_or_update(sharded, parts[:3], replace(config, sharded=SHARDED), "m", DIM)
    build_or_update(local, parts[:3], replace(config, sharded=IN_PROCESS), "m", DIM)
    before = centroids(sharded)
    added = build_or_update(sharded, parts, replace(config, sharded=SHARDED), "m", DIM)
    local_added = build_or_update(local, parts, replace(config, sharded=IN_PROCESS), "m", DIM)
    assert added.action == local_added.action == "added" and added.info["vectors"] == 12_000
    np.testing.assert_array_equal(centroids(sharded), before)
    assert [p["name"] for p in added.info["parts"]] == ["00000", "00001", "00002", "00003"]
    assert added.info["search_params"] == local_added.info["search_params"] and "add_seconds" in added.info
    queries = clustered(40, seed=27)
    scores, ids, index = searched(sharded, queries)
    want_scores, want_ids, want = searched(local, queries)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    assert index.ids.equals(want.ids)
    assert build_or_update(sharded, parts, replace(config, sharded=SHARDED), "m", DIM).action == "skipped"


def test_which_plans_are_built_sharded():
    ivf = plan_index(2_000_000, 384, 1000, 100_000)
    hnsw = plan_index(2_000_000, 384, 8000, 100_000)
    flat = plan_index(1000, 384, 1000, 100_000)
    assert ivf.kind == "ivf_sq8" and hnsw.kind == "hnsw" and flat.kind == "flat"
    auto = IndexConfig(shard_size=1_000_000)
    assert is_sharded(auto, ivf, 2_000_000) and not is_sharded(auto, ivf, 1_000_000)  # more than one build shard
    assert is_sharded(replace(auto, sharded="always"), ivf, 1000)
    assert not is_sharded(replace(auto, sharded="never"), ivf, 2_000_000)
    for plan in (hnsw, flat):  # a graph does not merge from partial graphs; flat is small
        assert not is_sharded(replace(auto, sharded="always"), plan, 2_000_000)


@pytest.mark.parametrize("workers", [1, 2])
def test_index_stage_builds_sharded_through_beam(tmp_path, capfd, workers):
    from pipelines.stages.index import run_index

    x = clustered(8000, seed=28)
    root = str(tmp_path / "corpus")
    write_emb_tables(root, "s", x, 2000, model="model-x")
    index_config = ivf_config(len(x), recall_queries=200)  # sharded: auto, and 8000 vectors > shard_size
    config = CorpusConfig(root, {}, retrieval=RetrievalConfig(index=replace(index_config, shard_size=3000)))
    [result] = run_index(config, ["text"], show_progress=False, runner=RunnerConfig(workers=workers))
    assert result.action == "built" and result.info["shards"] == 4 and result.info["model"] == "model-x"
    assert "resizing" not in capfd.readouterr().out  # FAISS's progress prints stay off the summary's stdout
    local = build_or_update(str(tmp_path / "local"), parts_of(x, 2000), replace(index_config, sharded=IN_PROCESS),
                            "model-x", DIM).info
    assert result.info["search_params"] == local["search_params"] and result.info["recall"] == local["recall"]
    queries = clustered(30, seed=29)
    scores, ids, index = searched(os.path.join(root, "index", "text", "s"), queries)
    want_scores, want_ids, _ = searched(str(tmp_path / "local"), queries)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    assert [e["key"] for e in index.entries(ids[0])] == [f"s-{i}" for i in want_ids[0]]
    [again] = run_index(config, ["text"], show_progress=False, runner=RunnerConfig(workers=workers))
    assert again.action == "skipped"
