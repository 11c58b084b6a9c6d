"""The transformer layer: BERT post-LN self-attention, feed-forward experts (VLMo §3.2 MoME when enabled).

One layer serves every family: without MoME it has one feed-forward block (``shared``); with MoME it has
``l``, ``v`` and ``vl`` experts that share the attention. Which expert sees which positions is decided by
the model per layer and passed as ``routes`` (contiguous slices, since text and visual positions are).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.model.config import ModelConfig

Route = tuple[str, slice]


class FeedForward(nn.Module):
    """BERT intermediate + output + residual layer norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.intermediate = nn.Linear(cfg.hidden, cfg.intermediate)
        self.output = nn.Linear(cfg.intermediate, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.dropout(self.output(F.gelu(self.intermediate(x)))))


class Layer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.heads
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.attn_out = nn.Linear(cfg.hidden, cfg.hidden)
        self.attn_norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.attention_dropout = cfg.attention_dropout
        experts = ("l", "v", "vl") if cfg.mome.enabled else ("shared",)
        self.ffn = nn.ModuleDict({name: FeedForward(cfg) for name in experts})

    def forward(self, x: Tensor, mask: Tensor | None, routes: list[Route]) -> Tensor:
        """``mask``: bool, True = may attend, broadcastable to ``[B, heads, L, L]``; None = everything."""
        b, length, hidden = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attention_dropout if self.training else 0.0)
        x = self.attn_norm(x + self.dropout(self.attn_out(attended.transpose(1, 2).reshape(b, length, hidden))))
        if len(routes) == 1 and routes[0][1] == slice(None):
            return self.ffn[routes[0][0]](x)
        return torch.cat([self.ffn[name](x[:, where]) for name, where in routes], dim=1)
