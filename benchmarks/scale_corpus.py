"""The synthetic corpus of the scale benchmark: ``samples`` ingested samples in three raw formats.

Shaped like the papers' corpus, not like the mini corpus (which plants bad records and every format):
half Conceptual Captions (headerless ``caption<TAB>url`` TSV, one tiny JPEG per row), a tenth COCO
(captions and instances JSON, five captions per image, ground-truth boxes as tags) and the rest a
BookCorpus ``books_large_p*.txt`` file of one sentence per line (BookWiki style). Captions average about 11 words
(CC3M's about 10), book sentences about 12 (BookCorpus' about 13); ``corpus_stats`` measures them.
Pictures are the mini corpus' scenes (``pipelines/minicorpus/scenes.py``) at 48-96 px, blended with a
random low-frequency pattern so that their perceptual hashes differ as real photos' do (plain scenes that
small collide and clean would drop them as near duplicates). Shards grow with the size
(``SAMPLES_PER_SHARD``), so a shard holds the same work at every size, as at scale.
"""

from __future__ import annotations

import json
import math
import os
import random

from pipelines.minicorpus import prose, scenes
from pipelines.minicorpus.common import write_bytes, write_json, write_text

SHARES = {"cc": 0.5, "coco": 0.1, "books": 0.4}  # of the samples; the rest of a rounding goes to books
SAMPLES_PER_SHARD = 1000
SIZES = ((64, 48), (48, 64), (96, 72), (72, 96), (80, 60), (64, 64))
COCO_CAPTIONS = 5  # per image, as in COCO
CONTEXTS = ("", "", " near {place}", " in {town}", " on a {weather} day")
COCO_ANNOTATIONS = "annotations/captions_train2017.json"
COCO_INSTANCES = "annotations/instances_train2017.json"


def source_counts(samples: int) -> dict[str, int]:
    """Samples per source for a corpus of ``samples`` (each source at least one)."""
    if samples < len(SHARES):
        raise ValueError(f"samples: expected at least {len(SHARES)} (one per source), got {samples}")
    counts = {name: max(1, int(samples * share)) for name, share in SHARES.items() if name != "books"}
    counts["books"] = samples - sum(counts.values())
    return counts


def picture(rng: random.Random) -> tuple[scenes.Scene, bytes]:
    """A tiny scene (JPEG bytes) with a random low-frequency pattern blended in."""
    from PIL import Image

    scene = scenes.sample_scene(rng, size=rng.choice(SIZES))
    image = scenes.draw(scene)
    pattern = Image.frombytes("RGB", (4, 4), rng.randbytes(48)).resize(image.size, Image.Resampling.BILINEAR)
    return scene, scenes.encode(Image.blend(image, pattern, 0.35))


def caption(rng: random.Random, scene: scenes.Scene) -> str:
    """One true description of the scene with a random place or time (CC-like length and variety)."""
    context = rng.choice(CONTEXTS).format(place=rng.choice(prose.PLACES), town=rng.choice(prose.TOWNS),
                                          weather=rng.choice(prose.WEATHER))
    return scenes.sentence_case(rng.choice(scenes.caption_variants(scene)) + context)


def write_cc(root: str, rng: random.Random, n: int) -> None:
    lines = []
    for row in range(n):
        scene, data = picture(rng)
        write_bytes(os.path.join(root, "images", f"{row:08d}.jpg"), data)
        lines.append(f"{caption(rng, scene)}\thttp://example.invalid/{row}.jpg")
    write_text(os.path.join(root, "Train_GCC-training.tsv"), "\n".join(lines) + "\n")


