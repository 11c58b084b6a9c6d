"""FAISS index planning, building, tuning, sharding, adding and searching on synthetic vectors (no mocks:
real FAISS, real parquet; exact answers come from numpy brute force)."""

from __future__ import annotations

import os
from dataclasses import replace

import faiss
import numpy as np
import pytest

from retrieval.index import (
    ArrayPart,
    SearchIndex,
    build_or_update,
    open_indexes,
    read_build_info,
    search_many,
)
from retrieval.index_plan import ivf_lists, plan_index
from schemas.stages import IndexConfig

DIM = 32


def clustered(n: int, seed: int, dim: int = DIM, clusters: int = 64, spread: float = 0.35) -> np.ndarray:
    """Embedding-like data: normalised points around fixed random centres (the same for every seed, so
    queries drawn with another seed come from the same distribution)."""
    centres = np.random.default_rng(0).normal(size=(clusters, dim))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def parts_of(x: np.ndarray, size: int, source: str = "s", offset: int = 0) -> list[ArrayPart]:
    return [ArrayPart(f"{i // size:05d}", x[i:i + size],
                      [{"key": f"{source}-{offset + j}", "source": source, "text_index": 0, "text": f"t{offset + j}"}
                       for j in range(i, min(i + size, len(x)))], digest="d0")
            for i in range(0, len(x), size)]


def brute_force(x: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ x.T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)])


def ivf_config(n: int, **changes) -> IndexConfig:
    """A budget that forces an IVF index for ``n`` vectors: the floats fit (4*DIM + 8 bytes each), the
    HNSW32 graph (4*DIM + 256) does not; and flat search only below 1000 vectors."""
    return IndexConfig(**{"flat_below": 1000, "memory_budget_mb": n * (4 * DIM + 64) / 2**20,
                          "recall_target": 0.95, "recall_k": 5, "recall_queries": 300, **changes})


def test_flat_search_is_exact(tmp_path):
    x = clustered(600, seed=1)
    info = build_or_update(str(tmp_path / "i"), parts_of(x, 250), IndexConfig(), "m", DIM).info
    assert info["index_type"] == "flat" and info["vectors"] == 600 and info["recall"] == 1.0
    index = SearchIndex.load(str(tmp_path / "i"))
    queries = clustered(20, seed=2)
    scores, ids = index.search(queries, 7)
    want_scores, want_ids = brute_force(x, queries, 7)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    assert [e["key"] for e in index.entries(ids[0])] == [f"s-{i}" for i in want_ids[0]]
    scores, ids = index.search(queries[:1], 700)  # more than it holds: -1 ids, -inf scores
    assert (ids[0, 600:] == -1).all() and np.isneginf(scores[0, 600:]).all() and (ids[0, :600] >= 0).all()
    with pytest.raises(ValueError, match="shape"):
        index.search(np.zeros((1, DIM + 1), np.float32), 3)


def test_plan_follows_the_faiss_guidelines():
    mb = 2**20
    assert plan_index(99_999, 384, 4096, 100_000).factory == "Flat"
    hnsw = plan_index(1_000_000, 384, 4096, 100_000)
    assert (hnsw.kind, hnsw.search_param) == ("hnsw", "efSearch")
    # the same on a GPU: HNSW has no GPU version, so IVF with ~4*sqrt(n) lists
    gpu = plan_index(1_000_000, 384, 4096, 100_000, gpu=True)
    assert (gpu.kind, gpu.factory, gpu.search_param) == ("ivf_flat", "IVF4096,Flat", "nprobe")
    # the graph does not fit, the floats do
    assert plan_index(1_000_000, 384, 1536 * 1_000_000 / mb + 100, 100_000).kind == "ivf_flat"
    # floats do not fit: 8-bit scalar codes, then product quantisation, the largest codes that fit
    assert plan_index(1_000_000, 384, 1000, 100_000).factory == "IVF4096,SQ8"
    pq = plan_index(10_000_000, 384, 1000, 100_000)
    assert pq.kind == "ivf_pq" and pq.factory == "IVF16384_HNSW32,PQ64" and pq.estimated_mb <= 1000
    assert plan_index(10_000_000, 384, 400, 100_000).factory == "IVF16384_HNSW32,PQ24"
    # a big flat collection that does not fit goes to compressed codes even below flat_below
    assert plan_index(50_000, 384, 50, 100_000).kind == "ivf_sq8"
    with pytest.raises(ValueError, match="memory_budget_mb"):
        plan_index(10_000_000, 384, 10, 100_000)
    assert ivf_lists(1_000_000) == 4096 and ivf_lists(100_000_000) == 32768
    assert ivf_lists(1000) * 40 <= 1000  # enough training points per list
    assert plan_index(1_000_000, 384, 4096, 100_000, gpu=True).train_size == 4096 * 40


