"""Unit-budget batches (UNITER App. A.2) and the kind of each step (UNITER §3.1)."""

from __future__ import annotations

import numpy as np
import pytest

from training.batching import fixed_size_batches, kind_for_step, padded_units, padding_fraction, unit_budget_batches


def test_hand_built_budget_cut():
    lengths = [(10, 0), (3, 0), (4, 0), (9, 0), (20, 0)]
    # sorted by (visual, text): 1 (3), 2 (4), 3 (9), 0 (10), 4 (20); budget 20 padded units
    assert unit_budget_batches(lengths, 20, 8) == [[1, 2], [3, 0], [4]]
    assert padded_units(lengths, [3, 0]) == 20
    assert unit_budget_batches(lengths, 1000, 2) == [[1, 2], [3, 0], [4]]
    assert unit_budget_batches([(30, 5)], 10, 4) == [[0]], "a sample over budget gets a batch of its own"
    # visual length first: the two 50-region samples share a batch although their texts differ most
    assert unit_budget_batches([(2, 50), (30, 0), (25, 50), (3, 0)], 150, 8) == [[3, 1], [0, 2]]
    with pytest.raises(ValueError):
        unit_budget_batches(lengths, 0, 4)


def test_every_sample_once_and_within_budget():
    rng = np.random.default_rng(0)
    lengths = [(int(t), int(v)) for t, v in zip(rng.integers(5, 60, 500), rng.integers(0, 37, 500), strict=True)]
    batches = unit_budget_batches(lengths, 800, 64)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for batch in batches:
        assert len(batch) <= 64
        assert padded_units(lengths, batch) <= 800 or len(batch) == 1


def test_the_cut_is_the_least_padded_of_those_with_the_fewest_batches():
    """Against every way of cutting the sorted samples into consecutive batches (brute force, small inputs)."""
    from itertools import combinations

    rng = np.random.default_rng(2)
    for _ in range(40):
        n = int(rng.integers(1, 10))
        lengths = [(int(t), int(v)) for t, v in zip(rng.integers(1, 30, n), rng.integers(0, 20, n), strict=True)]
        budget, cap = int(rng.integers(20, 150)), int(rng.integers(1, 6))
        order = sorted(range(n), key=lambda i: (lengths[i][1], lengths[i][0], i))
        cuttings = []
        for k in range(1, n + 1):
            for inner in combinations(range(1, n), k - 1):
                cuts = [0, *inner, n]
                parts = [order[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
                if all((padded_units(lengths, p) <= budget and len(p) <= cap) or len(p) == 1 for p in parts):
                    cuttings.append((len(parts), sum(padded_units(lengths, p) for p in parts)))
        fewest = min(k for k, _ in cuttings)
        least = min(units for k, units in cuttings if k == fewest)
        batches = unit_budget_batches(lengths, budget, cap)
        assert len(batches) == fewest
        assert sum(padded_units(lengths, b) for b in batches) == least


def test_unit_budget_batches_pad_much_less_than_fixed_size_batches():
    """The padding claim on a caption-like mix: short texts, 10-100 regions, and text-only samples."""
    rng = np.random.default_rng(1)
    text = np.clip(rng.lognormal(2.6, 0.5, 2000), 3, 128).astype(int)
    visual = np.where(rng.random(2000) < 0.3, 0, rng.integers(10, 101, 2000))
    lengths = list(zip(text.tolist(), visual.tolist(), strict=True))
    fixed = fixed_size_batches(len(lengths), 32)
    budget = int(np.mean([padded_units(lengths, b) for b in fixed]))
    dynamic = unit_budget_batches(lengths, budget, 256)
    assert padding_fraction(lengths, dynamic) <= 0.6 * padding_fraction(lengths, fixed)


def test_kind_for_step_is_a_function_of_seed_and_step_only():
    weights = [1, 1, 5]
    first = [kind_for_step(weights, 7, s) for s in range(500)]
    assert first == [kind_for_step(weights, 7, s) for s in range(500)]
    assert first != [kind_for_step(weights, 8, s) for s in range(500)]
    assert set(first) == {0, 1, 2}
    assert kind_for_step([0.0, 1.0], 0, 3) == 1
