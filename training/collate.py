"""Decoding packed samples and collating them into a ``Batch`` for one batch kind.

``decode_sample`` turns a raw WebDataset sample (member bytes) into a ``Sample`` (json, WordPiece ids,
regions, ``.npy`` members) or raises ``BadSample`` with a reason the loader counts. ``collate`` builds
exactly the inputs and targets the kind's objectives need (``schemas/batch.py``), drawing every random
choice from the generator it is given (seeded by the loader from ``(seed, step, rank)``):

- ``mlm``: 15% with 80/10/10 (UNITER §3.2) over tokens, UNIMO spans (Geo(0.2)) or whole phrases;
  with region objectives in the same kind, conditional masking: each sample masks one modality only
  (UNITER §3.2);
- ``seq2seq``: UNIMO §2.3 fragments moved behind the source as ``[CLS] fragment [SEP]`` blocks, with
  the generated tokens as targets (at their own positions) and a source-bidirectional / target-causal
  attention pattern;
- ``mrfr`` / ``mrc`` / ``mrc_kl``: regions zeroed at 15% plus their > 0.3-IoU neighbours (UNIMO §2.3),
  with feature and class-distribution targets;
- ``p_mrtc``: mu-VLA §3.3.2 on ``weak_pairs``: linked phrases or linked regions (one modality per
  sample) masked with probability proportional to the link score; a masked region's target is its
  phrase's sub-word ids;
- ``itm``: half the pairs swap their image or text with another sample of the batch (UNITER §3.2);
- ``cmcl``: positives (back-translations, related texts, related images) and negatives (rewrites) as
  sub-batches with the index of their anchor (UNIMO §2.1, App. A).

The unified format (UNIMO App. A): every batch has both streams; a missing one is all-False in its mask
(one padded position, so shapes never have a zero dimension).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from schemas import packed
from schemas.batch import IGNORE_INDEX, Batch
from schemas.regions import locations
from training import masking
from training.tokenizer import Encoded, Special, encode, encode_many, encode_plain, phrase_token_spans, special_ids

if TYPE_CHECKING:
    from training.data import BatchKind, DataConfig

IMAGE_MEMBERS = ("jpg", "jpeg", "png")
REGION_OBJECTIVES = ("mrfr", "mrc", "mrc_kl")


class BadSample(ValueError):
    """A packed sample that cannot be trained on; ``reason`` is a short stable word for the stats."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class Sample:
    """One decoded sample: what collation needs, nothing decoded that it does not."""

    key: str
    task: str
    meta: dict
    ids: list[int] | None = None                       # [CLS] ... [SEP]
    phrase_spans: list[tuple[int, int]] = field(default_factory=list)  # token ranges of stored phrases
    offsets: list[tuple[int, int]] = field(default_factory=list)
    image: bytes | None = None                         # encoded image
    rgb: np.ndarray | None = None                      # [S, S, 3] uint8, resized (patch models only)
    boxes: np.ndarray | None = None                    # [R, 4] normalised, at most max_regions
    loc: np.ndarray | None = None                      # [R, 7 | 5] location encoding (data.location)
    feats: np.ndarray | None = None                    # [R, D] float16
    probs: np.ndarray | None = None                    # [R, C] float16
    positives: list[Sample] = field(default_factory=list)  # CMCL
    negatives: list[Sample] = field(default_factory=list)


_NPY_HEADER = re.compile(rb"\{'descr': '([<>|=][a-z]\d+)', 'fortran_order': (True|False), 'shape': \(([\d, ]*)\), \}")


def read_npy(data: bytes) -> np.ndarray:
    """An ``.npy`` member as a read-only array. The header ``np.save`` writes is parsed with a regex
    (``np.load`` runs ``ast.literal_eval`` on it: about 0.5 ms, more than the read, docs/BENCHMARKS.md);
    anything else goes to ``np.load`` without pickles."""
    if data[:6] == b"\x93NUMPY" and data[6] == 1:
        size = int.from_bytes(data[8:10], "little")
        match = _NPY_HEADER.fullmatch(data[10:10 + size].rstrip())
        if match:
            descr, fortran, dims = match.groups()
            shape = tuple(int(d) for d in dims.split(b",") if d.strip())
            dtype = np.dtype(descr.decode())
            count = int(np.prod(shape)) if shape else 1
            if len(data) < 10 + size + count * dtype.itemsize:
                raise ValueError(f"truncated .npy: {len(data)} bytes for shape {shape} of {dtype}")
            array = np.frombuffer(data, dtype=dtype, count=count, offset=10 + size)
            return array.reshape(shape, order="F" if fortran == b"True" else "C")
    return np.load(io.BytesIO(data), allow_pickle=False)


