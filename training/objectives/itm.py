"""ITM: image-text matching on the pooled ``[CLS]`` of the joint encoding.

UNITER §3.2: the collator swaps the image or the text of some pairs and sets ``itm_labels``; mu-VLA §3.4
weights each pair's loss by ``sample_weights`` (its ITM score after the first epoch). VLMo §3.3
(``hard_negatives: true``): every pair of the batch is positive; for each image a negative text and for each
text a negative image are sampled in proportion to the softmax of their ITC similarity (ALBEF), so ITM sees
the hard cases: 3B joint samples per batch of B pairs. Under torch.distributed the negatives are drawn from
every rank's pairs, as VLMo does ("hard negative mining from all GPUs"): similarities against the gathered
vectors, the chosen texts and images taken from the gathered inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from schemas.batch import Batch
from training.model.inputs import TEXT_FIELDS, VISUAL_FIELDS, pair
from training.objectives.base import (
    Objective,
    ObjectiveResult,
    accuracy,
    ce,
    gather_across_ranks,
    register,
    require,
    similarity,
    weighted_mean,
)

PAIR_INPUTS = TEXT_FIELDS[:2] + VISUAL_FIELDS[:5]  # what ``pair`` reads: the two streams, no targets


def sample_hard_negatives(similarity: Tensor, own: Tensor | None = None,
                          generator: torch.Generator | None = None) -> Tensor:
    """For each row ``i`` of ``[B, N]`` ``similarity``, a column ``j != own[i]`` drawn with probability
    ``softmax(similarity[i])_j`` renormalised without the row's own pair (VLMo §3.3, ALBEF). ``own``
    defaults to the diagonal (``N == B``: one process)."""
    rows, columns = similarity.shape
    if columns < 2:
        raise ValueError("ITM hard negatives need at least 2 pairs in a batch (over all ranks)")
    own = torch.arange(rows, device=similarity.device) if own is None else own
    is_own = torch.zeros(rows, columns, dtype=torch.bool, device=similarity.device)
    is_own[torch.arange(rows, device=similarity.device), own] = True
    weights = similarity.float().softmax(dim=1).masked_fill(is_own, 0.0) + 1e-12 * ~is_own
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def gather_inputs(batch: Batch) -> tuple[Batch, int]:
    """Every rank's pairs (their text and visual inputs, padded to the largest rank's lengths) and where this
    rank's start; ``(batch, 0)`` in one process. Gathered rows are keyed by their position."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return batch, 0
    values, offset = {}, 0
    for name in PAIR_INPUTS:
        value = getattr(batch, name)
        if value is not None:
            values[name], offset = gather_across_ranks(value, differentiable=False)
    rows = len(next(iter(values.values())))
    return Batch(task=batch.task, keys=[str(i) for i in range(rows)], **values), offset


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
            images, texts = model.embed_image(batch), model.embed_text(batch)
            all_images, offset = gather_across_ranks(images, differentiable=False)
            all_texts, _ = gather_across_ranks(texts, differentiable=False)
            mine = torch.arange(len(images), device=images.device) + offset  # this rank's pairs among all
            negative_text = sample_hard_negatives(similarity(images, all_texts), mine)  # per image
            negative_image = sample_hard_negatives(similarity(texts, all_images), mine)  # per text
        everyone, _ = gather_inputs(batch)
        joint = pair(everyone, torch.cat([mine, negative_text, mine]),
                     everyone, torch.cat([mine, mine, negative_image]))
        logits = model.itm_logits(model(joint))
        n = len(mine)
        labels = torch.cat([torch.ones(n), torch.zeros(2 * n)]).long().to(logits.device)
        local = torch.arange(n, device=logits.device)
        loss = weighted_mean(ce(logits, labels), torch.cat([local, local, local]), batch.sample_weights)
        return ObjectiveResult(loss, {"accuracy": accuracy(logits, labels)})
