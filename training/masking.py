"""Masking as pure functions over numpy arrays and a seeded ``numpy.random.Generator``.

Every function takes the generator it draws from, so a collator seeded by (seed, step) masks the same
positions on every run and after a resume. Positions are token indices into one sample's ids
(``[CLS] ... [SEP]``); specials are never selected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from schemas.batch import IGNORE_INDEX


def apply_80_10_10(ids: np.ndarray, selected: np.ndarray, rng: np.random.Generator, mask_id: int,
                   vocab_size: int, first_regular: int = 999) -> tuple[np.ndarray, np.ndarray]:
    """BERT's corruption of the selected positions (UNITER §3.2, UNIMO §2.3): 80% ``[MASK]``, 10% a random
    token, 10% unchanged. Returns ``(inputs, labels)``; labels are the original ids at selected positions and
    ``IGNORE_INDEX`` elsewhere. Random tokens come from ``[first_regular, vocab_size)`` (BERT's vocab keeps
    specials and ``[unused*]`` below 999)."""
    ids = np.asarray(ids, dtype=np.int64)
    selected = np.asarray(selected, dtype=bool)
    labels = np.where(selected, ids, IGNORE_INDEX)
    inputs = ids.copy()
    draw = rng.random(ids.shape)
    to_mask = selected & (draw < 0.8)
    to_random = selected & (draw >= 0.8) & (draw < 0.9)
    inputs[to_mask] = mask_id
    inputs[to_random] = rng.integers(first_regular, vocab_size, size=int(to_random.sum()))
    return inputs, labels


def token_selection(candidates: np.ndarray, rng: np.random.Generator, prob: float = 0.15) -> np.ndarray:
    """Each candidate position selected with probability ``prob`` (at least one when any is a candidate,
    so that every masked sample has a target)."""
    candidates = np.asarray(candidates, dtype=bool)
    selected = candidates & (rng.random(candidates.shape) < prob)
    if candidates.any() and not selected.any():
        selected[rng.choice(np.flatnonzero(candidates))] = True
    return selected


def _budget(n: int, rate: float) -> int:
    return max(1, int(round(rate * n))) if n else 0


def span_selection(candidates: np.ndarray, rng: np.random.Generator, budget: float = 0.15, p: float = 0.2,
                   max_span: int = 10) -> np.ndarray:
    """UNIMO §2.3 (after SpanBERT): spans with length ~ Geo(p) (clipped to ``max_span``) at uniform
    starts, sampled until ``budget`` of the candidate tokens are selected. Spans stay inside the
    candidates (a span stops at a special token)."""
    candidates = np.asarray(candidates, dtype=bool)
    positions = np.flatnonzero(candidates)
    selected = np.zeros_like(candidates)
    target = _budget(len(positions), budget)
    attempts = 0
    while selected.sum() < target and attempts < 100 * max(target, 1):
        attempts += 1
        length = min(int(rng.geometric(p)), max_span)
        start = int(rng.choice(positions))
        stop = start
        while stop < len(candidates) and stop - start < length and candidates[stop]:
            stop += 1
        selected[start:stop] = True
    return selected


def phrase_selection(candidates: np.ndarray, spans: Sequence[tuple[int, int]], rng: np.random.Generator,
                     budget: float = 0.15) -> np.ndarray:
    """UNIMO §2.3 whole-phrase masking: stored noun phrases (token ranges), in random order, masked whole
    until ``budget`` of the candidates are selected; when the phrases run out first, single tokens top the
    selection up to the budget, so the masking rate does not depend on how many phrases a text has."""
    candidates = np.asarray(candidates, dtype=bool)
    selected = np.zeros_like(candidates)
    target = _budget(int(candidates.sum()), budget)
    for index in rng.permutation(len(spans)):
        if selected.sum() >= target:
            break
        start, stop = spans[index]
        selected[start:stop] = candidates[start:stop]
    rest = np.flatnonzero(candidates & ~selected)
    missing = target - int(selected.sum())
    if missing > 0 and len(rest):
        selected[rng.choice(rest, size=min(missing, len(rest)), replace=False)] = True
    return selected


def seq2seq_fragments(n: int, rng: np.random.Generator, budget: float = 0.25, low: int = 4,
                      high: int = 32) -> list[tuple[int, int]]:
    """UNIMO §2.3 Seq2Seq: fragments ``[start, stop)`` of content positions ``1 .. n-2`` (inside
    ``[CLS] ... [SEP]``), lengths ~ U(low, high), sampled until ``budget`` of the content is spent. A
    fragment is cut to the budget left, so the target is exactly ``ceil(budget * content)`` tokens (short
    captions get one short fragment); fragments never overlap; returned sorted."""
    content = n - 2
    if content < 2:
        return []
    target = min(content - 1, math.ceil(budget * content))
    taken = np.zeros(n, dtype=bool)
    taken[0] = taken[n - 1] = True
    fragments: list[tuple[int, int]] = []
    spent = 0
    while spent < target:
        length = min(int(rng.integers(low, high + 1)), target - spent)
        before = np.concatenate([[0], np.cumsum(taken)])
        starts = np.flatnonzero(before[length:n] == before[:n - length])  # windows with nothing taken
        if not len(starts):
            length = 1
            starts = np.flatnonzero(~taken)
        start = int(rng.choice(starts))
        taken[start:start + length] = True
        fragments.append((start, start + length))
        spent += length
    return sorted(fragments)


def box_iou(boxes: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``[R, 4]`` boxes ``[x1, y1, x2, y2]``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y1 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x2 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y2 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def region_selection(boxes: np.ndarray, rng: np.random.Generator, prob: float = 0.15,
                     anchor_iou: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Regions to zero (UNITER §3.2: 15%; UNIMO §2.3: anchors at ``prob``, plus every region whose IoU with
    an anchor exceeds ``anchor_iou``, so a masked object cannot be read off its overlapping neighbours).
    Returns ``(masked, anchors)`` boolean ``[R]``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    anchors = token_selection(np.ones(len(boxes), dtype=bool), rng, prob)
    if not anchors.any():
        return anchors, anchors
    masked = anchors | (box_iou(boxes)[anchors] > anchor_iou).any(axis=0)
    return masked, anchors


def linked_selection(scores: Sequence[float], rng: np.random.Generator, rate: float = 0.15) -> np.ndarray:
    """mu-VLA §3.3.2: among linked items (phrase-region links), mask ``max(1, round(rate * links))`` of them,
    drawn without replacement with probability proportional to the link's similarity score. Returns
    the chosen link indices."""
    scores = np.clip(np.asarray(scores, dtype=np.float64), 0.0, None)
    if not len(scores):
        return np.zeros(0, dtype=np.int64)
    count = min(len(scores), _budget(len(scores), rate))
    weights = scores if scores.sum() > 0 else np.ones_like(scores)
    return np.sort(rng.choice(len(scores), size=count, replace=False, p=weights / weights.sum()))


def itm_pairing(images: Sequence[str], texts: Sequence[str], rng: np.random.Generator,
                negative_prob: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ITM negatives by swapping within the batch (UNITER §3.2): each sample is negative with probability
    ``negative_prob``; a negative takes either another sample's image or another sample's text (50/50),
    from a partner whose image (or text) differs, so a swap never recreates a true pair. Returns
    ``(image_from, text_from, labels)``: indices into the batch and 1 = matched, 0 = swapped. A sample
    without any valid partner stays positive."""
    n = len(images)
    image_from = np.arange(n)
    text_from = np.arange(n)
    labels = np.ones(n, dtype=np.int64)
    for i in range(n):
        if rng.random() >= negative_prob:
            continue
        swap_image = rng.random() < 0.5
        own = images if swap_image else texts
        partners = [j for j in range(n) if own[j] != own[i]]
        if not partners:
            continue
        j = int(rng.choice(partners))
        if swap_image:
            image_from[i] = j
        else:
            text_from[i] = j
        labels[i] = 0
    return image_from, text_from, labels


