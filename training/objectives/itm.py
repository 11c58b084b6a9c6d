"""ITM: image-text matching on the pooled ``[CLS]`` of the joint encoding.

UNITER §3.2: the collator swaps the image or the text of some pairs and sets ``itm_labels``; mu-VLA §3.4
weights each pair's loss by ``sample_weights`` (its ITM score after the first epoch). VLMo §3.3
(``hard_negatives: true``): every pair of the batch is positive; for each image a negative text and for each
text a negative image are sampled in proportion to the softmax of their ITC similarity (ALBEF), so ITM sees
the hard cases: 3B joint samples per batch of B pairs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.model.inputs import pair
from training.objectives.base import Objective, ObjectiveResult, accuracy, ce, register, require, weighted_mean


def sample_hard_negatives(similarity: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """For each row ``i`` of ``[B, B]`` ``similarity``, a column ``j != i`` drawn with probability
    ``softmax(similarity[i])_j`` renormalised without the diagonal (VLMo §3.3, ALBEF)."""
    if similarity.shape[0] < 2:
        raise ValueError("ITM hard negatives need at least 2 pairs in a batch")
    weights = similarity.float().softmax(dim=1)
    weights = weights.masked_fill(torch.eye(len(weights), dtype=torch.bool, device=weights.device), 0.0)
    weights = weights + 1e-12 * ~torch.eye(len(weights), dtype=torch.bool, device=weights.device)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


@register
class ITM(Objective):
    name = "itm"

    def __init__(self, hard_negatives: bool = False):
        super().__init__()
        self.hard_negatives = hard_negatives
        self.needs_joint = not hard_negatives

    def forward(self, model, batch, outputs):
        if self.hard_negatives:
            return self._hard(model, batch)
        require(batch, self.name, "itm_labels")
        logits = model.itm_logits(outputs)
        labels = batch.itm_labels.long()
        index = torch.arange(len(labels), device=labels.device)
        return ObjectiveResult(weighted_mean(ce(logits, labels), index, batch.sample_weights),
                               {"accuracy": accuracy(logits, labels)})

    def _hard(self, model, batch):
        with torch.no_grad():
            similarity = model.embed_image(batch) @ model.embed_text(batch).t()
            negative_text = sample_hard_negatives(similarity)  # per image
            negative_image = sample_hard_negatives(similarity.t())  # per text
        n = similarity.shape[0]
        own = torch.arange(n, device=similarity.device)
        joint = pair(batch, torch.cat([own, negative_text, own]), batch, torch.cat([own, own, negative_image]))
        logits = model.itm_logits(model(joint))
        labels = torch.cat([torch.ones(n), torch.zeros(2 * n)]).long().to(logits.device)
        loss = weighted_mean(ce(logits, labels), torch.cat([own, own, own]), batch.sample_weights)
        return ObjectiveResult(loss, {"accuracy": accuracy(logits, labels)})
