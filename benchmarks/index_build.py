"""Index build benchmark: the sharded IVF build through Beam (DirectRunner, 2 worker processes) beside the
in-process build, on the same emb tables; build time and the launching process's peak memory.

Data: ``benchmarks.index.Mixture`` vectors (embedding-like, L2-normalised) written as real emb tables
(``emb/text/bench/NNNNN.parquet``, ``--tables`` of them). Both contenders are ``run_index`` with the same
IVF plan (the memory budget fits the floats, not an HNSW graph), the same training sample and the same
recall tuning; only ``retrieval.index.sharded`` differs. Each build runs in a fresh process, so its
``ru_maxrss`` is the peak of that build alone (the Beam workers are other processes: their peak is shown apart).
Rounds are interleaved: each contender once per round, in turn.

    python -m benchmarks.index_build --sizes 100000:384 400000:64 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

CONTENDERS = {"in process": "never", "Beam, 2 workers": "always"}


def write_emb_tables(root: str, source: str, x: np.ndarray, per_table: int, model: str = "bench") -> None:
    """emb/text/<source>/NNNNN.parquet as the embed stage writes them (footer: params hash, model, dim)."""
    from pipelines.sidecar_tables import SidecarPaths, write_sidecar
    from schemas.tables import DIM_KEY, MODEL_KEY, embedding_schema

    for shard, start in enumerate(range(0, len(x), per_table)):
        rows = [{"key": f"{source}-{i}", "source": source, "text_index": 0, "text": f"text {i}", "vector": x[i]}
                for i in range(start, min(start + per_table, len(x)))]
        paths = SidecarPaths.of(root, "emb/text", "embed-text", source, shard)
        for path in (paths.table, paths.rejects):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        write_sidecar(paths, "embed-text", rows, [], embedding_schema(x.shape[1]), f"d{shard}", len(rows),
                      {MODEL_KEY: model.encode(), DIM_KEY: str(x.shape[1]).encode()})


def ivf_budget_mb(n: int, dim: int) -> float:
    """Room for the float vectors and ids of an IVF index, not for an HNSW32 graph (4*dim + 256 bytes each)."""
    return n * (4 * dim + 64) / 2**20


def build_once(root: str, n: int, dim: int, sharded: str) -> dict:
    """One build in this process (the child of ``main``): seconds, this process's peak, what was built."""
    from pipelines.runner import RunnerConfig
    from pipelines.stages.index import run_index
    from schemas.config import CorpusConfig
    from schemas.stages import IndexConfig, RetrievalConfig

    index = IndexConfig(memory_budget_mb=ivf_budget_mb(n, dim), flat_below=1000, sharded=sharded)
    started = time.perf_counter()
    [result] = run_index(CorpusConfig(root, {}, retrieval=RetrievalConfig(index=index)), ["text"], overwrite=True,
                         show_progress=False, runner=RunnerConfig(workers=2))
    return {"seconds": time.perf_counter() - started,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "factory": result.info["factory"], "search_params": result.info["search_params"],
            "recall": result.info["recall"], "shards": result.info.get("shards", 1)}


def measure(root: str, n: int, dim: int, sharded: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.index_build", "--one", root, str(n), str(dim), sharded],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["100000:384", "400000:64"], help="vectors:dim")
    parser.add_argument("--tables", type=int, default=8, help="emb tables (build shards) per collection")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds; the median is reported")
    parser.add_argument("--one", nargs=4, metavar=("ROOT", "N", "DIM", "SHARDED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        root, n, dim, sharded = args.one
        print(json.dumps(build_once(root, int(n), int(dim), sharded)))
        return
    from benchmarks.index import Mixture

    print(f"{os.cpu_count()} cores; median of {args.repeat} interleaved rounds; peak = the launching process's")
    print(f"{'vectors x dim':>14} {'contender':16} {'index':14} {'search':12} {'recall':>6} {'build s':>8} "
          f"{'peak MB':>8} {'workers MB':>10}")
    for size in args.sizes:
        n, dim = (int(v) for v in size.split(":"))
        with tempfile.TemporaryDirectory() as root:
            write_emb_tables(root, "bench", Mixture(dim=dim).draw(n, seed=n), -(-n // args.tables))
            rounds: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
            for _ in range(args.repeat):
                for name, sharded in CONTENDERS.items():
                    rounds[name].append(measure(root, n, dim, sharded))
        medians = {}
        for name, runs in rounds.items():
            last = runs[-1]
            medians[name] = {key: statistics.median(r[key] for r in runs)
                             for key in ("seconds", "peak_mb", "children_peak_mb")}
            workers = f"{medians[name]['children_peak_mb']:10.0f}" if last["shards"] > 1 else f"{'-':>10}"
            print(f"{n:>8,} x {dim:<3} {name:16} {last['factory']:14} {json.dumps(last['search_params']):12} "
                  f"{last['recall']:6.3f} {medians[name]['seconds']:8.1f} {medians[name]['peak_mb']:8.0f} {workers}")
        local, beam = medians["in process"], medians["Beam, 2 workers"]
        print(f"{'':14} Beam / in process: time {beam['seconds'] / local['seconds']:.2f}x, "
              f"launching process's peak {beam['peak_mb'] / local['peak_mb']:.2f}x")


if __name__ == "__main__":
    main()
