"""FAISS index benchmark: the index ``retrieval.index`` chooses and tunes vs exact flat search, on
embedding-like synthetic vectors, at 100k and 1M vectors of dimension 384.

Data: a two-level mixture, like sentence embeddings' topics and subtopics: ``topics`` random unit
centres; each has ``subtopics`` centres at cosine ~0.8 around it; each vector is a subtopic centre plus
isotropic noise (per-subtopic spread, cosine to its centre 0.6-0.85), L2-normalised. Queries are fresh
draws from the same mixture (not in the index). Both sides search the same 1,000 queries in one batch
with every core; recall@5 is against the exact top 5.

    python -m benchmarks.index --sizes 100000 1000000 --memory-budget-mb 1600
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import pyarrow as pa

DIM = 384
K = 5


def synthetic_part(x: np.ndarray, start: int, size: int):
    """Rows ``start:start+size`` of ``x`` as an index part; keys name the row."""
    from retrieval.index import ArrayPart

    keys = [f"v{i:09d}" for i in range(start, min(start + size, len(x)))]
    rows = pa.table({"key": keys, "source": ["synthetic"] * len(keys),
                     "text_index": pa.array(np.zeros(len(keys), np.int32)), "text": keys})
    return ArrayPart(f"{start // size:05d}", x[start:start + size], rows, "synthetic")


class Mixture:
    def __init__(self, dim: int = DIM, topics: int = 100, subtopics: int = 100, seed: int = 0):
        rng = np.random.default_rng(seed)
        topic = _unit(rng.standard_normal((topics, dim)))
        sub = _unit(np.repeat(topic, subtopics, axis=0) + 0.75 * _unit(rng.standard_normal((topics * subtopics, dim))))
        self.centres = sub.astype(np.float32)
        self.spread = rng.uniform(0.6, 1.3, len(sub)).astype(np.float32)

    def draw(self, n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((n, self.centres.shape[1]), np.float32)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            which = rng.integers(0, len(self.centres), m)
            noise = _unit(rng.standard_normal((m, self.centres.shape[1]), dtype=np.float32))
            out[start:start + m] = _unit(self.centres[which] + self.spread[which, None] * noise)
        return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run(n: int, budget_mb: float, mixture: Mixture, queries: np.ndarray, work: str) -> dict:
    import faiss

    from retrieval.index import SearchIndex, build_or_update
    from schemas.stages import IndexConfig

    x = mixture.draw(n, seed=n)
    parts = [synthetic_part(x, i, 100_000) for i in range(0, n, 100_000)]
    config = IndexConfig(memory_budget_mb=budget_mb, recall_k=K, recall_target=0.95)
    started = time.perf_counter()
    info = build_or_update(os.path.join(work, str(n)), parts, config, "synthetic", DIM, overwrite=True).info
    build_s = time.perf_counter() - started
    index = SearchIndex.load(os.path.join(work, str(n)))

    flat = faiss.IndexFlatIP(DIM)
    flat.add(x)
    started = time.perf_counter()
    _, exact = flat.search(queries, K)
    flat_s = time.perf_counter() - started
    started = time.perf_counter()
    _, found = index.search(queries, K)
    index_s = time.perf_counter() - started
    recall = np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)])
    return {"vectors": n, "factory": info["factory"], "search_params": info["search_params"],
            "build_recall": info["recall"], "recall": round(float(recall), 4), "flat_ms": 1000 * flat_s / len(queries),
            "index_ms": 1000 * index_s / len(queries), "speedup": flat_s / index_s, "build_s": build_s,
            "index_mb": info["index_mb"], "tuning": info["tuning"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--memory-budget-mb", type=float, default=1600)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    mixture = Mixture()
    queries = mixture.draw(args.queries, seed=1)
    with tempfile.TemporaryDirectory() as work:
        for n in args.sizes:
            result = run(n, args.memory_budget_mb, mixture, queries, work)
            print(f"{n:>9,} vectors  {result['factory']:<16} {json.dumps(result['search_params'])}  "
                  f"recall@{K} {result['recall']:.3f} (build-time {result['build_recall']:.3f})  "
                  f"flat {result['flat_ms']:.3f} ms/q  index {result['index_ms']:.3f} ms/q  "
                  f"{result['speedup']:.1f}x  build {result['build_s']:.0f} s  {result['index_mb']:.0f} MB")
            print("  tuning:", json.dumps(result["tuning"]))


if __name__ == "__main__":
    main()
