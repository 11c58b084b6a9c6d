"""Zero-shot image-text retrieval on held-out pairs: recall@1/5/10 both ways, with the ITC or the ITM head.

Each sample of the batches is one held-out (image, text) pair. Images are identified by
``batch.image_keys`` when the collator sets it (COCO: five captions share an image) and by the
sample key otherwise; an image counts once, and any of its texts is a hit (the usual Karpathy protocol).
ITC ranks by the dual-encoder cosine (VLMo §3.3); ITM by the matched probability of the joint encoding
(UNITER §3.2), either over every pair or, with ``itm_candidates``, over ITC's top candidates (ALBEF's rerank).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor

from schemas.batch import Batch
from training.model.inputs import pair


def recall_at_k(scores: Tensor, text_image: Tensor, ks: Iterable[int] = (1, 5, 10)) -> dict[str, float]:
    """``scores`` ``[I, T]`` (image i, text t); ``text_image[t]`` = the image of text t."""
    images, texts = scores.shape
    metrics = {}
    t2i_rank = scores.t().argsort(dim=1, descending=True)  # [T, I]
    i2t_rank = scores.argsort(dim=1, descending=True)  # [I, T]
    truth = text_image[None, :] == torch.arange(images, device=scores.device)[:, None]  # [I, T]
    for k in ks:
        metrics[f"i2t_r{k}"] = float(truth.gather(1, i2t_rank[:, :k]).any(1).float().mean())
        metrics[f"t2i_r{k}"] = float((t2i_rank[:, :k] == text_image[:, None]).any(1).float().mean())
    return metrics


@torch.no_grad()
def zero_shot_retrieval(model, batches: Iterable[Batch], head: Literal["itc", "itm"] = "itc",
                        ks: Iterable[int] = (1, 5, 10), itm_candidates: int | None = None,
                        chunk: int = 256) -> dict[str, float]:
    """Recall@k of image->text and text->image over all the pairs in ``batches`` (model in eval mode)."""
    if head not in ("itc", "itm"):
        raise ValueError(f"head: expected 'itc' or 'itm', got {head!r}")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        kept: list[Batch] = []
        text_rows: list[tuple[int, int]] = []  # (batch, row) of every text
        image_rows: list[tuple[int, int]] = []  # (batch, row) of every distinct image
        image_of: dict[str, int] = {}
        text_image: list[int] = []
        text_vecs, image_vecs = [], []
        for b, batch in enumerate(batches):
            batch = batch.to(device)
            kept.append(batch)
            image_keys = batch.image_keys or batch.keys
            new_rows = []
            for row, key in enumerate(image_keys):
                if key not in image_of:
                    image_of[key] = len(image_rows)
                    image_rows.append((b, row))
                    new_rows.append(row)
                text_rows.append((b, row))
                text_image.append(image_of[key])
            if head == "itc" or itm_candidates:
                text_vecs.append(model.embed_text(batch))
                image_vecs.append(model.embed_image(batch)[new_rows])
        if not text_rows:
            raise ValueError("zero_shot_retrieval got no pairs")
        truth = torch.tensor(text_image, device=device)
        if head == "itc" or itm_candidates:
            itc = torch.cat(image_vecs) @ torch.cat(text_vecs).t()
        if head == "itc":
            return recall_at_k(itc, truth, ks)
        if itm_candidates:
            k_t = min(itm_candidates, itc.shape[1])
            k_i = min(itm_candidates, itc.shape[0])
            wanted = torch.zeros_like(itc, dtype=torch.bool)
            wanted.scatter_(1, itc.topk(k_t, dim=1).indices, True)
            wanted.scatter_(0, itc.topk(k_i, dim=0).indices, True)
        else:
            wanted = torch.ones(len(image_rows), len(text_rows), dtype=torch.bool, device=device)
        scores = torch.full(wanted.shape, float("-inf"), device=device)
        _score_itm(model, kept, image_rows, text_rows, wanted, scores, chunk)
        return recall_at_k(scores, truth, ks)
    finally:
        model.train(was_training)


def _score_itm(model, batches: list[Batch], image_rows, text_rows, wanted: Tensor, scores: Tensor, chunk: int) -> None:
    """Fill ``scores[i, t]`` with the ITM matched probability for every wanted pair, grouped by source batches."""
    groups: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for i, t in wanted.nonzero().tolist():
        groups[(text_rows[t][0], image_rows[i][0])].append((i, t))
    for (bt, bi), pairs in groups.items():
        for start in range(0, len(pairs), chunk):
            part = torch.tensor(pairs[start:start + chunk])
            rows_t = torch.tensor([text_rows[t][1] for t in part[:, 1].tolist()])
            rows_i = torch.tensor([image_rows[i][1] for i in part[:, 0].tolist()])
            joint = pair(batches[bt], rows_t.to(scores.device), batches[bi], rows_i.to(scores.device))
            probs = model.itm_logits(model(joint)).float().softmax(-1)[:, 1]
            scores[part[:, 0], part[:, 1]] = probs
