"""Packed shards written exactly per ``schemas/packed.py`` with ``webdataset.TarWriter``, for the loader tests.

A stand-in for ``unicorpus pack`` output (swap it for real pack output once that stage lands): every
task's members and json fields, deterministic from a seed, small enough for a test.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass

import numpy as np

from schemas import packed

WORDS = ("a man dog cat rides red blue small bike horse street field ball plays runs near the on with "
         "tree house car bus child woman green big old water boat sky cloud beach snow").split()
REGION_DIM = 8
REGION_CLASSES = 5


def _image(rng: np.random.Generator, fmt: str = "JPEG") -> bytes:
    from PIL import Image

    pixels = rng.integers(0, 255, size=(24, 32, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def _text(rng: np.random.Generator, low: int = 3, high: int = 30) -> tuple[str, list[dict]]:
    words = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(low, high + 1)))]
    text = " ".join(words)
    phrases, position = [], 0
    for i, word in enumerate(words):
        if i % 4 == 1 and i + 1 < len(words):
            end = position + len(word) + 1 + len(words[i + 1])
            phrases.append({"text": text[position:end], "start": position, "end": end})
        position += len(word) + 1
    return text, phrases


def _regions(rng: np.random.Generator, shape: Shape) -> tuple[dict, np.ndarray, np.ndarray]:
    count = int(rng.integers(shape.regions[0], shape.regions[1] + 1))
    x1, y1 = rng.uniform(0, 0.6, count), rng.uniform(0, 0.6, count)
    boxes = np.stack([x1, y1, x1 + rng.uniform(0.05, 0.4, count), y1 + rng.uniform(0.05, 0.4, count)], 1)
    scores = np.sort(rng.uniform(0.2, 1.0, count))[::-1]
    regions = {"width": 32, "height": 24, "boxes": np.round(boxes, 4).tolist(),
               "labels": [str(w) for w in rng.choice(WORDS, count)], "scores": scores.round(4).tolist(),
               "has_features": True}
    feats = rng.standard_normal((count, shape.region_dim)).astype(np.float16)
    probs = rng.dirichlet(np.ones(REGION_CLASSES), count).astype(np.float16)
    return regions, feats, probs


@dataclass(frozen=True)
class Shape:
    """Sizes of generated samples: tests keep them tiny; the loader benchmark uses caption-like ones."""

    region_dim: int = REGION_DIM
    regions: tuple[int, int] = (2, 11)   # regions per image, inclusive
    words: tuple[int, int] = (3, 30)     # words per text, inclusive


def make_sample(task: str, key: str, rng: np.random.Generator, shape: Shape = Shape()) -> dict:
    """One packed sample of ``task`` as WebDataset members."""
    modality = {packed.IMAGES: "image", packed.TEXTS: "text"}.get(task, "pair")
    meta = {"key": key, "sample_key": f"raw-{key}", "source": "fixture", "task": task, "modality": modality,
            "text_index": None if modality == "image" else 0}
    sample: dict = {"__key__": key}
    if modality != "text":
        regions, feats, probs = _regions(rng, shape)
        meta["regions"] = regions
        sample["jpg"] = _image(rng)
        sample[packed.REGION_FEATS] = _npy(feats)
        sample[packed.REGION_PROBS] = _npy(probs)
    if modality != "image":
        text, phrases = _text(rng, *shape.words)
        meta["phrases"] = phrases
        sample["txt"] = text.encode()
    if task == packed.WEAK_PAIRS:
        meta.update(score=float(rng.uniform(0.3, 0.9)), rank=0, text_key=f"sent-{key}",
                    phrase_regions=[{"start": p["start"], "end": p["end"], "phrase": p["text"],
                                     "region": int(rng.integers(len(meta["regions"]["boxes"]))),
                                     "score": float(rng.uniform(0.1, 1.0))} for p in meta["phrases"]])
    if task == packed.CMCL:
        meta["positives"] = [{"text": _text(rng)[0], "method": "back_translation"}]
        meta["negatives"] = [{"text": _text(rng)[0], "method": m, "score": 0.5} for m in ("scene_graph", "tfidf")]
        meta["related_texts"] = [{"key": f"rt-{key}", "text": _text(rng)[0], "score": 0.7}]
        related_regions, feats, probs = _regions(rng, shape)
        meta["related_images"] = [{"key": f"ri-{key}", "score": 0.6, "member": "related_0.jpg",
                                   "regions": related_regions}]
        sample["related_0.jpg"] = _image(rng)
        sample[f"related_0.{packed.REGION_FEATS}"] = _npy(feats)
        sample[f"related_0.{packed.REGION_PROBS}"] = _npy(probs)
    if task.startswith(packed.ALIGNED_PREFIX):
        meta.update(aligned=True, text_from=meta["sample_key"])
    sample["json"] = json.dumps(meta).encode()
    return sample


def write_task(root: str, task: str, shards: int, per_shard: int, seed: int = 0, shape: Shape = Shape()) -> list[str]:
    """``root/task/NNNNN.tar`` + ``sizes.json``; returns the keys written, in order."""
    import webdataset as wds

    folder = os.path.join(root, task)
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng([seed, len(task), shards, per_shard] + [ord(c) for c in task])
    keys, sizes = [], {}
    for shard in range(shards):
        name = f"{shard:05d}.tar"
        with wds.TarWriter(os.path.join(folder, name), mtime=0) as sink:
            for i in range(per_shard):
                key = f"{task}-{shard:05d}-{i:04d}"
                sink.write(make_sample(task, key, rng, shape))
                keys.append(key)
        sizes[name] = per_shard
    with open(os.path.join(folder, packed.SIZES_FILE), "w") as f:
        json.dump(sizes, f, indent=1, sort_keys=True)
    return keys


def truncate(path: str, keep: float = 0.5) -> None:
    """Cut a shard mid-way (an interrupted copy)."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


def garble(path: str) -> None:
    """Overwrite a shard with bytes that are no tar at all."""
    with open(path, "wb") as f:
        f.write(b"\x00not a tar\xff" * 100)
