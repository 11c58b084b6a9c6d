"""What every objective shares: its result type, the base class, the registry and masked, weighted means."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from torch import Tensor, nn

from schemas.batch import IGNORE_INDEX, Batch

if TYPE_CHECKING:
    from training.model.model import ModelOutput, UnifiedModel


@dataclass
class ObjectiveResult:
    loss: Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class Objective(nn.Module):
    """``forward(model, batch, outputs) -> ObjectiveResult``.

    ``outputs`` is the joint forward of ``batch`` (both streams, the batch's masks and attention pattern),
    computed once per batch by ``run_objectives`` for every objective with ``needs_joint``; objectives that
    encode on their own (ITC, CMCL, ITM with hard negatives) get ``None`` when no other objective needs it.
    """

    name: ClassVar[str]
    needs_joint: ClassVar[bool] = True

    def forward(self, model: UnifiedModel, batch: Batch, outputs: ModelOutput | None) -> ObjectiveResult:
        raise NotImplementedError


OBJECTIVES: dict[str, type[Objective]] = {}


def register(cls: type[Objective]) -> type[Objective]:
    OBJECTIVES[cls.name] = cls
    return cls


def require(batch: Batch, objective: str, *names: str) -> None:
    """A clear error when the collator did not produce a field the objective needs."""
    missing = [n for n in names if getattr(batch, n) is None]
    if missing:
        raise ValueError(f"objective {objective!r} needs batch.{', batch.'.join(missing)}; the collator of "
                         f"task {batch.task!r} did not set it (is {objective!r} in the batch kind's objectives?)")


def other_modality_masked(batch: Batch, outputs: ModelOutput, own: str, other: str) -> ObjectiveResult | None:
    """Conditional masking (UNITER §3.2; mu-VLA §3.3.2) masks one modality per sample; when every sample of
    a batch masked the other one, the collator sets no ``own`` targets (but ``other``): zero loss, not an
    error. None otherwise (the objective runs, and ``require`` still catches a collator that set neither)."""
    if getattr(batch, own) is None and getattr(batch, other) is not None:
        return ObjectiveResult(outputs.hidden.new_zeros(()), {"targets": 0.0})
    return None


def weighted_mean(losses: Tensor, sample: Tensor, weights: Tensor | None) -> Tensor:
    """Mean of per-target ``losses`` with each target scaled by its sample's weight (mu-VLA §3.4: the loss
    of a pair is multiplied by its ITM score). Normalised by the number of targets, not the weights, so a
    low weight lowers the pair's contribution instead of being renormalised away. 0 without targets."""
    if losses.numel() == 0:
        return losses.sum()
    if weights is not None:
        losses = losses * weights.to(losses.dtype)[sample]
    return losses.mean()


def token_targets(labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(sample index, position index)`` of the positions with a target (label != -100)."""
    return (labels != IGNORE_INDEX).nonzero(as_tuple=True)


def accuracy(logits: Tensor, targets: Tensor) -> float:
    if targets.numel() == 0:
        return 0.0
    return float((logits.argmax(-1) == targets).float().mean())


def run_objectives(model: UnifiedModel, objectives: nn.ModuleDict, batch: Batch,
                   weights: dict[str, float] | None = None) -> tuple[Tensor, dict[str, float]]:
    """The batch kind's objectives on one batch: one joint forward shared by those that need it, the losses
    summed (times ``weights[name]``, default 1), metrics prefixed ``<name>/``."""
    outputs = model(batch) if any(o.needs_joint for o in objectives.values()) else None
    total = None
    metrics: dict[str, float] = {}
    for name, objective in objectives.items():
        result = objective(model, batch, outputs)
        loss = result.loss * (weights or {}).get(name, 1.0)
        total = loss if total is None else total + loss
        metrics[f"{name}/loss"] = float(result.loss.detach())
        metrics.update({f"{name}/{k}": v for k, v in result.metrics.items()})
    if total is None:
        raise ValueError("no objectives to run")
    return total, metrics


def build_objectives(spec: list[str] | dict[str, dict | None]) -> nn.ModuleDict:
    """Objectives by registry name: a list of names, or ``{name: {option: value}}`` for per-objective options."""
    import training.objectives  # noqa: F401  (registers every objective module)
    options = {name: {} for name in spec} if isinstance(spec, list) else dict(spec)
    built = {}
    for name, opts in options.items():
        if name not in OBJECTIVES:
            raise ValueError(f"unknown objective {name!r}; expected one of {', '.join(sorted(OBJECTIVES))}")
        try:
            built[name] = OBJECTIVES[name](**(opts or {}))
        except TypeError as e:
            raise ValueError(f"objectives.{name}: {e}") from None
    return nn.ModuleDict(built)


def similarity(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b.T`` in float32 even under AMP (contrastive logits are scaled by up to 100 before softmax)."""
    import torch
    with torch.autocast(a.device.type, enabled=False):
        return a.float() @ b.float().t()


def gather_across_ranks(x: Tensor, differentiable: bool = True) -> tuple[Tensor, int]:
    """Every rank's rows of ``x`` and where this rank's rows start. Ranks may hold different counts, and
    different sizes along the other dimensions (text lengths, region counts): those are zero-padded (False
    for masks) to the largest rank's size.

    Under ``torch.distributed`` the contrastive objectives use all ranks' vectors as negatives (VLMo §3.3,
    UNIMO App. A: the whole batch); the gather keeps the gradient to this rank's rows, and each rank's loss
    covers its own rows (open_clip's local loss with gathered features). ITM's hard negatives gather inputs
    (``differentiable=False``). One process: ``(x, 0)``."""
    import torch
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather
    shapes = [torch.zeros(x.dim(), dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, torch.tensor(x.shape, dtype=torch.long, device=x.device))
    largest = torch.stack(shapes).max(dim=0).values.tolist()
    padded = x.new_zeros(largest)
    padded[tuple(slice(0, n) for n in x.shape)] = x
    if differentiable:
        parts = all_gather(padded)
    else:
        parts = [torch.empty_like(padded) for _ in shapes]
        dist.all_gather(parts, padded)
    rows = [int(shape[0]) for shape in shapes]
    return torch.cat([part[:n] for part, n in zip(parts, rows, strict=True)]), sum(rows[:dist.get_rank()])


def ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-target cross entropy in float32 (AMP-safe)."""
    return nn.functional.cross_entropy(logits.float(), targets, reduction="none")


def classified(logits: Tensor, targets: Tensor, sample: Tensor, weights: Tensor | None) -> ObjectiveResult:
    """The result of a per-target classification (tokens for MLM and seq2seq, region classes for MRC): the
    sample-weighted mean cross entropy, its accuracy and the number of targets."""
    return ObjectiveResult(weighted_mean(ce(logits, targets), sample, weights),
                           {"accuracy": accuracy(logits, targets), "targets": float(targets.numel())})


__all__ = ["OBJECTIVES", "Objective", "ObjectiveResult", "accuracy", "build_objectives", "ce", "classified",
           "gather_across_ranks",
           "other_modality_masked", "register", "require", "run_objectives", "similarity", "token_targets",
           "weighted_mean"]
