"""Near-duplicate search: the banded pHash index vs exact all-pairs comparison, and dedup at scale.

    python -m benchmarks.dedup --pairs-n 20000 --scale-n 1000000
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs-n", type=int, default=20000)
    parser.add_argument("--scale-n", type=int, default=1_000_000)
    args = parser.parse_args()

    hashes = random_hashes(args.pairs_n, args.pairs_n // 100)
    started = time.perf_counter()
    exact = brute_force(hashes)
    brute_s = time.perf_counter() - started
    started = time.perf_counter()
    i, j, _ = hamming_pairs(hashes, DISTANCE)
    banded_s = time.perf_counter() - started
    banded = set(zip(i.tolist(), j.tolist(), strict=True))
    print(f"{args.pairs_n} hashes, distance <= {DISTANCE}: all-pairs {brute_s:.2f} s, banded {banded_s:.3f} s "
          f"({brute_s / banded_s:.0f}x), same {len(banded)} pairs: {banded == exact}")

    hashes = random_hashes(args.scale_n, args.scale_n // 100, seed=1)
    items = [Item(f"k{n:08d}", "s", "image", None, f"{int(h):016x}", None, (0, f"k{n:08d}"))
             for n, h in enumerate(hashes)]
    started = time.perf_counter()
    duplicates = find_duplicates(items, DISTANCE)
    print(f"find_duplicates over {args.scale_n} images ({args.scale_n // 100} planted near copies): "
          f"{time.perf_counter() - started:.1f} s, {len(duplicates)} duplicates")


if __name__ == "__main__":
    main()
