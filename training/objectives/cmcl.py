"""CMCL: cross-modal contrastive learning (UNIMO §2.1, App. A eq. 6-7).

For an anchor pair (V, W): ``-log (pos_P + pos_I + pos_T) / (pos_P + pos_I + pos_T + neg_P + neg_I + neg_T)``
with ``exp(d(., .) / tau)`` terms. Every item is encoded on its own (dual-encoder view) and ``d`` is the
cosine of the projected ``[IMG]`` and ``[CLS]`` vectors; ``tau`` is the model's learned ITC temperature.

- ``pos_P``: the anchor pair itself and the positive pairs of ``batch.positives`` (back-translations, with the
  anchor's image); ``pos_I``: related images of ``batch.positives`` scored with the anchor's text; ``pos_T``:
  related texts scored with the anchor's image.
- ``neg_P`` / ``neg_I`` / ``neg_T``: the same for ``batch.negatives`` (scene-graph and TF-IDF rewrites), plus the
  in-batch negatives: every other anchor's image with this text and every other anchor's text with this image
  (the anchors of every rank under torch.distributed).

An item of a sub-batch is a pair, an image or a text by which of its streams are present; ``owner`` names
its anchor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from schemas.batch import Batch
from training.model.inputs import has_image, has_text, select
from training.objectives.base import (
    Objective,
    ObjectiveResult,
    gather_across_ranks,
    register,
    similarity,
    weighted_mean,
)
from training.objectives.itc import paired


def _embed(model, batch: Batch, present: Tensor | None, embed) -> Tensor | None:
    """Embeddings of the samples with the stream (rows of the others stay zero and are never used)."""
    if present is None or not present.any():
        return None
    index = present.nonzero().squeeze(1)
    vectors = embed(batch if bool(present.all()) else select(batch, index))
    out = vectors.new_zeros(len(batch), vectors.shape[1])
    out[index] = vectors
    return out


def item_scores(model, items: Batch, images: Tensor, texts: Tensor) -> Tensor:
    """``[M]`` cosine of each item with its counterpart: its own text and image when it is a pair, the
    owner's text for an image, the owner's image for a text."""
    if items.owner is None:
        raise ValueError(f"a CMCL sub-batch of task {items.task!r} has no owner (index of each item's anchor)")
    own_text = has_text(items)
    own_image = has_image(items)
    m = len(items)
    own_text = own_text if own_text is not None else torch.zeros(m, dtype=torch.bool, device=items.owner.device)
    own_image = own_image if own_image is not None else torch.zeros(m, dtype=torch.bool, device=items.owner.device)
    if not bool((own_text | own_image).all()):
        raise ValueError(f"a CMCL item of task {items.task!r} has neither text nor image")
    text_vec = _embed(model, items, own_text, model.embed_text)
    image_vec = _embed(model, items, own_image, model.embed_image)
    image_side, text_side = images[items.owner], texts[items.owner]
    if image_vec is not None:
        image_side = torch.where(own_image[:, None], image_vec, image_side)
    if text_vec is not None:
        text_side = torch.where(own_text[:, None], text_vec, text_side)
    return (image_side.float() * text_side.float()).sum(-1)


def cmcl_loss(images: Tensor, texts: Tensor, scale: Tensor, pos_scores: Tensor, pos_owner: Tensor,
              neg_scores: Tensor, neg_owner: Tensor, all_images: Tensor | None = None,
              all_texts: Tensor | None = None, offset: int = 0) -> Tensor:
    """``[B]`` eq. 6 per anchor from normalised anchor vectors and the extra items' cosines and owners.

    ``all_images`` / ``all_texts`` (every rank's anchors, this rank's from ``offset``) widen the in-batch
    negatives; by default they are this rank's."""
    b = len(images)
    all_images = images if all_images is None else all_images
    all_texts = texts if all_texts is None else all_texts
    i2t = similarity(images, all_texts)  # [B, N]: d(V_i, W_j), float32 under AMP
    t2i = similarity(texts, all_images)  # [B, N]: d(V_j, W_i)
    own = torch.zeros_like(i2t, dtype=torch.bool)
    own[torch.arange(b), torch.arange(b) + offset] = True
    logits = [i2t, t2i, _rows(pos_scores, b), _rows(neg_scores, b)]
    member = [torch.ones_like(own), ~own, _owned(pos_owner, b), _owned(neg_owner, b)]
    positive = [own, torch.zeros_like(own), _owned(pos_owner, b), torch.zeros_like(_owned(neg_owner, b))]
    logits = torch.cat([x.float() for x in logits], dim=1) * scale.float()
    member, positive = torch.cat(member, dim=1), torch.cat(positive, dim=1)
    minus_inf = torch.finfo(logits.dtype).min
    top = logits.masked_fill(~positive, minus_inf).logsumexp(1)
    everything = logits.masked_fill(~member, minus_inf).logsumexp(1)
    return everything - top


def _rows(scores: Tensor, b: int) -> Tensor:
    """``[B, M]``: item m's score in every row; ``_owned`` keeps it to its owner's row."""
    return scores[None, :].expand(b, -1)


def _owned(owner: Tensor, b: int) -> Tensor:
    return owner[None, :] == torch.arange(b, device=owner.device)[:, None]


@register
class CMCL(Objective):
    name = "cmcl"
    needs_joint = False

    def forward(self, model, batch, outputs):
        anchors = paired(batch, self.name)
        if anchors is not batch:
            raise ValueError(f"objective 'cmcl' needs every anchor of task {batch.task!r} to be an image-text pair")
        images, texts = model.embed_image(batch), model.embed_text(batch)
        empty = images.new_zeros(0)
        none = torch.zeros(0, dtype=torch.long, device=images.device)
        pos, neg = ((item_scores(model, items, images, texts), items.owner) if items else (empty, none)
                    for items in (batch.positives, batch.negatives))
        all_images, offset = gather_across_ranks(images)
        all_texts, _ = gather_across_ranks(texts)
        per_anchor = cmcl_loss(images, texts, model.temperature_scale(), *pos, *neg, all_images, all_texts, offset)
        index = torch.arange(len(per_anchor), device=per_anchor.device)
        return ObjectiveResult(weighted_mean(per_anchor, index, batch.sample_weights),
                               {"positives": float(pos[0].numel()), "negatives": float(neg[0].numel())})
