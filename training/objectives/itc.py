"""ITC: image-text contrastive learning on the dual-encoder view (VLMo §3.3).

Image and text are encoded alone (``[IMG]`` and ``[CLS]``, projected, normalised); the B x B similarities
(B x N with the N vectors of every rank under torch.distributed),
scaled by the learned temperature, train both directions with cross entropy against the diagonal.
Only samples that have both streams take part.
"""

from __future__ import annotations

import torch

from training.model.inputs import has_image, has_text, select
from training.objectives.base import (
    Objective,
    ObjectiveResult,
    accuracy,
    ce,
    gather_across_ranks,
    register,
    similarity,
    weighted_mean,
)


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
        images, texts = model.embed_image(batch), model.embed_text(batch)
        all_images, offset = gather_across_ranks(images)
        all_texts, _ = gather_across_ranks(texts)
        i2t = scale * similarity(images, all_texts)  # [B, N]: this rank's images against every text
        t2i = scale * similarity(texts, all_images)
        labels = torch.arange(len(images), device=i2t.device) + offset
        per_pair = (ce(i2t, labels) + ce(t2i, labels)) / 2
        local = labels - offset
        return ObjectiveResult(weighted_mean(per_pair, local, batch.sample_weights),
                               {"i2t_accuracy": accuracy(i2t, labels), "t2i_accuracy": accuracy(t2i, labels),
                                "temperature": float(1 / scale.detach())})
