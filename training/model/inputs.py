"""Batch surgery the objectives and the evaluation share: which streams a batch has, sub-batches, pairings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from schemas.batch import Batch

if TYPE_CHECKING:
    from torch import Tensor

TEXT_FIELDS = ("input_ids", "text_mask", "mlm_labels", "lm_labels")
VISUAL_FIELDS = ("region_feats", "region_loc", "region_mask", "pixels", "image_mask", "region_masked",
                 "region_feat_targets", "region_class_targets", "region_token_targets")
SAMPLE_FIELDS = ("itm_labels", "sample_weights", "attention_pattern")


def has_text(batch: Batch) -> Tensor | None:
    """``[B]`` bool: the sample has a real text stream (None when the batch has no text at all)."""
    if batch.input_ids is None:
        return None
    if batch.text_mask is None:
        raise ValueError("batch.input_ids is set but batch.text_mask is not")
    return batch.text_mask.any(dim=1)


def has_image(batch: Batch) -> Tensor | None:
    """``[B]`` bool: the sample has a real visual stream (regions or pixels), None when the batch has none."""
    if batch.region_feats is not None:
        if batch.region_mask is None or batch.region_loc is None:
            raise ValueError("batch.region_feats is set but batch.region_mask or batch.region_loc is not")
        return batch.region_mask.any(dim=1)
    if batch.pixels is not None:
        if batch.image_mask is None:
            import torch
            return torch.ones(batch.pixels.shape[0], dtype=torch.bool, device=batch.pixels.device)
        return batch.image_mask
    return None


def select(batch: Batch, index: Tensor) -> Batch:
    """The samples ``index`` of ``batch`` (CMCL and ITM sub-batches); sub-batches and ``owner`` are dropped."""
    values = {}
    for name in TEXT_FIELDS + VISUAL_FIELDS + SAMPLE_FIELDS:
        value = getattr(batch, name)
        values[name] = None if value is None else value[index]
    keys = [batch.keys[i] for i in index.tolist()]
    return Batch(task=batch.task, keys=keys, **values)


def pair(text_batch: Batch, text_index: Tensor, image_batch: Batch, image_index: Tensor) -> Batch:
    """Sample ``n`` = the text ``text_index[n]`` of ``text_batch`` with the image ``image_index[n]`` of
    ``image_batch`` (ITM hard negatives, VLMo §3.3; ITM scoring in retrieval). No targets are carried."""
    values = {}
    for name in TEXT_FIELDS[:2]:
        value = getattr(text_batch, name)
        values[name] = None if value is None else value[text_index]
    for name in VISUAL_FIELDS[:5]:
        value = getattr(image_batch, name)
        values[name] = None if value is None else value[image_index]
    keys = [
        f"{text_batch.keys[t]}|{image_batch.keys[i]}"
        for t, i in zip(text_index.tolist(), image_index.tolist(), strict=True)
    ]
    return Batch(task=text_batch.task, keys=keys, **values)