def _npy(raw: dict, member: str, key: str) -> np.ndarray:
    try:
        return read_npy(raw[member])
    except Exception as exc:  # noqa: BLE001 - any unreadable array is one reason
        raise BadSample("bad_npy", f"{key}.{member}: {exc}") from None


def _visual(raw: dict, prefix: str, regions: dict, cfg: DataConfig, key: str) -> dict[str, Any]:
    """The image bytes and regions stored under ``prefix`` (``""`` or ``related_<i>.``)."""
    image = next((raw[f"{prefix}{ext}"] for ext in IMAGE_MEMBERS if f"{prefix}{ext}" in raw), None)
    if image is None:
        raise BadSample("no_image", f"{key} has no {prefix}jpg/png member")
    try:
        boxes = np.asarray(regions.get("boxes") or [], dtype=np.float32).reshape(-1, 4)[:cfg.max_regions]
        loc = locations(boxes, cfg.location)
    except ValueError as exc:
        raise BadSample("bad_boxes", f"{key} {prefix}regions.boxes: {exc}") from None
    out: dict[str, Any] = {"image": image, "boxes": boxes, "loc": loc}
    if cfg.visual == "patches":
        out["rgb"] = _rgb(image, cfg.image_size, key)
    if cfg.visual == "regions":
        present = {"feats": bool(regions.get("has_features")),
                   "probs": bool(regions.get("has_probs", regions.get("has_features")))}
        for name, member, width in (("feats", packed.REGION_FEATS, cfg.region_dim),
                                    ("probs", packed.REGION_PROBS, cfg.region_classes)):
            if not present[name]:
                continue
            if f"{prefix}{member}" not in raw:
                raise BadSample("no_region_arrays", f"{key}: its regions say the {prefix}{member} member is there")
            array = _npy(raw, f"{prefix}{member}", key)
            if array.ndim != 2 or array.shape[1] != width or array.shape[0] < len(boxes):
                raise BadSample("region_shape", f"{key}.{prefix}{member} has shape {array.shape}, expected "
                                f"[>= {len(boxes)}, {width}] (data.region_dim / data.region_classes)")
            out[name] = array[:len(boxes)]
    return out


def _text_sample(key: str, task: str, text: str, cfg: DataConfig, tokenizer: Any) -> Sample:
    enc = encode(tokenizer, text, cfg.max_text_len)
    return Sample(key=key, task=task, meta={"modality": "text"}, ids=enc.ids, offsets=enc.offsets)


def decode_chunk(raws: Sequence[dict], task: str, cfg: DataConfig, tokenizer: Any) -> list[Sample | BadSample]:
    """``decode_sample`` for a chunk, its texts tokenized in one call; a bad sample comes back as its error."""
    texts = [raw["txt"].decode("utf-8", errors="replace") for raw in raws if "txt" in raw]
    encoded = iter(encode_many(tokenizer, texts, cfg.max_text_len))
    out: list[Sample | BadSample] = []
    for raw in raws:
        try:
            out.append(decode_sample(raw, task, cfg, tokenizer, next(encoded) if "txt" in raw else None))
        except BadSample as exc:
            out.append(exc)
    return out


