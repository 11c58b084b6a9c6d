"""ITC, CMCL and ITM with hard negatives under torch.distributed (gloo, 2 CPU processes): every rank's vectors
(ITM: every rank's pairs) are negatives, and the ranks' losses and summed gradients equal one process's on the
whole batch (ranks of unequal size)."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import free_port
from tests.training.tiny import pairs_batch, tiny_model
from training.model.inputs import select
from training.objectives import build_objectives, run_objectives

ROWS = {0: [0, 1, 2], 1: [3, 4]}
SPECS = {"itc": ["itc"], "cmcl": ["cmcl"], "itm": {"itm": {"hard_negatives": True}}}


def _loss_and_grads(name: str, batch, scale: float = 1.0):
    model = tiny_model()
    loss, _ = run_objectives(model, build_objectives(SPECS[name]), batch)
    (loss * scale).backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, port: int, name: str, out: str, split: dict | None = None) -> None:
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        split = split or ROWS
        rows, b = split[rank], sum(len(r) for r in split.values())
        local = select(pairs_batch(b=b), torch.tensor(rows))
        loss, grads = _loss_and_grads(name, local, scale=len(rows) / b)
        for grad in grads.values():
            dist.all_reduce(grad)
        torch.save({"loss": loss, "grads": grads}, os.path.join(out, f"{rank}.pt"))
    finally:
        dist.barrier()  # no rank tears gloo down while the other still talks to it
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["itc", "cmcl"])
def test_two_ranks_equal_one_process(name, tmp_path):
    full_loss, full_grads = _loss_and_grads(name, pairs_batch(b=5))
    mp.spawn(_worker, args=(free_port(), name, str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"{r}.pt") for r in (0, 1)]
    assert (3 * results[0]["loss"] + 2 * results[1]["loss"]) / 5 == pytest.approx(full_loss, rel=1e-5)
    # a rank alone (its own 3 pairs) would give another loss: the other rank's vectors were really used
    assert results[0]["loss"] != pytest.approx(
        _loss_and_grads(name, select(pairs_batch(b=5), torch.tensor([0, 1, 2])))[0], rel=1e-3
    )
    for key, grad in full_grads.items():
        assert torch.allclose(results[0]["grads"][key], grad, atol=1e-5), key


def test_itm_hard_negatives_come_from_the_other_rank():
    """One pair per rank: each image's only possible negative text (and each text's negative image) is the
    other rank's, so two ranks build the same 6 joint samples as one process on both pairs."""
    import tempfile

    full_loss, full_grads = _loss_and_grads("itm", pairs_batch(b=2))
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(free_port(), "itm", out, {0: [0], 1: [1]}), nprocs=2, join=True)
        results = [torch.load(os.path.join(out, f"{r}.pt")) for r in (0, 1)]
    assert (results[0]["loss"] + results[1]["loss"]) / 2 == pytest.approx(full_loss, rel=1e-5)
    for key, grad in full_grads.items():
        assert torch.allclose(results[0]["grads"][key], grad, atol=1e-5), key
