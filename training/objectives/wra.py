"""WRA: word-region alignment by optimal transport, approximated with IPOT (UNITER §3.2, App. A.6).

The cost is the cosine distance between contextual word and region (or patch) vectors; the marginals are
uniform over the real tokens and regions. The plan ``T`` is found without gradients (UNITER's code detaches
it); the distance ``<T, C>`` carries the gradient into the encoder. The loss lowers the distance of matched
pairs and raises it for ITM's swapped ones (``itm_labels``; all pairs count as matched without them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from training.objectives.base import Objective, ObjectiveResult, register


def ipot(cost: Tensor, row_mask: Tensor, col_mask: Tensor, beta: float = 0.5, iterations: int = 50,
         inner: int = 1) -> Tensor:
    """UNITER App. A.6 Algorithm 1, batched: the transport plan ``[B, n, m]`` for ``cost`` ``[B, n, m]`` between
    uniform marginals over the True entries of ``row_mask`` ``[B, n]`` and ``col_mask`` ``[B, m]``."""
    cost = cost.float()
    valid = row_mask[:, :, None] & col_mask[:, None, :]
    n = row_mask.sum(1, keepdim=True).clamp_min(1).float()
    m = col_mask.sum(1, keepdim=True).clamp_min(1).float()
    a = torch.exp(-cost / beta) * valid
    plan = valid.float()
    sigma = col_mask.float() / m
    delta = row_mask.float() / n
    for _ in range(iterations):
        q = a * plan
        for _ in range(inner):
            delta = row_mask / (n * torch.bmm(q, sigma[:, :, None]).squeeze(2)).clamp_min(1e-30)
            sigma = col_mask / (m * torch.bmm(q.transpose(1, 2), delta[:, :, None]).squeeze(2)).clamp_min(1e-30)
        plan = delta[:, :, None] * q * sigma[:, None, :]
    return plan


def cosine_cost(words: Tensor, regions: Tensor) -> Tensor:
    """``1 - cos(w_i, v_j)``: ``[B, n, m]``."""
    return 1 - torch.bmm(F.normalize(words.float(), dim=-1), F.normalize(regions.float(), dim=-1).transpose(1, 2))


def ot_distance(words: Tensor, regions: Tensor, word_mask: Tensor, region_mask: Tensor, beta: float = 0.5,
                iterations: int = 50) -> Tensor:
    """``[B]`` the IPOT approximation of the OT distance (gradient through the cost only)."""
    cost = cosine_cost(words, regions)
    with torch.no_grad():
        plan = ipot(cost, word_mask, region_mask, beta, iterations)
    return (plan * cost).sum((1, 2))


@register
class WRA(Objective):
    name = "wra"

    def __init__(self, beta: float = 0.5, iterations: int = 50):
        super().__init__()
        self.beta, self.iterations = beta, iterations

    def forward(self, model, batch, outputs):
        word_mask = batch.text_mask.bool()
        region_mask = outputs.mask[:, outputs.text_len + 1:outputs.text_len + outputs.visual_len]
        both = word_mask.any(1) & region_mask.any(1)
        distance = ot_distance(outputs.text, outputs.visual, word_mask, region_mask, self.beta, self.iterations)
        matched = batch.itm_labels.bool() if batch.itm_labels is not None else torch.ones_like(both)
        sign = torch.where(matched, 1.0, -1.0).to(distance.device)
        count = both.sum().clamp_min(1)
        loss = (sign * distance * both).sum() / count
        pos = (distance * (both & matched)).sum() / (both & matched).sum().clamp_min(1)
        return ObjectiveResult(loss, {"ot_matched": float(pos.detach())})
