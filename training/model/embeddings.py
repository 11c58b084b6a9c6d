"""Input embedders: BERT text embeddings, detector regions (UNITER §3.1), ViT patches (VLMo §3.1).

Each visual embedder returns ``[B, 1 + V, H]``: a learned ``[IMG]`` token (UNIMO App. A; VLMo's
``[I_CLS]``) followed by the V regions or patches, every position carrying the image type embedding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.model.config import ModelConfig


class TextEmbedder(nn.Module):
    """BERT embeddings (word + position + token type, layer norm); names match Hugging Face's ``embeddings.*``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(cfg.max_text_len, cfg.hidden)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden)
        self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: Tensor) -> Tensor:
        length = input_ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(f"text of {length} tokens exceeds model.max_text_len "
                             f"{self.position_embeddings.num_embeddings}")
        positions = torch.arange(length, device=input_ids.device)
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
             + self.token_type_embeddings.weight[0])
        return self.dropout(self.LayerNorm(x))


class RegionEmbedder(nn.Module):
    """UNITER §3.1 / mu-VLA §3.1: LN(W_f feature) + LN(W_l location) + image type, then a layer norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        v = cfg.visual
        self.feat_proj = nn.Linear(v.region_feat_dim, cfg.hidden)
        self.feat_norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.loc_proj = nn.Linear(v.region_loc_dim, cfg.hidden)
        self.loc_norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.img_token = nn.Parameter(torch.zeros(cfg.hidden))
        self.type_embedding = nn.Parameter(torch.zeros(cfg.hidden))
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.loc_dim = v.region_loc_dim
        nn.init.normal_(self.img_token, std=0.02)
        nn.init.normal_(self.type_embedding, std=0.02)

    def forward(self, feats: Tensor, loc: Tensor) -> Tensor:
        if loc.shape[-1] != self.loc_dim:
            raise ValueError(f"region_loc has {loc.shape[-1]} values per region; model.visual.region_loc_dim "
                             f"is {self.loc_dim}")
        regions = self.feat_norm(self.feat_proj(feats)) + self.loc_norm(self.loc_proj(loc.to(feats.dtype)))
        img = self.img_token.expand(feats.shape[0], 1, -1).to(regions.dtype)
        return self.dropout(self.norm(torch.cat([img, regions], dim=1) + self.type_embedding))


class PatchEmbedder(nn.Module):
    """VLMo §3.1 (ViT): 16 x 16 patches linearly projected, [I_CLS] prepended, 1-D positions + image type."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        v = cfg.visual
        self.proj = nn.Conv2d(v.channels, cfg.hidden, kernel_size=v.patch_size, stride=v.patch_size)
        self.img_token = nn.Parameter(torch.zeros(cfg.hidden))
        self.positions = nn.Parameter(torch.zeros(v.num_patches + 1, cfg.hidden))
        self.type_embedding = nn.Parameter(torch.zeros(cfg.hidden))
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.image_size = v.image_size
        for p in (self.img_token, self.positions, self.type_embedding):
            nn.init.normal_(p, std=0.02)

    def forward(self, pixels: Tensor) -> Tensor:
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"pixels are {tuple(pixels.shape[-2:])}; model.visual.image_size is {self.image_size}")
        patches = self.proj(pixels).flatten(2).transpose(1, 2)
        img = self.img_token.expand(pixels.shape[0], 1, -1).to(patches.dtype)
        x = torch.cat([img, patches], dim=1) + self.positions + self.type_embedding
        return self.dropout(self.norm(x))
