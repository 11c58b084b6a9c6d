"""A tiny model takes optimisation steps on each objective on the CPU, and the loss goes down on a fixed batch."""

from __future__ import annotations

import pytest
import torch

from tests.training.tiny import pairs_batch, seq2seq_targets, tiny_model, with_targets
from training.objectives import build_objectives, run_objectives


def _cmcl_batch():
    batch = pairs_batch(b=4, seed=1)
    positives = pairs_batch(b=4, seed=2)
    positives.text_mask[1] = False  # a related image
    positives.region_mask[2] = False  # a related text
    positives.owner = torch.tensor([0, 1, 2, 3])
    negatives = pairs_batch(b=4, seed=3)
    negatives.owner = torch.tensor([0, 1, 2, 3])
    batch.positives, batch.negatives = positives, negatives
    return batch


CASES = {
    "mlm": ({}, lambda: with_targets(pairs_batch()), ["mlm"]),
    "mlm_mome": ({"mome": True}, lambda: with_targets(pairs_batch()), ["mlm"]),
    "seq2seq": ({}, lambda: seq2seq_targets(pairs_batch()), ["seq2seq"]),
    "mrfr": ({}, lambda: with_targets(pairs_batch()), ["mrfr"]),
    "mrc": ({}, lambda: with_targets(pairs_batch()), ["mrc"]),
    "mrc_kl": ({}, lambda: with_targets(pairs_batch()), ["mrc_kl"]),
    "itm_wra": ({}, lambda: with_targets(pairs_batch()), ["itm", "wra"]),
    "itm_hard": (
        {"kind": "patches", "mome": True},
        lambda: pairs_batch(pixels=True),
        {"itm": {"hard_negatives": True}},
    ),
    "itc": ({"kind": "patches"}, lambda: pairs_batch(pixels=True), ["itc"]),
    "cmcl": ({}, _cmcl_batch, ["cmcl"]),
    "p_mrtc": ({"loc": 5}, lambda: with_targets(pairs_batch(loc=5)), ["p_mrtc"]),
    "grounded_dictionary": (
        {"kind": "patches", "dictionary": True},
        lambda: pairs_batch(pixels=True),
        ["grounded_dictionary", "itc"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_goes_down_on_a_fixed_batch(case):
    model_kwargs, make_batch, spec = CASES[case]
    model = tiny_model(seed=0, **model_kwargs)
    objectives = build_objectives(spec)
    batch = make_batch()
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(objectives.parameters()), lr=1e-3)
    losses = []
    for step in range(20):
        torch.manual_seed(step)  # ITM hard negatives draw the same way in every run
        loss, metrics = run_objectives(model, objectives, batch)
        assert torch.isfinite(loss), metrics
        optimizer.zero_grad()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        torch.manual_seed(7)
        final = run_objectives(model, objectives, batch)[0].item()
    assert final < losses[0] - 0.05 * abs(losses[0]), losses + [final]


@pytest.mark.parametrize("case", sorted(CASES))
def test_objectives_under_mixed_precision_stay_close_to_float32(case):
    """CPU autocast with bfloat16 stands in for CUDA AMP: losses come back float32 and near the full-precision
    value, gradients are finite."""
    model_kwargs, make_batch, spec = CASES[case]
    model = tiny_model(seed=0, **model_kwargs)
    objectives = build_objectives(spec)
    batch = make_batch()
    torch.manual_seed(0)
    full = run_objectives(model, objectives, batch)[0].item()
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = run_objectives(model, objectives, batch)
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert loss.item() == pytest.approx(full, rel=0.05, abs=0.05)
