"""What the mini corpus plants for ``clean`` and for URL downloads, with the expected outcome.

- Duplicates across sources: byte-identical and re-encoded copies of Conceptual Captions images in the
  COCO unlabeled folder (the earlier source in the config keeps its copy).
- Evaluation splits in their public formats (Karpathy COCO and Flickr30k, VQA v2 questions, RefCOCO
  refs pickle, a plain id/URL list) naming some images that ingest keeps, matched by COCO id, Flickr id
  or URL (UNITER §3.3), and some that must not match (train splits, ids not in the corpus).
- With a ``url_base``: a Conceptual Captions TSV whose URLs a static HTTP server answers, including a
  404, an HTML page and a truncated JPEG.

Which records ingest keeps is read back from the generated raw files with the readers' rules
(docs/SOURCES.md), so that only samples that exist are planted as matches.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
from typing import Any

from PIL import Image

from pipelines.minicorpus import scenes
from pipelines.minicorpus.common import Tally, write_bytes, write_json, write_lines, write_text
from schemas.keys import make_key
from schemas.records import Modality, Reason

EVAL = "eval"
WEB = "web"
CC_URLS = "cc_urls"
_FLICKR_ID = re.compile(r"/(\d+)_[0-9a-f]+\.jpg$")


def plant_duplicates(data_dir: str, expected: dict[str, Any]) -> list[dict[str, str]]:
    """Two exact and one near copy of CC images as COCO unlabeled files (kept: the COCO unlabeled one)."""
    cc_rows = _good_cc_rows(data_dir)
    planted = []
    for n, (row, path) in enumerate(cc_rows[:3], start=1):
        with open(path, "rb") as f:
            data = f.read()
        if n == 3:  # the same picture, 85 % the size, another JPEG quality
            image = Image.open(io.BytesIO(data))
            image = image.resize((image.width * 85 // 100, image.height * 85 // 100), Image.Resampling.LANCZOS)
            data = scenes.encode(image, "JPEG", quality=70)
        name = f"9000000000{n:02d}"
        write_bytes(os.path.join(data_dir, "coco", "unlabeled2017", f"{name}.jpg"), data)
        expected["coco_unlabeled"]["samples"] += 1
        expected["coco_unlabeled"]["records"] += 1
        planted.append({"key": make_key("cc", row), "duplicate_of": make_key("coco_unlabeled", name),
                        "kind": "near_image" if n == 3 else "exact_image"})
    return planted


def plant_eval_sets(data_dir: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Evaluation files under ``datasets/eval``; returns (eval_sets config entries, expected matches)."""
    coco_ids = _good_coco_ids(data_dir)
    vg = _good_vg_images(data_dir)
    vg_flickr = [image for image in vg if image["flickr_id"]]
    vg_coco = [image for image in vg if image["coco_id"]]
    sbu_rows = _good_sbu_rows(data_dir)
    cc_rows = _good_cc_rows(data_dir)
    folder = os.path.join(data_dir, EVAL)
    expected = []

    def hit(key: str, eval_set: str, by: str) -> None:
        expected.append({"key": key, "eval_set": eval_set, "matched_by": by})

    karpathy = [_karpathy_coco(coco_ids[0], "test"), _karpathy_coco(coco_ids[1], "val"),
                _karpathy_coco(coco_ids[2], "train"), _karpathy_coco(coco_ids[3], "restval"),
                _karpathy_coco(999_999_001, "test")]  # not in the corpus
    write_json(os.path.join(folder, "dataset_coco.json"), {"images": karpathy, "dataset": "coco"})
    hit(make_key("coco", coco_ids[0]), "coco_karpathy", "coco_id")
    hit(make_key("coco", coco_ids[1]), "coco_karpathy", "coco_id")

    sbu_row, sbu_url = sbu_rows[0]
    flickr = [_karpathy_flickr(vg_flickr[0]["flickr_id"], "test"),
              _karpathy_flickr(int(_FLICKR_ID.search(sbu_url).group(1)), "val"),
              _karpathy_flickr(4_000_000_001, "test")]
    write_json(os.path.join(folder, "dataset_flickr30k.json"), {"images": flickr, "dataset": "flickr30k"})
    hit(make_key("vg", vg_flickr[0]["image_id"]), "flickr30k_karpathy", "flickr_id")
    hit(make_key("sbu", sbu_row), "flickr30k_karpathy", "flickr_id")

    questions = [{"image_id": image_id, "question": "What color is the ball?", "question_id": image_id * 10 + i}
                 for i, image_id in enumerate((coco_ids[4], vg_coco[0]["coco_id"]))]
    write_json(os.path.join(folder, "v2_OpenEnded_mscoco_val2014_questions.json"),
               {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014",
                "questions": questions, "license": {}})
    hit(make_key("coco", coco_ids[4]), "vqa_v2_val", "coco_id")
    hit(make_key("vg", vg_coco[0]["image_id"]), "vqa_v2_val", "coco_id")

    refs = [{"ref_id": i, "image_id": image_id, "split": split, "ann_id": 100 + i, "category_id": 37,
             "sent_ids": [i], "sentences": [{"raw": "the red ball", "sent": "the red ball", "sent_id": i,
                                              "tokens": ["the", "red", "ball"]}]}
            for i, (image_id, split) in enumerate(((coco_ids[5], "testA"), (coco_ids[6], "train")))]
    write_bytes(os.path.join(folder, "refs(unc).p"), pickle.dumps(refs, protocol=2))
    hit(make_key("coco", coco_ids[5]), "refcoco_unc", "coco_id")

    cc_row, _ = cc_rows[5]
    write_lines(os.path.join(folder, "eval_urls.txt"),
                ["# extra evaluation images", _cc_url(data_dir, cc_row), "coco:999999002", ""])
    hit(make_key("cc", cc_row), "extra_ids", "url")

    eval_sets = [{"name": name, "path": f"datasets/{EVAL}/{file}"} for name, file in (
        ("coco_karpathy", "dataset_coco.json"), ("flickr30k_karpathy", "dataset_flickr30k.json"),
        ("vqa_v2_val", "v2_OpenEnded_mscoco_val2014_questions.json"), ("refcoco_unc", "refs(unc).p"),
        ("extra_ids", "eval_urls.txt"))]
    return eval_sets, expected


