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


def unit_budget_batches(lengths: Sequence[tuple[int, int]], budget: int, max_batch_size: int) -> list[list[int]]:
    """Indices of ``lengths`` (``(text units, visual units)`` per sample) cut into batches whose padded size
    stays within ``budget`` (a sample longer than the budget on its own gets a batch of one), after sorting
    by visual units, then text units (UNITER App. A.2). Both streams pad separately, so neighbours must
    match in both: sorting by the visual length first padded 5-25% less than sorting by the total on
    caption-like mixes (docs/BENCHMARKS.md). Ties keep their order, so the result is deterministic."""
    if budget < 1 or max_batch_size < 1:
        raise ValueError(f"budget and max_batch_size must be positive, got {budget}, {max_batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i][1], lengths[i][0], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest_text = longest_visual = 0
    for i in order:
        text, visual = lengths[i]
        grown_text, grown_visual = max(longest_text, text), max(longest_visual, visual)
        if current and ((len(current) + 1) * (grown_text + grown_visual) > budget
                        or len(current) >= max_batch_size):
            batches.append(current)
            current, grown_text, grown_visual = [], text, visual
        current.append(i)
        longest_text, longest_visual = grown_text, grown_visual
    if current:
        batches.append(current)
    return batches


def fixed_size_batches(count: int, size: int) -> list[list[int]]:
    """The baseline: consecutive batches of ``size`` in stream order."""
    return [list(range(start, min(start + size, count))) for start in range(0, count, size)]


def padding_fraction(lengths: Sequence[tuple[int, int]], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded units that are padding, over all ``batches``."""
    real = sum(lengths[i][0] + lengths[i][1] for batch in batches for i in batch)
    padded = sum(padded_units(lengths, batch) for batch in batches)
    return 1.0 - real / padded if padded else 0.0
