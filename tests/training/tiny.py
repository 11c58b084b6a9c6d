"""Tiny configs and hand-built batches for the model and objective tests (no data pipeline)."""

from __future__ import annotations

import torch

from schemas.batch import IGNORE_INDEX, Batch
from training.model import ModelConfig, build_model
from training.model.config import DictionaryConfig, HeadsConfig, MoMEConfig, VisualConfig

VOCAB, FEAT, CLASSES = 60, 12, 7

# Tiny tensors: one intra-op thread is 10-20x faster than two on a shared, oversubscribed CPU (measured).
torch.set_num_threads(1)


def tiny_config(kind: str = "regions", loc: int = 7, mome: bool = False, dictionary: bool = False) -> ModelConfig:
    return ModelConfig(vocab_size=VOCAB, hidden=32, layers=3, heads=4, intermediate=64, dropout=0.0,
                       attention_dropout=0.0, max_text_len=24,
                       visual=VisualConfig(kind=kind, region_feat_dim=FEAT, region_loc_dim=loc, image_size=32),
                       mome=MoMEConfig(enabled=mome, vl_layers=1),
                       dictionary=DictionaryConfig(enabled=dictionary, size=16, top_k=4, layer=1),
                       output_heads=HeadsConfig(region_classes=CLASSES, projection_dim=16))


def tiny_model(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return build_model(tiny_config(**kwargs))


def pairs_batch(b: int = 4, t: int = 8, r: int = 5, seed: int = 0, loc: int = 7, pixels: bool = False) -> Batch:
    """``b`` image-text pairs with ragged text and region lengths (at least 3 tokens, 2 regions each)."""
    g = torch.Generator().manual_seed(seed)
    text_len = (t - torch.arange(b) % 3).clamp_min(3)  # ragged, the first sample full length
    region_len = (r - torch.arange(b) % 3).clamp_min(2)
    text_mask = torch.arange(t)[None] < text_len[:, None]
    region_mask = torch.arange(r)[None] < region_len[:, None]
    ids = torch.randint(3, VOCAB, (b, t), generator=g)
    ids[:, 0] = 1  # [CLS]
    ids = ids.masked_fill(~text_mask, 0)
    boxes = torch.rand(b, r, 4, generator=g).sort(-1).values
    x1, y1, x2, y2 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    w, h = x2 - x1, y2 - y1
    location = torch.stack([x1, y1, x2, y2, w, h, w * h], -1) if loc == 7 else torch.stack([x1, y1, x2, y2, w * h], -1)
    batch = Batch(task="pairs", keys=[f"k{i}" for i in range(b)], input_ids=ids, text_mask=text_mask,
                  region_feats=torch.randn(b, r, FEAT, generator=g) * region_mask[..., None],
                  region_loc=location * region_mask[..., None], region_mask=region_mask)
    if pixels:
        batch.region_feats = batch.region_loc = batch.region_mask = None
        batch.pixels = torch.randn(b, 3, 32, 32, generator=g)
        batch.image_mask = torch.ones(b, dtype=torch.bool)
    return batch


def with_targets(batch: Batch, seed: int = 0) -> Batch:
    """Targets of every region/text objective on ``batch`` (in place): MLM, seq2seq, MRFR/MRC/p-MRTC, ITM."""
    g = torch.Generator().manual_seed(seed + 1)
    b, t = batch.input_ids.shape
    r = batch.region_feats.shape[1]
    pick = (torch.rand(b, t, generator=g) < 0.4) & batch.text_mask
    pick[:, 1] = True
    batch.mlm_labels = torch.where(pick, batch.input_ids, IGNORE_INDEX)
    batch.region_masked = (torch.rand(b, r, generator=g) < 0.5) & batch.region_mask
    batch.region_masked[:, 0] = True
    batch.region_feat_targets = batch.region_feats.clone()
    batch.region_feats = batch.region_feats.masked_fill(batch.region_masked[..., None], 0.0)
    batch.region_class_targets = torch.rand(b, r, CLASSES, generator=g).softmax(-1)
    tokens = torch.randint(3, VOCAB, (b, r, 3), generator=g)
    tokens[..., 2] = IGNORE_INDEX
    tokens[1, 0] = IGNORE_INDEX  # a masked region without a linked phrase
    batch.region_token_targets = tokens
    batch.itm_labels = torch.tensor([1, 0] * (b // 2) + [1] * (b % 2))
    return batch


def seq2seq_targets(batch: Batch, source: int = 3) -> Batch:
    """Text positions >= ``source`` are the target fragment: causal among themselves, see source and image."""
    b, t = batch.input_ids.shape
    r = batch.region_feats.shape[1]
    length = t + r
    pattern = torch.ones(b, length, length, dtype=torch.bool)
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    pattern[:, :t, :t] = causal
    pattern[:, :t, :source] = True
    pattern[:, :source, source:t] = False
    pattern[:, t:, source:t] = False  # the image does not see the target
    batch.attention_pattern = pattern
    target = (torch.arange(t)[None] >= source) & batch.text_mask
    batch.lm_labels = torch.where(target, batch.input_ids, IGNORE_INDEX)
    return batch
