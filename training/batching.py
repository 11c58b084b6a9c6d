"""Unit-budget batches and the batch kind of each step.

UNITER App. A.2 batches "by number of input units (text tokens + image regions)" with dynamic sequence
length: samples of similar length share a batch, so little is padded. Here a chunk of samples (the
length-sorted buffer) is sorted by length and cut greedily so that each batch's padded size,
``len(batch) * (longest text + longest visual)``, stays within the budget. UNITER §3.1 trains one
pre-training task per mini-batch: the kind of step ``s`` is drawn from the mixing weights by a generator
seeded with ``(seed, s)`` alone, so every rank and every worker agrees on it without communicating.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

KIND_STREAM = 0x6B696E64  # separates the kind generator from the other seeded streams


def kind_for_step(weights: Sequence[float], seed: int, step: int) -> int:
    """The index of the batch kind trained at ``step`` (the same on every rank, UNITER §3.1)."""
    probs = np.asarray(weights, dtype=np.float64)
    rng = np.random.default_rng([KIND_STREAM, seed, step])
    return int(rng.choice(len(probs), p=probs / probs.sum()))


def padded_units(lengths: Sequence[tuple[int, int]], batch: Sequence[int]) -> int:
    """Units a batch occupies once padded: every sample as long as the longest text and visual stream."""
    if not batch:
        return 0
    return len(batch) * (max(lengths[i][0] for i in batch) + max(lengths[i][1] for i in batch))


REBALANCE_WINDOW = 512  # samples re-cut at once: the cost matrix is window^2 (2 MB), the time window^2 * batches


def unit_budget_batches(lengths: Sequence[tuple[int, int]], budget: int, max_batch_size: int) -> list[list[int]]:
    """Indices of ``lengths`` (``(text units, visual units)`` per sample) cut into batches whose padded size
    stays within ``budget`` (a sample longer than the budget on its own gets a batch of one), after sorting
    by visual units, then text units (UNITER App. A.2). Both streams pad separately, so neighbours must
    match in both: sorting by the visual length first padded 5-25% less than sorting by the total on
    caption-like mixes (docs/BENCHMARKS.md).

    A greedy cut of the sorted samples makes the fewest batches but fills the first ones to the budget and
    leaves the rest to the last; each run of its batches spanning up to ``REBALANCE_WINDOW`` samples is then
    re-cut into as many batches with the least padding (``balanced_cuts``). Deterministic."""
    if budget < 1 or max_batch_size < 1:
        raise ValueError(f"budget and max_batch_size must be positive, got {budget}, {max_batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i][1], lengths[i][0], i))
    text = np.array([lengths[i][0] for i in order], dtype=np.int64)
    visual = np.array([lengths[i][1] for i in order], dtype=np.int64)
    greedy = _greedy_cuts(text, visual, budget, max_batch_size)
    cuts = [0]
    while cuts[-1] < len(order):
        start = cuts[-1]
        ends = [end for end in greedy if start < end <= start + REBALANCE_WINDOW] or [greedy[greedy.index(start) + 1]]
        window = _batch_costs(text[start:ends[-1]], visual[start:ends[-1]], budget, max_batch_size)
        cuts += [start + cut for cut in balanced_cuts(window, len(ends))[1:]]
    return [order[start:end] for start, end in pairwise(cuts)]


_INFEASIBLE = np.iinfo(np.int64).max // 4  # summed over a window's batches without overflow


def _greedy_cuts(text: np.ndarray, visual: np.ndarray, budget: int, max_batch_size: int) -> list[int]:
    """Boundaries of the greedy cut: each batch as long as the budget and the batch size allow (the fewest
    batches, since any part of an allowed batch is allowed)."""
    cuts, longest_text, size = [0], 0, 0
    for i, (t, v) in enumerate(zip(text.tolist(), visual.tolist(), strict=True)):
        grown = max(longest_text, t)
        if size and ((size + 1) * (grown + v) > budget or size >= max_batch_size):
            cuts.append(i)
            grown, size = t, 0
        longest_text, size = grown, size + 1
    return cuts + [len(text)] if len(text) else cuts


def _batch_costs(text: np.ndarray, visual: np.ndarray, budget: int, max_batch_size: int) -> np.ndarray:
    """``cost[i, j]``: padded units of the batch of sorted samples ``i .. j-1`` (visual lengths ascend, so its
    longest visual stream is sample ``j-1``'s), or ``_INFEASIBLE`` past the budget or the batch size."""
    n = len(text)
    longest_text = np.maximum.accumulate(np.triu(np.broadcast_to(text, (n, n))), axis=1)  # [i, j]: max text[i..j]
    size = np.arange(n)[None, :] - np.arange(n)[:, None] + 1  # [i, j]: j - i + 1 samples
    padded = size * (longest_text + visual[None, :])
    allowed = ((padded <= budget) & (size <= max_batch_size) | (size == 1)) & (size >= 1)  # alone: always
    cost = np.full((n + 1, n + 1), _INFEASIBLE, dtype=np.int64)
    cost[:n, 1:] = np.where(allowed, padded, _INFEASIBLE)
    return cost


def balanced_cuts(cost: np.ndarray, batches: int) -> list[int]:
    """Boundaries ``0 = c_0 < ... < c_k = n`` of ``batches`` consecutive batches with the least summed
    ``cost`` (dynamic programming over the ``(n + 1) x (n + 1)`` cost matrix, ``batches`` rounds)."""
    n = len(cost) - 1
    best = np.full(n + 1, _INFEASIBLE, dtype=np.int64)
    best[0] = 0
    choices = []
    for _ in range(batches):
        total = np.minimum(best[:, None] + cost, _INFEASIBLE)
        choice = total.argmin(axis=0)  # the first of equal starts: deterministic
        best = total[choice, np.arange(n + 1)]
        choices.append(choice)
    cuts = [n]
    for choice in reversed(choices):
        cuts.append(int(choice[cuts[-1]]))
    return cuts[::-1]


def fixed_size_batches(count: int, size: int) -> list[list[int]]:
    """The baseline: consecutive batches of ``size`` in stream order."""
    return [list(range(start, min(start + size, count))) for start in range(0, count, size)]


def padding_fraction(lengths: Sequence[tuple[int, int]], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded units that are padding, over all ``batches``."""
    real = sum(lengths[i][0] + lengths[i][1] for batch in batches for i in batch)
    padded = sum(padded_units(lengths, batch) for batch in batches)
    return 1.0 - real / padded if padded else 0.0