def write_coco(root: str, rng: random.Random, n: int) -> None:
    from pipelines.minicorpus.coco import CATEGORIES, CATEGORY_ID

    images, captions, boxes = [], [], []
    for image_id in range(1, n + 1):
        scene, data = picture(rng)
        name = f"{image_id:012d}.jpg"
        write_bytes(os.path.join(root, "train2017", name), data)
        images.append({"id": image_id, "file_name": name, "width": scene.width, "height": scene.height})
        for _ in range(COCO_CAPTIONS):
            captions.append({"image_id": image_id, "id": len(captions) + 1, "caption": caption(rng, scene)})
        for obj in scene.objects:
            x, y, w, h = obj.xywh
            boxes.append({"image_id": image_id, "id": len(boxes) + 1, "category_id": CATEGORY_ID[obj.kind],
                          "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h), "iscrowd": 0})
    categories = [{"supercategory": sup, "id": cid, "name": name} for cid, name, sup in CATEGORIES]
    write_json(os.path.join(root, COCO_ANNOTATIONS), {"images": images, "annotations": captions})
    write_json(os.path.join(root, COCO_INSTANCES), {"images": images, "annotations": boxes, "categories": categories})


def write_books(root: str, rng: random.Random, n: int) -> None:
    seen: set[str] = set()  # no sentence twice (text dedup would drop the copies)
    write_text(os.path.join(root, "books_large_p1.txt"),
               "".join(prose.sentence(rng, seen=seen) + "\n" for _ in range(n)))


WRITERS = {"cc": write_cc, "coco": write_coco, "books": write_books}


def sources(counts: dict[str, int]) -> dict[str, dict]:
    """The ``sources:`` section for the written datasets (roots relative to the config's folder)."""
    shards = {name: max(1, math.ceil(n / SAMPLES_PER_SHARD)) for name, n in counts.items()}
    return {
        "cc": {"kind": "conceptual_captions", "root": "datasets/cc", "shards": shards["cc"]},
        "coco": {"kind": "coco", "root": "datasets/coco", "instances": COCO_INSTANCES, "tags": "annotations",
                 "shards": shards["coco"]},
        "books": {"kind": "bookcorpus", "root": "datasets/books", "layout": "lines",
                  "files": "books_large_p*.txt", "shards": shards["books"]},
    }


def weak_pairs() -> list[dict]:
    """mu-VLA's weak pairs: every image's tag query against the captions and against the book sentences."""
    return [{"name": "weak-cc", "images": ["cc", "coco"], "texts": ["cc"]},
            {"name": "weak-books", "images": ["cc", "coco"], "texts": ["books"]}]


def write_corpus(folder: str, samples: int, seed: int, stages: dict | None = None) -> str:
    """Datasets under ``folder/datasets`` and ``folder/corpus.yaml`` (output ``corpus``); ``stages`` are the
    ``annotate:``/``retrieval:`` sections (model paths relative to ``folder``). Returns the config's path."""
    import yaml

    counts = source_counts(samples)
    for name, n in counts.items():
        WRITERS[name](os.path.join(folder, "datasets", name), random.Random(f"scale:{seed}:{name}"), n)
    config = {"output": "corpus", "text": {"pack": "sentence"}, "sources": sources(counts),
              **(stages or {})}
    path = os.path.join(folder, "corpus.yaml")
    write_text(path, f"# scale benchmark corpus: {samples} samples, seed {seed}\n"
               + yaml.safe_dump(config, sort_keys=False, default_flow_style=False))
    return path


def corpus_stats(folder: str) -> dict[str, float]:
    """Mean words of the written captions and book sentences, and mean JPEG bytes (what the docs cite)."""
    with open(os.path.join(folder, "datasets", "cc", "Train_GCC-training.tsv"), encoding="utf-8") as f:
        captions = [line.split("\t", 1)[0] for line in f]
    with open(os.path.join(folder, "datasets", "coco", COCO_ANNOTATIONS), encoding="utf-8") as f:
        captions += [c["caption"] for c in json.load(f)["annotations"]]
    with open(os.path.join(folder, "datasets", "books", "books_large_p1.txt"), encoding="utf-8") as f:
        sentences = f.read().splitlines()
    images = os.path.join(folder, "datasets", "cc", "images")
    sizes = [os.path.getsize(os.path.join(images, name)) for name in os.listdir(images)]
    return {"caption_words": _mean_words(captions), "sentence_words": _mean_words(sentences),
            "jpeg_bytes": round(sum(sizes) / len(sizes), 1)}


def _mean_words(texts: list[str]) -> float:
    return round(sum(len(t.split()) for t in texts) / len(texts), 2)
