"""WRA's IPOT (UNITER App. A.6) against exact optimal transport: the assignment problem and the transport LP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment, linprog

from tests.training.tiny import pairs_batch, tiny_model, with_targets
from training.objectives import build_objectives
from training.objectives.wra import cosine_cost, ipot, ot_distance


def exact_ot(cost: np.ndarray) -> float:
    """The transport LP with uniform marginals, solved exactly by scipy's HiGHS."""
    n, m = cost.shape
    rows = np.zeros((n, n * m))
    cols = np.zeros((m, n * m))
    for i in range(n):
        rows[i, i * m:(i + 1) * m] = 1
    for j in range(m):
        cols[j, j::m] = 1
    result = linprog(cost.ravel(), A_eq=np.vstack([rows, cols]), b_eq=np.r_[np.full(n, 1 / n), np.full(m, 1 / m)],
                     bounds=(0, None), method="highs")
    assert result.status == 0
    return float(result.fun)


@pytest.mark.parametrize("seed", range(4))
def test_ipot_reaches_the_assignment_optimum_on_square_uniform_cases(seed):
    g = torch.Generator().manual_seed(seed)
    words, regions = torch.randn(1, 6, 8, generator=g), torch.randn(1, 6, 8, generator=g)
    cost = cosine_cost(words, regions)
    rows, cols = linear_sum_assignment(cost[0].numpy())
    exact = float(cost[0, rows, cols].sum()) / 6
    ones = torch.ones(1, 6, dtype=torch.bool)
    plan = ipot(cost, ones, ones, beta=0.1, iterations=500)
    assert float((plan * cost).sum()) == pytest.approx(exact, abs=1e-3)
    # the plan is feasible: uniform marginals
    assert torch.allclose(plan.sum(2), torch.full((1, 6), 1 / 6), atol=1e-4)
    assert torch.allclose(plan.sum(1), torch.full((1, 6), 1 / 6), atol=1e-4)
    # UNITER's setting (beta 0.5, 50 iterations) is an upper bound within a few percent
    approx = float((ipot(cost, ones, ones) * cost).sum())
    assert exact - 1e-5 <= approx <= exact * 1.10


def test_ipot_matches_the_transport_lp_on_rectangular_masked_cases():
    g = torch.Generator().manual_seed(7)
    words, regions = torch.randn(3, 5, 8, generator=g), torch.randn(3, 7, 8, generator=g)
    word_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    region_mask = torch.tensor([[1] * 7, [1, 1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    cost = cosine_cost(words, regions)
    plan = ipot(cost, word_mask, region_mask, beta=0.1, iterations=1000)
    for b in range(3):
        n, m = int(word_mask[b].sum()), int(region_mask[b].sum())
        exact = exact_ot(cost[b, :n, :m].double().numpy())
        assert float((plan[b] * cost[b]).sum()) == pytest.approx(exact, abs=2e-3)
        assert plan[b, n:].abs().sum() == 0 and plan[b, :, m:].abs().sum() == 0  # padding carries no mass


def test_ot_distance_gradient_flows_through_the_cost_only():
    g = torch.Generator().manual_seed(1)
    words = torch.randn(1, 4, 6, generator=g, requires_grad=True)
    regions = torch.randn(1, 4, 6, generator=g)
    ones = torch.ones(1, 4, dtype=torch.bool)
    distance = ot_distance(words, regions, ones, ones)
    distance.sum().backward()
    # with the plan held fixed, d<T, C>/dwords is the gradient of <T_fixed, C(words)>
    with torch.no_grad():
        plan = ipot(cosine_cost(words, regions), ones, ones)
    w2 = words.detach().clone().requires_grad_(True)
    (plan * cosine_cost(w2, regions)).sum().backward()
    assert torch.allclose(words.grad, w2.grad, atol=1e-6)


def test_wra_pulls_matched_and_pushes_swapped_pairs():
    model = tiny_model()
    batch = with_targets(pairs_batch())
    objective = build_objectives(["wra"])["wra"]
    out = model(batch)
    region_mask = batch.region_mask
    distance = ot_distance(out.text, out.visual, batch.text_mask, region_mask)
    sign = torch.where(batch.itm_labels.bool(), 1.0, -1.0)
    expected = (sign * distance).sum() / len(batch)
    assert objective(model, batch, out).loss.item() == pytest.approx(expected.item(), rel=1e-5)
