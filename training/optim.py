"""AdamW with parameter groups and the warm-up + decay schedule of the seed recipes.

No weight decay on biases and normalisation weights (BERT's recipe, which UNITER, UNIMO and VLMo inherit):
a parameter is exempt when it is 1-d (biases, norm scales, learned temperatures) or belongs to a norm module.
Schedule: linear warm-up to the peak, then linear (or cosine) decay to ``min_lr_ratio`` x peak at the last
step (mu-VLA §4.2: 10% warm-up, linear decay; UNIMO: 24K warm-up; VLMo: 2.5K warm-up).
"""

from __future__ import annotations

import math

from training.config import OptimConfig, ScheduleConfig

_NORMS = ("LayerNorm", "RMSNorm", "GroupNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d")


def param_groups(model, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed matrices, and undecayed biases / norm weights / other 1-d tensors.
    Frozen parameters stay in the groups (a later curriculum stage may unfreeze them); AdamW skips a
    parameter whose ``grad`` is None."""
    norm_params = {id(p) for module in model.modules() if type(module).__name__ in _NORMS
                   for p in module.parameters(recurse=False)}
    decay, no_decay = [], []
    for _, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        (no_decay if param.ndim < 2 or id(param) in norm_params else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]


def build_optimizer(model, cfg: OptimConfig):
    import torch

    fused = any(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                             eps=cfg.eps, fused=fused or None)


class WarmupDecay:
    """The learning-rate multiplier at an optimizer step (a callable object, so ``LambdaLR`` can save it)."""

    def __init__(self, cfg: ScheduleConfig):
        self.steps, self.warmup = cfg.steps, cfg.warmup
        self.decay, self.floor = cfg.decay, cfg.min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.decay == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        shape = 1.0 - progress if self.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.floor + (1.0 - self.floor) * shape


def build_scheduler(optimizer, cfg: ScheduleConfig):
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupDecay(cfg))
