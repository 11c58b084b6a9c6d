"""Near-duplicate search: the banded pHash index vs exact all-pairs comparison, dedup at scale, and the whole
clean in the launching process vs as Beam pipelines (time and the launching process' peak memory).

    python -m benchmarks.dedup --pairs-n 20000 --scale-n 1000000
    python -m benchmarks.dedup --pairs-n 0 --scale-n 0 --clean-sizes 10000 40000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from pipelines.dedup import Item, find_duplicates, hamming_pairs

DISTANCE = 4


def random_hashes(n: int, planted: int, seed: int = 0) -> np.ndarray:
    """Random 64-bit hashes, the last ``planted`` of them copies of others with 1-4 bits flipped."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    for i in range(n - planted, n):
        flip = rng.choice(64, size=rng.integers(1, DISTANCE + 1), replace=False)
        hashes[i] = hashes[i - (n - planted)] ^ np.uint64(sum(1 << int(b) for b in flip))
    return hashes


def brute_force(hashes: np.ndarray) -> set[tuple[int, int]]:
    """Every pair compared: popcount of XOR, one row block at a time."""
    pairs = set()
    for start in range(0, len(hashes), 256):
        block = hashes[start:start + 256, None] ^ hashes[None, :]
        distance = np.unpackbits(block.view(np.uint8), axis=-1).reshape(*block.shape, 64).sum(-1)
        for i, j in zip(*np.nonzero(distance <= DISTANCE), strict=True):
            if start + i < j:
                pairs.add((start + int(i), int(j)))
    return pairs


def clean_once(way: str, root: str, n: int, workers: int) -> dict:
    """One clean of freshly generated indexes in this process: seconds, and peak RSS of this process (the
    launching one) and of its largest finished child (a Beam worker) in MiB."""
    from pipelines.minicorpus.clean_indexes import write_clean_indexes
    from pipelines.runner import RunnerConfig
    from pipelines.stages.clean import run_clean
    from pipelines.stages.clean_pipeline import run_clean_pipeline

    config = write_clean_indexes(root, n, seed=0)
    started = time.perf_counter()
    results = run_clean(config)[0] if way == "in-process" else run_clean_pipeline(config, RunnerConfig(workers=workers))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "removed": sum(r.removed for r in results),
            "launcher_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def compare_clean(sizes: list[int], workers: int) -> None:
    """Each way in its own process (so peak memory is its own), one after the other per size."""
    for n in sizes:
        found = {}
        for way in ("in-process", "beam"):
            root = tempfile.mkdtemp(prefix="bench-clean-")
            try:
                out = subprocess.run([sys.executable, "-m", "benchmarks.dedup", "--clean-once", way, root, str(n),
                                      str(workers)], check=True, capture_output=True, text=True).stdout
            finally:
                shutil.rmtree(root, ignore_errors=True)
            found[way] = json.loads(out.strip().splitlines()[-1])
        a, b = found["in-process"], found["beam"]
        assert a["removed"] == b["removed"], (a, b)
        print(f"clean, {n} images + {n // 2} sentences ({a['removed']} removed): in-process {a['seconds']:.1f} s, "
              f"peak {a['launcher_mib']:.0f} MiB; Beam ({workers} workers) {b['seconds']:.1f} s "
              f"({b['seconds'] / a['seconds']:.1f}x the time), launcher peak {b['launcher_mib']:.0f} MiB "
              f"({b['launcher_mib'] / a['launcher_mib']:.2f}x), largest worker {b['worker_mib']:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs-n", type=int, default=20000)
    parser.add_argument("--scale-n", type=int, default=1_000_000)
    parser.add_argument("--clean-sizes", type=int, nargs="*", default=[])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clean-once", nargs=4, metavar=("WAY", "ROOT", "N", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clean_once:
        way, root, n, workers = args.clean_once
        print(json.dumps(clean_once(way, root, int(n), int(workers))))
        return
    compare_clean(args.clean_sizes, args.workers)
    if args.pairs_n:
        pairs(args.pairs_n)
    if args.scale_n:
        scale(args.scale_n)


def pairs(n: int) -> None:
    hashes = random_hashes(n, n // 100)
    started = time.perf_counter()
    exact = brute_force(hashes)
    brute_s = time.perf_counter() - started
    started = time.perf_counter()
    i, j, _ = hamming_pairs(hashes, DISTANCE)
    banded_s = time.perf_counter() - started
    banded = set(zip(i.tolist(), j.tolist(), strict=True))
    print(f"{n} hashes, distance <= {DISTANCE}: all-pairs {brute_s:.2f} s, banded {banded_s:.3f} s "
          f"({brute_s / banded_s:.0f}x), same {len(banded)} pairs: {banded == exact}")


def scale(n: int) -> None:
    hashes = random_hashes(n, n // 100, seed=1)
    items = [Item(f"k{k:08d}", "s", "image", None, f"{int(h):016x}", None, (0, f"k{k:08d}"))
             for k, h in enumerate(hashes)]
    started = time.perf_counter()
    duplicates = find_duplicates(items, DISTANCE)
    print(f"find_duplicates over {n} images ({n // 100} planted near copies): "
          f"{time.perf_counter() - started:.1f} s, {len(duplicates)} duplicates")


if __name__ == "__main__":
    main()