def decode_sample(raw: dict, task: str, cfg: DataConfig, tokenizer: Any, encoded: Encoded | None = None) -> Sample:
    """A raw WebDataset sample of ``task`` as a ``Sample``; ``BadSample`` when a member the task needs is
    missing or unreadable (the loader counts it and goes on). ``encoded``: its text, already tokenized."""
    key = str(raw.get("__key__"))
    if "json" not in raw:
        raise BadSample("no_json", f"{key} has no json member")
    try:
        meta = json.loads(raw["json"])
    except ValueError as exc:
        raise BadSample("bad_json", f"{key}.json: {exc}") from None
    missing = packed.missing_fields(task, meta)
    if missing:
        raise BadSample("missing_fields", f"{key} lacks {missing} that task {task!r} needs")
    sample = Sample(key=key, task=task, meta=meta)
    if meta["modality"] in ("pair", "text"):
        if "txt" not in raw:
            raise BadSample("no_txt", f"{key} has no txt member")
        enc = encoded or encode(tokenizer, raw["txt"].decode("utf-8", errors="replace"), cfg.max_text_len)
        sample.ids, sample.offsets = enc.ids, enc.offsets
        sample.phrase_spans = phrase_token_spans(enc.offsets, meta.get("phrases") or [])
    if meta["modality"] in ("pair", "image"):
        visual = _visual(raw, "", meta["regions"], cfg, key)
        sample.image, sample.boxes, sample.loc = visual["image"], visual["boxes"], visual["loc"]
        sample.rgb = visual.get("rgb")
        sample.feats, sample.probs = visual.get("feats"), visual.get("probs")
    if task == packed.CMCL:
        texts = [p["text"] for p in meta["positives"]] + [r["text"] for r in meta["related_texts"]]
        sample.positives = [_text_sample(f"{key}/pos{i}", task, t, cfg, tokenizer) for i, t in enumerate(texts)]
        for i, related in enumerate(meta["related_images"]):
            prefix = f"related_{i}."
            visual = _visual(raw, prefix, related.get("regions") or {}, cfg, key)
            sample.positives.append(Sample(key=f"{key}/img{i}", task=task, meta={"modality": "image"},
                                           image=visual["image"], boxes=visual["boxes"], loc=visual["loc"],
                                           rgb=visual.get("rgb"),
                                           feats=visual.get("feats"), probs=visual.get("probs")))
        sample.positives = sample.positives[:cfg.cmcl_max_positives]
        sample.negatives = [_text_sample(f"{key}/neg{i}", task, n["text"], cfg, tokenizer)
                            for i, n in enumerate(meta["negatives"][:cfg.cmcl_max_negatives])]
    return sample


def sample_units(sample: Sample, cfg: DataConfig) -> tuple[int, int]:
    """``(text units, visual units)``: tokens, and regions or patches (UNITER App. A.2)."""
    text = len(sample.ids) if sample.ids else 0
    if sample.image is None:
        return text, 0
    return text, (cfg.num_patches if cfg.visual == "patches" else len(sample.boxes))


# ---------------------------------------------------------------- per-sample masking

@dataclass
class _Row:
    """One batch row while it is being masked: plain arrays, stacked at the end."""

    ids: np.ndarray | None
    sample: Sample                      # where the visual stream comes from
    mlm_labels: np.ndarray | None = None
    lm_labels: np.ndarray | None = None
    fragments: list[tuple[int, int]] = field(default_factory=list)
    source_len: int = 0
    region_masked: np.ndarray | None = None
    token_targets: dict[int, list[int]] = field(default_factory=dict)


def _text_candidates(ids: np.ndarray) -> np.ndarray:
    candidates = np.ones(len(ids), dtype=bool)
    candidates[0] = candidates[-1] = False  # [CLS] and [SEP]
    return candidates


