"""ITC: image-text contrastive learning on the dual-encoder view (VLMo §3.3).

Image and text are encoded alone (``[IMG]`` and ``[CLS]``, projected, normalised); the B x B similarities,
scaled by the learned temperature, train both directions with cross entropy against the diagonal.
Only samples that have both streams take part.
"""

from __future__ import annotations

import torch

from training.model.inputs import has_image, has_text, select
from training.objectives.base import Objective, ObjectiveResult, accuracy, ce, register, weighted_mean


def paired(batch, objective: str):
    """The samples of ``batch`` with both a text and an image (an error when there are none)."""
    text, image = has_text(batch), has_image(batch)
    if text is None or image is None or not (text & image).any():
        raise ValueError(f"objective {objective!r} needs image-text pairs; batch of task {batch.task!r} has none")
    both = text & image
    return batch if bool(both.all()) else select(batch, both.nonzero().squeeze(1))


@register
class ITC(Objective):
    name = "itc"
    needs_joint = False

    def forward(self, model, batch, outputs):
        batch = paired(batch, self.name)
        scale = model.temperature_scale()
        logits = scale * model.embed_image(batch) @ model.embed_text(batch).t()
        labels = torch.arange(len(logits), device=logits.device)
        per_pair = (ce(logits, labels) + ce(logits.t(), labels)) / 2
        return ObjectiveResult(weighted_mean(per_pair, labels, batch.sample_weights),
                               {"i2t_accuracy": accuracy(logits, labels), "t2i_accuracy": accuracy(logits.t(), labels),
                                "temperature": float(1 / scale.detach())})