def test_tuning_raises_nprobe_until_the_recall_target(tmp_path):
    x = clustered(20_000, seed=3)
    info = build_or_update(str(tmp_path / "i"), parts_of(x, 5000), ivf_config(len(x)), "m", DIM).info
    assert info["index_type"] == "ivf_flat" and info["factory"].startswith("IVF")
    curve = info["tuning"]
    assert [c["nprobe"] for c in curve] == [2**i for i in range(len(curve))]  # upward from 1
    assert all(c["recall"] < 0.95 for c in curve[:-1]) and curve[-1]["recall"] >= 0.95
    assert info["recall_reached"] and info["search_params"] == {"nprobe": curve[-1]["nprobe"]} and len(curve) > 1
    # the loaded index searches with the tuned nprobe: recall on fresh queries is near the target
    index = SearchIndex.load(str(tmp_path / "i"))
    assert faiss.extract_index_ivf(index.index).nprobe == curve[-1]["nprobe"]
    queries = clustered(300, seed=4)
    _, found = index.search(queries, 5)
    assert recall(found, brute_force(x, queries, 5)[1]) >= 0.9


def test_sharded_build_equals_one_shot(tmp_path):
    x = clustered(6000, seed=5)
    queries = clustered(50, seed=6)
    for config in (ivf_config(len(x), recall_queries=100), IndexConfig(recall_queries=100)):  # IVF, flat
        one = build_or_update(str(tmp_path / "one"), parts_of(x, 1000), config, "m", DIM, overwrite=True).info
        sharded = build_or_update(str(tmp_path / "sharded"), parts_of(x, 1000), replace(config, shard_size=2000),
                                  "m", DIM, overwrite=True).info
        assert one["factory"] == sharded["factory"] and one["search_params"] == sharded["search_params"]
        a, b = SearchIndex.load(str(tmp_path / "one")), SearchIndex.load(str(tmp_path / "sharded"))
        scores_a, ids_a = a.search(queries, 10)
        scores_b, ids_b = b.search(queries, 10)
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_allclose(scores_a, scores_b, rtol=1e-6)
        assert a.ids.equals(b.ids)


def test_add_without_rebuild(tmp_path):
    folder = str(tmp_path / "i")
    x = clustered(12_000, seed=7)
    parts = parts_of(x, 3000)
    config = ivf_config(9000)
    first = build_or_update(folder, parts[:3], config, "m", DIM)
    assert first.info["index_type"] == "ivf_flat"
    assert first.action == "built" and first.info["vectors"] == 9000
    centroids = _centroids(folder)
    added = build_or_update(folder, parts, config, "m", DIM)
    assert added.action == "added" and added.info["vectors"] == 12_000
    assert [p["name"] for p in added.info["parts"]] == ["00000", "00001", "00002", "00003"]
    np.testing.assert_array_equal(_centroids(folder), centroids)  # not retrained
    assert added.info["recall_reached"]
    index = SearchIndex.load(folder)
    _, ids = index.search(x[9000:9050], 1)
    assert (ids[:, 0] == np.arange(9000, 9050)).mean() >= 0.9  # the new vectors are found under their ids
    assert [e["key"] for e in index.entries([9000, 11_999])] == ["s-9000", "s-11999"]
    assert build_or_update(folder, parts, config, "m", DIM).action == "skipped"
    # a changed emb table, or changed parameters, rebuild
    assert build_or_update(folder, [*parts[:3], replace(parts[3], digest="d1")], config, "m", DIM).action == "built"
    assert build_or_update(folder, parts, replace(config, recall_target=0.9), "m", DIM).action == "built"


def test_an_added_table_whose_name_sorts_first_is_tuned_against_the_right_ids(tmp_path):
    folder = str(tmp_path / "i")
    x = clustered(12_000, seed=7)
    parts = parts_of(x, 3000)
    config = ivf_config(9000)
    first = build_or_update(folder, parts[1:], config, "m", DIM)
    added = build_or_update(folder, parts, config, "m", DIM)
    assert added.action == "added" and added.info["recall_reached"]
    assert added.info["recall"] >= first.info["recall"] - 0.05  # not a recall measured against shuffled ids
    _, ids = SearchIndex.load(folder).search(x[:50], 1)
    assert (ids[:, 0] == np.arange(9000, 9050)).mean() >= 0.9  # the added table's vectors come after the old


