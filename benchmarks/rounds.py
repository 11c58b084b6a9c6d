"""Interleaved rounds: each contender runs once per round, in turn, so machine noise hits all alike."""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Callable


def interleaved(
    contenders: dict[str, Callable[[str], int]], repeat: int, work: str
) -> dict[str, list[tuple[int, float]]]:
    """``contender(out_dir) -> items done``; returns per contender its (items, items/s) of each round."""
    results: dict[str, list[tuple[int, float]]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, run in contenders.items():
            out = os.path.join(work, "out")
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            done = run(out)
            results[name].append((done, done / (time.perf_counter() - started)))
    return results


def median_rate(rounds: list[tuple[int, float]]) -> float:
    return statistics.median(rate for _, rate in rounds)