def mask_text(ids: Sequence[int], spans: Sequence[tuple[int, int]], mode: str, cfg: DataConfig,
              special: Special, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """MLM on one text: select by ``mode`` (token | span | phrase), then 80/10/10."""
    ids = np.asarray(ids, dtype=np.int64)
    candidates = _text_candidates(ids)
    m = cfg.masking
    if mode == "span":
        selected = masking.span_selection(candidates, rng, m.mask_prob, m.span_p, m.span_max)
    elif mode == "phrase":
        selected = masking.phrase_selection(candidates, spans, rng, m.mask_prob)
    else:
        selected = masking.token_selection(candidates, rng, m.mask_prob)
    return masking.apply_80_10_10(ids, selected, rng, special.mask, special.vocab_size)


def seq2seq_text(ids: Sequence[int], fragments: Sequence[tuple[int, int]],
                 special: Special) -> tuple[np.ndarray, np.ndarray, int]:
    """UNIMO §2.3: the source (fragments removed) followed by each fragment as ``[CLS] w_i .. w_j [SEP]``.
    Returns ``(ids, lm_labels, source_len)``. ``lm_labels[t]`` is the token AT ``t`` for every token a
    block generates (``w_i .. w_j [SEP]``; the block's ``[CLS]`` only starts it), -100 elsewhere: the
    objective shifts, so the output at ``t - 1`` predicts it (``schemas/batch.py``)."""
    ids = list(ids)
    taken = np.zeros(len(ids), dtype=bool)
    for start, stop in fragments:
        taken[start:stop] = True
    source = [t for t, gone in zip(ids, taken, strict=True) if not gone]
    out, labels = list(source), [IGNORE_INDEX] * len(source)
    for start, stop in fragments:
        block = [special.cls, *ids[start:stop], special.sep]
        out.extend(block)
        labels.extend([IGNORE_INDEX] + block[1:])
    return np.asarray(out, dtype=np.int64), np.asarray(labels, dtype=np.int64), len(source)


def seq2seq_attention(rows: Sequence[tuple[int, list[tuple[int, int]], int]], text_len: int,
                      visual_len: int) -> np.ndarray:
    """``[B, L, L]`` (L = text_len + visual_len, text first): source tokens and the visual stream see
    each other both ways; a target token sees the source, the visual stream and the target tokens up to
    itself (UNIMO §2.3). ``rows`` are ``(source_len, fragments, text length)`` per sample."""
    size = text_len + visual_len
    pattern = np.zeros((len(rows), size, size), dtype=bool)
    for b, (source_len, _, length) in enumerate(rows):
        context = np.zeros(size, dtype=bool)
        context[:source_len] = True
        context[text_len:] = True
        pattern[b][:, context] = True
        for q in range(source_len, length):
            pattern[b, q, source_len:q + 1] = True
        pattern[b, source_len:length][:, :source_len] = True
    return pattern


# ---------------------------------------------------------------- stacking

def _pad(rows: Sequence[np.ndarray | None], fill: int, length: int | None = None) -> np.ndarray:
    length = max([length or 1] + [len(r) for r in rows if r is not None])
    out = np.full((len(rows), length), fill, dtype=np.int64)
    for i, row in enumerate(rows):
        if row is not None:
            out[i, :len(row)] = row
    return out


def _batch(task: str, rows: Sequence[_Row], cfg: DataConfig, objectives: frozenset[str] = frozenset()) -> Batch:
    """Stack rows into a ``Batch``: text stream, regions or pixels, and the targets the rows carry;
    region feature targets only for ``mrfr``, class distributions only for ``mrc`` / ``mrc_kl``."""
    want_targets = bool(objectives)
    import torch

    t = torch.from_numpy
    ids = _pad([r.ids for r in rows], 0)
    batch = Batch(task=task, keys=[r.sample.key for r in rows],
                  input_ids=t(ids), text_mask=t(_pad([None if r.ids is None else np.ones(len(r.ids)) for r in rows],
                                                     0, ids.shape[1]).astype(bool)))
    if want_targets and any(r.mlm_labels is not None for r in rows):
        batch.mlm_labels = t(_pad([r.mlm_labels for r in rows], IGNORE_INDEX, ids.shape[1]))
    if want_targets and any(r.lm_labels is not None for r in rows):
        batch.lm_labels = t(_pad([r.lm_labels for r in rows], IGNORE_INDEX, ids.shape[1]))
    samples = [r.sample for r in rows]
    if cfg.visual == "patches":
        pixels = np.zeros((len(rows), 3, cfg.image_size, cfg.image_size), dtype=np.float32)
        for i, s in enumerate(samples):
            if s.rgb is not None:
                pixels[i] = masking.normalise(s.rgb)
        batch.pixels = t(pixels)
        batch.image_mask = t(np.array([s.rgb is not None for s in samples]))
        return batch
    regions = max([1] + [len(s.boxes) for s in samples if s.image is not None])
    loc_dim = 7 if cfg.location == "uniter" else 5
    feats = np.zeros((len(rows), regions, cfg.region_dim), dtype=np.float32)
    loc = np.zeros((len(rows), regions, loc_dim), dtype=np.float32)
    mask = np.zeros((len(rows), regions), dtype=bool)
    need_probs = bool(objectives & {"mrc", "mrc_kl"})
    probs = np.zeros((len(rows), regions, cfg.region_classes if need_probs else 0), dtype=np.float32)
    for i, s in enumerate(samples):
        if s.image is None:
            continue
        n = len(s.boxes)
        mask[i, :n] = True
        loc[i, :n] = s.loc if s.loc is not None else locations(s.boxes, cfg.location)
        if s.feats is not None:
            feats[i, :n] = s.feats
        if need_probs and s.probs is not None:
            probs[i, :n] = s.probs
    masked = np.zeros((len(rows), regions), dtype=bool)
    for i, r in enumerate(rows):
        if r.region_masked is not None:
            masked[i, :len(r.region_masked)] = r.region_masked
    batch.region_loc, batch.region_mask = t(loc), t(mask)
    if want_targets and any(r.region_masked is not None for r in rows):
        batch.region_masked = t(masked)
        if "mrfr" in objectives:
            batch.region_feat_targets = t(feats.copy())
        if objectives & {"mrc", "mrc_kl"}:
            batch.region_class_targets = t(probs)
        feats[masked] = 0.0  # UNITER §3.2: masked regions are zeroed
    batch.region_feats = t(feats)
    if want_targets and any(r.token_targets for r in rows):
        targets = np.full((len(rows), regions, cfg.masking.max_phrase_tokens), IGNORE_INDEX, dtype=np.int64)
        for i, r in enumerate(rows):
            for region, tokens in r.token_targets.items():
                targets[i, region, :len(tokens)] = tokens
        batch.region_token_targets = t(targets)
    return batch


def _rgb(data: bytes, size: int, key: str) -> np.ndarray:
    """The image resized for a patch model, decoded here so that a broken image is a bad sample, not a
    crash in the collator."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            return masking.resize_rgb(image, size)
    except Exception as exc:  # noqa: BLE001 - a broken image is one reason
        raise BadSample("bad_image", f"{key}: {exc}") from None


# ---------------------------------------------------------------- the collator

def collate(samples: Sequence[Sample], kind: BatchKind, cfg: DataConfig, tokenizer: Any,
            rng: np.random.Generator) -> Batch:
    """A ``Batch`` of ``samples`` for ``kind``: the inputs and targets its objectives need, nothing more."""
    special = special_ids(tokenizer)
    objectives = set(kind.objectives)
    m = cfg.masking
    samples = list(samples)
    text_from = image_from = np.arange(len(samples))
    itm_labels = None
    if "itm" in objectives and len(samples) > 1:
        image_from, text_from, itm_labels = masking.itm_pairing(
            [s.meta.get("sample_key", s.key) for s in samples], [tuple(s.ids or ()) for s in samples], rng,
            m.itm_negative_prob)
    rows = [_Row(ids=None if samples[text_from[i]].ids is None else np.asarray(samples[text_from[i]].ids),
                 sample=samples[image_from[i]]) for i in range(len(samples))]
    text_masking = "mlm" in objectives
    region_masking = bool(objectives & set(REGION_OBJECTIVES))
    for row, own in zip(rows, samples, strict=True):
        has_text, has_regions = row.ids is not None, row.sample.image is not None and len(row.sample.boxes) > 0
        if "p_mrtc" in objectives:
            _link_mask(row, own, text_masking, cfg, special, tokenizer, rng)
            continue
        if "seq2seq" in objectives and has_text:
            row.fragments = masking.seq2seq_fragments(len(row.ids), rng, m.seq2seq_budget, m.fragment_min,
                                                      m.fragment_max)
            row.ids, row.lm_labels, row.source_len = seq2seq_text(row.ids, row.fragments, special)
            continue
        mask_text_here = text_masking and has_text
        mask_regions_here = region_masking and has_regions
        if mask_text_here and mask_regions_here:  # conditional masking: one modality at a time
            if rng.random() < 0.5:
                mask_regions_here = False
            else:
                mask_text_here = False
        if mask_text_here:
            row.ids, row.mlm_labels = mask_text(row.ids, own.phrase_spans, kind.mlm_mode, cfg, special, rng)
        if mask_regions_here:
            row.region_masked, _ = masking.region_selection(row.sample.boxes, rng, m.region_prob, m.anchor_iou)
    batch = _batch(kind.task, rows, cfg, frozenset(objectives))
    batch.keys = [s.key for s in samples]
    # the raw sample of each row's image: captions of one image share it (zero-shot retrieval counts it once)
    batch.image_keys = [str(samples[j].meta.get("sample_key", samples[j].key)) for j in image_from]
    if "seq2seq" in objectives:
        visual = cfg.num_patches if cfg.visual == "patches" else batch.region_mask.shape[1]
        import torch

        batch.attention_pattern = torch.from_numpy(seq2seq_attention(
            [(r.source_len if r.lm_labels is not None else (len(r.ids) if r.ids is not None else 0), r.fragments,
              len(r.ids) if r.ids is not None else 0) for r in rows], batch.input_ids.shape[1], visual))
    import torch

    if "itm" in objectives:
        labels = itm_labels if itm_labels is not None else np.ones(len(samples), dtype=np.int64)
        batch.itm_labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        batch.extra["itm_image_from"] = torch.from_numpy(np.asarray(image_from))
        batch.extra["itm_text_from"] = torch.from_numpy(np.asarray(text_from))
    batch.sample_weights = torch.ones(len(samples), dtype=torch.float32)
    if kind.task == packed.WEAK_PAIRS:
        batch.extra["retrieval_scores"] = torch.tensor([float(s.meta["score"]) for s in samples])
    if "cmcl" in objectives:
        batch.positives, owner_pos = _sub_batch(kind.task, samples, "positives", cfg)
        batch.negatives, owner_neg = _sub_batch(kind.task, samples, "negatives", cfg)
        batch.positives.owner, batch.negatives.owner = owner_pos, owner_neg
        batch.owner = None
    return batch


def _sub_batch(task: str, samples: Sequence[Sample], which: str, cfg: DataConfig) -> tuple[Batch, Any]:
    """CMCL positives or negatives of every anchor, encoded on their own, with their anchor's index."""
    import torch

    rows, owner = [], []
    for i, sample in enumerate(samples):
        for child in getattr(sample, which):
            rows.append(_Row(ids=None if child.ids is None else np.asarray(child.ids), sample=child))
            owner.append(i)
    batch = _batch(task, rows, cfg)
    return batch, torch.tensor(owner, dtype=torch.long)


def _link_mask(row: _Row, own: Sample, text_masking: bool, cfg: DataConfig, special: Special, tokenizer: Any,
               rng: np.random.Generator) -> None:
    """mu-VLA §3.3.2 on one weak pair: mask linked phrases or linked regions (one modality), chosen with
    probability proportional to the link score; regions get their phrase's sub-word ids as targets."""
    from training.tokenizer import char_span_to_tokens

    n_regions = len(row.sample.boxes) if row.sample.boxes is not None else 0
    links = []
    for link in own.meta["phrase_regions"]:
        span = char_span_to_tokens(own.offsets, int(link["start"]), int(link["end"]))
        if span is not None and 0 <= int(link["region"]) < n_regions:
            links.append((span, int(link["region"]), link["phrase"], float(link["score"])))
    if not links:
        return
    chosen = masking.linked_selection([score for *_, score in links], rng, cfg.masking.link_rate)
    if text_masking and rng.random() < 0.5:
        selected = np.zeros(len(row.ids), dtype=bool)
        for index in chosen:
            start, stop = links[index][0]
            selected[start:stop] = True
        row.ids, row.mlm_labels = masking.apply_80_10_10(row.ids, selected, rng, special.mask, special.vocab_size)
        return
    row.region_masked = np.zeros(n_regions, dtype=bool)
    for index in chosen:
        _, region, phrase, _ = links[index]
        row.region_masked[region] = True
        row.token_targets[region] = encode_plain(tokenizer, phrase, cfg.masking.max_phrase_tokens)