@pytest.mark.parametrize("config, kind", [(IndexConfig(), "flat"), (IndexConfig(flat_below=100), "hnsw")])
def test_add_to_flat_and_hnsw_indexes(tmp_path, config, kind):
    folder = str(tmp_path / "i")
    x = clustered(900, seed=8)
    parts = parts_of(x, 300)
    assert build_or_update(folder, parts[:2], config, "m", DIM).info["index_type"] == kind
    added = build_or_update(folder, parts, config, "m", DIM)
    assert added.action == "added" and added.info["vectors"] == 900
    queries = clustered(10, seed=9)
    found = SearchIndex.load(folder).search(queries, 5)[1]
    assert recall(found, brute_force(x, queries, 5)[1]) >= (1.0 if kind == "flat" else 0.9)
    assert (SearchIndex.load(folder).search(x[600:], 1)[1][:, 0] == np.arange(600, 900)).mean() >= 0.95


def test_search_many_merges_indexes_and_open_indexes(tmp_path):
    root = str(tmp_path)
    a, b = clustered(400, seed=10), clustered(300, seed=11)
    for name, x in (("a", a), ("b", b)):
        build_or_update(os.path.join(root, "index", "text", name), parts_of(x, 400, source=name), IndexConfig(),
                        "m", DIM)
    indexes = open_indexes(root, "text")
    assert [i.name for i in indexes] == ["text/a", "text/b"] and indexes[0].info["vectors"] == 400
    queries = clustered(5, seed=12)
    merged = search_many(indexes, queries, 6)
    union = np.concatenate([a, b])
    names = [f"a-{i}" for i in range(400)] + [f"b-{i}" for i in range(300)]
    scores, ids = brute_force(union, queries, 6)
    for q in range(len(queries)):
        assert [entry["key"] for _, entry in merged[q]] == [names[i] for i in ids[q]]
        np.testing.assert_allclose([s for s, _ in merged[q]], scores[q], rtol=1e-5)
    assert [i.name for i in open_indexes(root, "text", ["b"])] == ["text/b"]
    with pytest.raises(ValueError, match="no text index for c"):
        open_indexes(root, "text", ["c"])
    with pytest.raises(ValueError, match="no build.json"):
        SearchIndex.load(os.path.join(root, "index", "tags", "a"))


def test_build_json_records_what_was_built(tmp_path):
    x = clustered(3000, seed=13)
    info = build_or_update(str(tmp_path / "i"), parts_of(x, 1000), ivf_config(len(x), recall_queries=200), "model-x",
                           DIM).info
    assert info == read_build_info(str(tmp_path / "i"))
    assert {"factory", "plan", "search_params", "recall", "recall_k", "vectors", "dim", "model", "index_mb",
            "build_seconds", "parts", "params"} <= set(info)
    assert info["model"] == "model-x" and info["dim"] == DIM and info["params"]["flat_below"] == 1000
    assert sorted(os.listdir(tmp_path / "i")) == ["build.json", "ids.parquet", "index.faiss", "trained.faiss"]


def _centroids(folder: str) -> np.ndarray:
    index = faiss.read_index(os.path.join(folder, "trained.faiss"))  # kept alive while its quantizer is read
    ivf = faiss.extract_index_ivf(index)
    return ivf.quantizer.reconstruct_n(0, ivf.nlist)


def test_summary_says_when_adds_outgrew_the_plan(tmp_path):
    from pipelines.stages.index import IndexResult, format_index_summary

    x = clustered(900, seed=14)
    parts = parts_of(x, 300)
    config = IndexConfig(flat_below=700)
    build_or_update(str(tmp_path / "i"), parts[:2], config, "m", DIM)
    added = build_or_update(str(tmp_path / "i"), parts, config, "m", DIM)
    assert added.info["factory"] == "Flat" and added.info["replan"] == "HNSW32,Flat"
    table = format_index_summary([IndexResult("text/s", added.action, added.info, 0.1)])
    assert "Flat (rebuild: HNSW32,Flat)" in table and "added" in table and "1.000@5" in table


def test_build_digest_ignores_the_clock_only(tmp_path):
    from retrieval.index import build_digest, read_build_info

    folder = str(tmp_path / "i")
    info = build_or_update(folder, parts_of(clustered(3000, seed=3), 1000), ivf_config(3000), "m", DIM).info
    assert read_build_info(folder) == info
    slower = {**info, "build_seconds": info["build_seconds"] + 9,
              "tuning": [{**step, "ms_per_query": step["ms_per_query"] * 2} for step in info["tuning"]]}
    assert build_digest(slower) == build_digest(info)
    assert build_digest({**info, "recall": info["recall"] - 0.01}) != build_digest(info)
    assert build_digest({**info, "parts": info["parts"][:1]}) != build_digest(info)
