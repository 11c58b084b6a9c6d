"""AdamW parameter groups and the warm-up + decay schedule, against hand-computed values and torch's own."""

import pytest
import torch
from torch import nn

from schemas.config_errors import ConfigError
from training.config import OptimConfig, ScheduleConfig
from training.optim import WarmupDecay, build_optimizer, build_scheduler, param_groups


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.linear = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.scale = nn.Parameter(torch.ones(()))     # a learned temperature: 0-d, no decay


def test_norms_biases_and_scalars_get_no_decay():
    model = Block()
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    assert ids(decay["params"]) == {id(model.embed.weight), id(model.linear.weight)}
    assert ids(no_decay["params"]) == {id(model.linear.bias), id(model.norm.weight), id(model.norm.bias),
                                       id(model.scale)}


def test_decay_applies_only_to_the_decay_group():
    """One AdamW step with zero gradients: only weight decay moves a parameter."""
    model = Block()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(model, OptimConfig(lr=0.1, weight_decay=0.5))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        moved = not torch.equal(before[name], p.detach())
        assert moved == (name in ("embed.weight", "linear.weight")), name
        if moved:
            torch.testing.assert_close(p.detach(), before[name] * (1 - 0.1 * 0.5))


def test_warmup_then_linear_decay():
    schedule = WarmupDecay(ScheduleConfig(steps=10, warmup_steps=4))
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(4) == 1.0 and schedule(7) == pytest.approx(0.5) and schedule(10) == 0.0
    ratio = WarmupDecay(ScheduleConfig(steps=100, warmup_ratio=0.1))        # mu-VLA: 10% warm-up
    assert ratio.warmup == 10 and ratio(9) == 1.0


def test_cosine_floor_and_scheduler_drives_the_optimizer():
    cfg = ScheduleConfig(steps=8, warmup_steps=0, decay="cosine", min_lr_ratio=0.1)
    schedule = WarmupDecay(cfg)
    assert schedule(0) == 1.0 and schedule(4) == pytest.approx(0.55) and schedule(8) == pytest.approx(0.1)
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model, OptimConfig(lr=2e-4))
    scheduler = build_scheduler(optimizer, cfg)
    lrs = []
    for _ in range(8):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([2e-4 * schedule(s) for s in range(8)])
    # the scheduler's state restores into a fresh one (checkpoints)
    fresh = build_scheduler(build_optimizer(model, OptimConfig(lr=2e-4)), cfg)
    fresh.load_state_dict(scheduler.state_dict())
    assert fresh.get_last_lr() == scheduler.get_last_lr()


def test_bad_sections_name_their_key():
    with pytest.raises(ConfigError, match=r"^optim.betas:"):
        OptimConfig(betas=[0.9]).validate("optim")
    with pytest.raises(ConfigError, match=r"^schedule: give warmup_steps or warmup_ratio"):
        ScheduleConfig(warmup_steps=1, warmup_ratio=0.1).validate("schedule")
    with pytest.raises(ConfigError, match=r"^schedule.warmup_steps:"):
        ScheduleConfig(steps=5, warmup_steps=6).validate("schedule")
