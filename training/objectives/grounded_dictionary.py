"""The grounding loss of UNIMO-2's grounded dictionary (§3.1, eq. 3): a revised VQ-VAE loss.

For the top-K entries ``g_j`` of a sample, with ``x_ij = sigma(eta v_i.g_j)`` over its real positions ``i``:
``|| sum_i x_ij sg(v_i) / s_j - g_j ||^2`` moves an entry to the mean of the tokens mapped to it, and the
commitment ``beta || sum_j x_ij sg(g_j) / sum_j x_ij - v_i ||^2`` keeps the encoder near its entries. Means
over entries and positions replace the paper's sums so the scale does not grow with sequence length.
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.objectives.base import Objective, ObjectiveResult, register, weighted_mean


def grounding_loss(features: Tensor, mask: Tensor, scores: Tensor, indices: Tensor, dictionary: Tensor,
                   beta: float) -> Tensor:
    """``[B]`` eq. 3 per sample: features ``[B, L, H]``, mask ``[B, L]``, scores ``[B, L, C]``, indices ``[B, K]``."""
    features, dictionary = features.float(), dictionary.float()
    x = scores.float().gather(2, indices[:, None, :].expand(-1, scores.shape[1], -1)) * mask[..., None]  # [B, L, K]
    entries = dictionary[indices]  # [B, K, H]
    s = x.sum(1).clamp_min(1e-12)  # [B, K]
    centres = torch.einsum("blk,blh->bkh", x, features.detach()) / s[..., None]
    dictionary_term = (centres - entries).pow(2).sum(-1).mean(1)
    quantised = torch.einsum("blk,bkh->blh", x, entries.detach()) / x.sum(2, keepdim=True).clamp_min(1e-12)
    commitment = ((quantised - features).pow(2).sum(-1) * mask).sum(1) / mask.sum(1).clamp_min(1)
    return dictionary_term + beta * commitment


@register
class GroundedDictionary(Objective):
    name = "grounded_dictionary"

    def __init__(self, beta: float | None = None):
        super().__init__()
        self.beta = beta

    def forward(self, model, batch, outputs):
        if outputs.grounding is None:
            raise ValueError("objective 'grounded_dictionary' needs model.dictionary.enabled: true")
        beta = model.cfg.dictionary.beta if self.beta is None else self.beta
        g = outputs.grounding
        per_sample = grounding_loss(g["features"], g["mask"], g["scores"], g["indices"], g["dictionary"], beta)
        index = torch.arange(len(per_sample), device=per_sample.device)
        used = float(g["indices"].unique().numel())
        return ObjectiveResult(weighted_mean(per_sample, index, batch.sample_weights), {"entries_used": used})