def write_url_source(data_dir: str, url_base: str, rng: random.Random, scale: int) -> dict[str, Any]:
    """``datasets/web/`` (served by a static server at ``url_base``) and a CC TSV of its URLs."""
    rows, tally = [], Tally(CC_URLS, "conceptual_captions", Modality.PAIR)
    status = {"ok": 0, "http_404": 0, "not_an_image": 0, "decode_error": 0}
    for i in range(8 * scale):
        scene = scenes.sample_scene(rng)
        write_bytes(os.path.join(data_dir, WEB, f"{i:05d}.jpg"), scenes.jpeg(scene))
        rows.append((rng.choice(scenes.caption_variants(scene)), f"{i:05d}.jpg"))
        tally.sample()
        status["ok"] += 1
    whole = scenes.jpeg(scenes.sample_scene(rng))
    write_bytes(os.path.join(data_dir, WEB, "broken.jpg"), whole[: len(whole) * 3 // 4])
    write_text(os.path.join(data_dir, WEB, "page.html"), "<html><body>a gallery page</body></html>\n")
    for position, (caption, path, reason, state) in enumerate((
            ("a photo that was taken down", "gone.jpg", Reason.FAILED_DOWNLOAD, "http_404"),
            ("a gallery page", "page.html", Reason.FAILED_DOWNLOAD, "not_an_image"),
            ("a half-uploaded photo", "broken.jpg", Reason.CORRUPT_IMAGE, "decode_error"))):
        rows.insert(2 + 3 * position, (caption, path))
        tally.reject(reason, path, state)
        status[state] += 1
    write_lines(os.path.join(data_dir, CC_URLS, "Train_GCC-training.tsv"),
                [f"{caption}\t{url_base}/{path}" for caption, path in rows])
    return {**tally.as_dict(), "url_status": status}


def _good_cc_rows(data_dir: str) -> list[tuple[int, str]]:
    """(row, image path) of TSV rows that ingest turns into samples."""
    root = os.path.join(data_dir, "conceptual_captions")
    rows = []
    with open(os.path.join(root, "Train_GCC-training.tsv"), "rb") as f:
        for row, raw in enumerate(f):
            path = os.path.join(root, "images", f"{row:08d}.jpg")
            fields = raw.rstrip(b"\n").split(b"\t")
            if len(fields) == 2 and fields[0].strip() and _utf8(raw) and os.path.exists(path):
                rows.append((row, path))
    return rows


def _cc_url(data_dir: str, row: int) -> str:
    with open(os.path.join(data_dir, "conceptual_captions", "Train_GCC-training.tsv"), "rb") as f:
        return f.read().split(b"\n")[row].decode().split("\t")[1].strip()


def _good_sbu_rows(data_dir: str) -> list[tuple[int, str]]:
    root = os.path.join(data_dir, "sbu")
    with open(os.path.join(root, "SBU_captioned_photo_dataset_urls.txt"), "rb") as f:
        urls = f.read().decode().splitlines()
    with open(os.path.join(root, "SBU_captioned_photo_dataset_captions.txt"), "rb") as f:
        captions = f.read().split(b"\n")
    return [(row, urls[row]) for row, caption in enumerate(captions[: len(urls)])
            if caption.strip() and _utf8(caption) and os.path.exists(os.path.join(root, "images", f"{row:08d}.jpg"))]


def _good_coco_ids(data_dir: str) -> list[int]:
    root = os.path.join(data_dir, "coco")
    with open(os.path.join(root, "annotations", "captions_train2017.json"), encoding="utf-8") as f:
        captions = json.load(f)
    ids = [image["id"] for image in captions["images"]]
    captioned = {a["image_id"] for a in captions["annotations"] if a["caption"].strip()}
    return [image["id"] for image in captions["images"]
            if ids.count(image["id"]) == 1 and image["id"] in captioned
            and _decodes(os.path.join(root, "train2017", image["file_name"]))]


def _good_vg_images(data_dir: str) -> list[dict[str, Any]]:
    root = os.path.join(data_dir, "visual_genome")
    with open(os.path.join(root, "image_data.json"), encoding="utf-8") as f:
        images = json.load(f)
    with open(os.path.join(root, "region_descriptions.json"), encoding="utf-8") as f:
        phrased = {entry["id"] for entry in json.load(f) if any(r["phrase"].strip() for r in entry["regions"])}
    return [image for image in images if image["image_id"] in phrased and any(
        os.path.exists(os.path.join(root, folder, f"{image['image_id']}.jpg")) for folder in ("VG_100K", "VG_100K_2"))]


def _karpathy_coco(coco_id: int, split: str) -> dict[str, Any]:
    name = f"COCO_val2014_{coco_id:012d}.jpg"
    return {"filepath": "val2014", "filename": name, "imgid": coco_id % 1000, "split": split, "cocoid": coco_id,
            "sentences": [{"tokens": ["a", "ball"], "raw": "A ball.", "imgid": 0, "sentid": 0}], "sentids": [0]}


def _karpathy_flickr(flickr_id: int, split: str) -> dict[str, Any]:
    return {"filename": f"{flickr_id}.jpg", "imgid": flickr_id % 1000, "split": split,
            "sentences": [{"tokens": ["a", "dog"], "raw": "A dog.", "imgid": 0, "sentid": 0}], "sentids": [0]}


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _decodes(path: str) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except (OSError, SyntaxError):
        return False
