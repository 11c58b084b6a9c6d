"""MRC and MRC-kl: masked region classification (UNITER §3.2; mu-VLA §3.3.1).

MRC: cross entropy against the detector's most likely class; MRC-kl: KL(detector distribution || predicted),
with the detector's full class distribution packed per region (``region_probs.npy``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.objectives.base import (
    Objective,
    ObjectiveResult,
    classified,
    other_modality_masked,
    register,
    require,
    weighted_mean,
)


def _masked_logits(model, batch, outputs, name: str) -> tuple[Tensor, Tensor, Tensor]:
    require(batch, name, "region_masked", "region_class_targets")
    sample, region = batch.region_masked.nonzero(as_tuple=True)
    logits = model.region_class_logits(outputs.visual[sample, region]).float()
    return sample, logits, batch.region_class_targets[sample, region].float()


@register
class MRC(Objective):
    name = "mrc"

    def forward(self, model, batch, outputs):
        if (skip := other_modality_masked(batch, outputs, "region_masked", "mlm_labels")) is not None:
            return skip
        sample, logits, distribution = _masked_logits(model, batch, outputs, self.name)
        targets = distribution.argmax(-1)
        return classified(logits, targets, sample, batch.sample_weights)


@register
class MRCKL(Objective):
    name = "mrc_kl"

    def forward(self, model, batch, outputs):
        if (skip := other_modality_masked(batch, outputs, "region_masked", "mlm_labels")) is not None:
            return skip
        sample, logits, distribution = _masked_logits(model, batch, outputs, self.name)
        distribution = distribution / distribution.sum(-1, keepdim=True).clamp_min(1e-12)
        kl = (torch.xlogy(distribution, distribution) - distribution * logits.log_softmax(-1)).sum(-1)
        return ObjectiveResult(weighted_mean(kl, sample, batch.sample_weights), {"targets": float(sample.numel())})