IMAGE_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)  # CLIP's, as VLMo uses
IMAGE_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def resize_rgb(image, size: int = 224) -> np.ndarray:
    """A PIL image as ``uint8 [size, size, 3]`` RGB (UNIMO-2 / VLMo: 224 px; bicubic resize)."""
    from PIL import Image

    return np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.uint8)


def normalise(rgb: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]`` as ``float32 [3, H, W]`` normalised by the CLIP mean and std."""
    return ((rgb.astype(np.float32) / 255.0 - IMAGE_MEAN) / IMAGE_STD).transpose(2, 0, 1).copy()


def image_pixels(image, size: int = 224) -> np.ndarray:
    """A PIL image as normalised ``float32 [3, size, size]``."""
    return normalise(resize_rgb(image, size))


def patchify(pixels: np.ndarray, patch: int = 16) -> np.ndarray:
    """``[3, H, W]`` pixels as ``[(H/p) * (W/p), 3 * p * p]`` patches, row-major (ViT's order)."""
    channels, height, width = pixels.shape
    if height % patch or width % patch:
        raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {patch}")
    grid = pixels.reshape(channels, height // patch, patch, width // patch, patch)
    return grid.transpose(1, 3, 0, 2, 4).reshape((height // patch) * (width // patch), channels * patch * patch)
