"""What the mini corpus plants for ``clean`` and for URL downloads, with the expected outcome.

- Duplicates across sources (``plant_duplicates``), kept copy = smallest (source position, key):
  a CC image byte for byte in COCO unlabeled and in SBU; another CC image in COCO unlabeled; near
  copies (another JPEG quality and/or ~80 % the size) of a CC image and of a COCO image in COCO
  unlabeled and of a Visual Genome image in SBU. Text copies are planted by the text writers
  (text_sources.COPIED, ``Tally.copies``). Ordinary pictures and sentences do not repeat by chance
  (scenes.py backdrops, prose.py draws new sentences), so these are all the duplicates.
- Evaluation splits in their public formats (``plant_eval_sets``: Karpathy COCO and Flickr30k, VQA v2
  questions, RefCOCO refs pickle, a plain id/URL list) naming some images that ingest keeps, matched
  by COCO id, Flickr id or URL (UNITER §3.3), and some that must not match (train splits, ids not in
  the corpus). The copy of a matched image is contaminated too (``inherited``: matched by "duplicate").
- With a ``url_base``: a Conceptual Captions TSV whose URLs a static HTTP server answers, including a
  404, an HTML page and a truncated JPEG (``write_url_source``).

Which records ingest keeps is read back from the generated raw files with the readers' rules
(docs/SOURCES.md, ``read_good``), so that only samples that exist are planted as matches or copied.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
from dataclasses import dataclass
from typing import Any

from PIL import Image

from pipelines.minicorpus import coco, scenes
from pipelines.minicorpus.common import Tally, write_bytes, write_json, write_lines, write_text
from schemas.keys import make_key
from schemas.records import Modality, Reason

EVAL = "eval"
WEB = "web"
CC_URLS = "cc_urls"
ABSENT_COCO_IDS = (999_999_001, 999_999_002)  # above every COCO id: in no source
ABSENT_FLICKR_ID = 12_000_000_001  # above the Flickr ids of SBU URLs (32 bits) and Visual Genome (< 10**10)
UNLABELED_COPIES = 600_000  # COCO unlabeled copies are 000000600001.jpg, ...: ids the writer never draws
_FLICKR_ID = re.compile(r"/(\d+)_[0-9a-f]+\.jpg$")
_WORD = re.compile(r"[a-z0-9]+")

# Relative to the datasets folder (the sources' roots in corpus.yaml).
_ROOTS = {"coco": "coco", "coco_unlabeled": "coco", "vg": "visual_genome", "cc": "conceptual_captions",
          "sbu": "sbu"}
_SBU_CAPTIONS = "SBU_captioned_photo_dataset_captions.txt"


@dataclass
class Good:
    """Records that ingest turns into samples, read back from the raw files."""

    coco: list[int]  # image ids, in file order
    coco_upright: list[int]  # of those, RGB without an EXIF rotation: their pixels are the sample's
    coco_captions: dict[int, list[str]]
    coco_boxes: dict[int, list[dict[str, Any]]]  # instances annotations per image
    vg: list[dict[str, Any]]  # image_data entries
    vg_phrases: dict[int, list[str]]
    sbu: list[tuple[int, str]]  # (row, url)
    cc: list[tuple[int, str, str]]  # (row, caption, url)


def read_good(data_dir: str) -> Good:
    coco, upright, captions, boxes = _good_coco(data_dir)
    vg, phrases = _good_vg(data_dir)
    return Good(coco, upright, captions, boxes, vg, phrases, _good_sbu_rows(data_dir), _good_cc_rows(data_dir))


# --- duplicates ----------------------------------------------------------------------------------------


def plant_duplicates(data_dir: str, expected: dict[str, Any], good: Good) -> tuple[list, list]:
    """Copies across sources; returns (groups, notes): groups of ``(kind, [(source, key), ...])`` whose
    members are copies of one picture, and notes (what, kind, files) for expected.json."""
    groups, notes = [], []
    unlabeled = iter(range(UNLABELED_COPIES + 1, UNLABELED_COPIES + 100))
    cc_root = os.path.join(data_dir, _ROOTS["cc"])
    sbu_free = iter(good.sbu[2:])  # SBU rows 0 and 1 are named by the Flickr30k split

    def cc_image(row: int) -> tuple[str, bytes]:
        rel = f"{_ROOTS['cc']}/images/{row:08d}.jpg"
        return rel, _read(os.path.join(cc_root, "images", f"{row:08d}.jpg"))

    def to_unlabeled(data: bytes) -> tuple[tuple[str, str], str]:
        name = f"{next(unlabeled):012d}"
        rel = f"{_ROOTS['coco_unlabeled']}/unlabeled2017/{name}.jpg"
        write_bytes(os.path.join(data_dir, rel), data)
        expected["coco_unlabeled"]["samples"] += 1
        expected["coco_unlabeled"]["records"] += 1
        return ("coco_unlabeled", make_key("coco_unlabeled", name)), rel

    def to_sbu(data: bytes, caption: str) -> tuple[tuple[str, str], str]:
        """Replace a good SBU row's picture and caption: the counts stay."""
        row, _ = next(sbu_free)
        rel = f"{_ROOTS['sbu']}/images/{row:08d}.jpg"
        write_bytes(os.path.join(data_dir, rel), data)
        path = os.path.join(data_dir, _ROOTS["sbu"], _SBU_CAPTIONS)
        lines = _read(path).split(b"\n")
        lines[row] = (caption[0].upper() + caption[1:]).encode("utf-8")
        write_bytes(path, b"\n".join(lines))
        return ("sbu", make_key("sbu", row)), rel

    # A CC picture, byte for byte, in COCO unlabeled and in SBU; another in COCO unlabeled.
    (row, caption, _), (row2, _, _) = good.cc[0], good.cc[1]
    rel, data = cc_image(row)
    copy1, rel1 = to_unlabeled(data)
    copy2, rel2 = to_sbu(data, caption)
    groups.append(("exact_image", [("cc", make_key("cc", row)), copy1, copy2]))
    notes.append(("a CC image copied into COCO unlabeled and SBU", "exact_image", [rel, rel1, rel2]))
    rel, data = cc_image(row2)
    copy1, rel1 = to_unlabeled(data)
    groups.append(("exact_image", [("cc", make_key("cc", row2)), copy1]))
    notes.append(("a CC image copied into COCO unlabeled", "exact_image", [rel, rel1]))

    # Near copies: re-encoded and/or resized.
    row = good.cc[2][0]
    rel, data = cc_image(row)
    copy1, rel1 = to_unlabeled(_reencode(data, 85, 70))
    groups.append(("near_image", [("cc", make_key("cc", row)), copy1]))
    notes.append(("a CC image at 85 % the size, JPEG quality 70, in COCO unlabeled", "near_image", [rel, rel1]))

    image = next(i for i in good.vg if not i["coco_id"] and not i["flickr_id"])
    rel = next(r for r in (f"{_ROOTS['vg']}/{folder}/{image['image_id']}.jpg" for folder in ("VG_100K", "VG_100K_2"))
               if os.path.exists(os.path.join(data_dir, r)))
    copy1, rel1 = to_sbu(_reencode(_read(os.path.join(data_dir, rel)), 100, 55),
                         good.vg_phrases[image["image_id"]][0])
    groups.append(("near_image", [("vg", make_key("vg", image["image_id"])), copy1]))
    notes.append(("a Visual Genome image at JPEG quality 55 in SBU", "near_image", [rel, rel1]))

    coco_id = good.coco_upright[0]  # in the Karpathy test split: its copy is contaminated too
    rel = f"{_ROOTS['coco']}/train2017/{coco_id:012d}.jpg"
    copy1, rel1 = to_unlabeled(_reencode(_read(os.path.join(data_dir, rel)), 80, 75))
    groups.append(("near_image", [("coco", make_key("coco", coco_id)), copy1]))
    notes.append(("a COCO image at 80 % the size, JPEG quality 75, in COCO unlabeled", "near_image", [rel, rel1]))
    return groups, [{"what": what, "kind": kind, "files": [f"datasets/{f}" for f in files]}
                    for what, kind, files in notes]


def text_groups(tallies: list[Tally]) -> list:
    """The planted text copies (``Tally.copies``) as duplicate groups."""
    members: dict[str, list[tuple[str, str]]] = {}
    for tally in tallies:
        for sentence, key in tally.copies:
            members.setdefault(sentence, []).append((tally.name, key))
    return [("exact_text", group) for group in members.values()]


def duplicate_entries(groups: list, order: list[str]) -> list[dict[str, str]]:
    """One entry per dropped copy: the kept one has the smallest (source position in the config, key)."""
    entries = []
    for kind, members in groups:
        kept = min(members, key=lambda m: (order.index(m[0]), m[1]))
        entries += [{"key": key, "duplicate_of": kept[1], "kind": kind} for _, key in members if key != kept[1]]
    return sorted(entries, key=lambda e: e["key"])


# --- evaluation splits -------------------------------------------------------------------------------


def plant_eval_sets(data_dir: str, good: Good) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Evaluation files under ``datasets/eval``; returns (eval_sets config entries, expected matches by
    id or URL, one per (sample, eval set), by the first criterion in the order coco_id, flickr_id, url)."""
    first = good.coco_upright[0]
    c = [first] + [i for i in good.coco if i != first]  # c[0] is also copied into COCO unlabeled
    vg_both = next(i for i in good.vg if i["coco_id"] and i["flickr_id"])
    vg_flickr = next(i for i in good.vg if i["flickr_id"] and not i["coco_id"])
    folder = os.path.join(data_dir, EVAL)
    expected = []

    def hit(key: str, eval_set: str, by: str) -> None:
        expected.append({"key": key, "eval_set": eval_set, "matched_by": by})

    # Karpathy COCO: test and val count, train and restval do not.
    coco_split = [(c[0], "test"), (c[1], "val"), (c[2], "train"), (c[3], "restval"), (ABSENT_COCO_IDS[0], "test")]
    images = [_karpathy_coco(n, coco_id, split, good.coco_captions.get(coco_id, ["A ball on the grass."]))
              for n, (coco_id, split) in enumerate(coco_split)]
    write_json(os.path.join(folder, "dataset_coco.json"), {"images": images, "dataset": "coco"})
    hit(make_key("coco", c[0]), "coco_karpathy", "coco_id")
    hit(make_key("coco", c[1]), "coco_karpathy", "coco_id")

    # Karpathy Flickr30k: a VG image by its flickr_id, an SBU photo by the id in its URL.
    (sbu_row, sbu_url), (_, sbu_train_url) = good.sbu[0], good.sbu[1]  # row 1: train split only
    flickr_split = [(vg_flickr["flickr_id"], "test"), (_flickr_id(sbu_url), "test"),
                    (_flickr_id(sbu_train_url), "train"), (ABSENT_FLICKR_ID, "test")]
    images = [_karpathy_flickr(n, flickr_id, split) for n, (flickr_id, split) in enumerate(flickr_split)]
    write_json(os.path.join(folder, "dataset_flickr30k.json"), {"images": images, "dataset": "flickr30k"})
    hit(make_key("vg", vg_flickr["image_id"]), "flickr30k_karpathy", "flickr_id")
    hit(make_key("sbu", sbu_row), "flickr30k_karpathy", "flickr_id")

    # VQA v2 val questions (every question counts): COCO images, one of them a VG image's coco_id.
    questions = [{"image_id": image_id, "question": question, "question_id": image_id * 1000 + n}
                 for image_id in (c[1], c[4], vg_both["coco_id"])
                 for n, question in enumerate(("What color is the ball?", "Is it sunny?"))]
    write_json(os.path.join(folder, "v2_OpenEnded_mscoco_val2014_questions.json"),
               {"info": {"description": "unicorpus mini VQA v2"}, "task_type": "Open-Ended", "data_type": "mscoco",
                "data_subtype": "val2014", "questions": questions, "license": {}})
    hit(make_key("coco", c[1]), "vqa_v2_val", "coco_id")
    hit(make_key("coco", c[4]), "vqa_v2_val", "coco_id")
    hit(make_key("vg", vg_both["image_id"]), "vqa_v2_val", "coco_id")

    # RefCOCO (UNC): val, testA and testB count, train does not.
    refs = [_ref(n, coco_id, split, good.coco_boxes.get(coco_id, []))
            for n, (coco_id, split) in enumerate(((c[5], "testA"), (c[6], "train"), (c[7], "val"), (c[8], "testB")))]
    write_bytes(os.path.join(folder, "refs(unc).p"), pickle.dumps(refs, protocol=2))
    for coco_id in (c[5], c[7], c[8]):
        hit(make_key("coco", coco_id), "refcoco_unc", "coco_id")

    # A plain list: a CC URL (https, the TSV says http: the same image), and a VG image named by both its
    # Flickr and its COCO id (coco_id is checked first).
    cc_row, _, cc_url = good.cc[5]
    write_lines(os.path.join(folder, "eval_urls.txt"), [
        "# extra evaluation images", re.sub(r"^http:", "https:", cc_url), f"coco:{ABSENT_COCO_IDS[1]}",
        f"flickr:{vg_both['flickr_id']}", f"coco:{vg_both['coco_id']}", ""])
    hit(make_key("cc", cc_row), "extra_ids", "url")
    hit(make_key("vg", vg_both["image_id"]), "extra_ids", "coco_id")

    eval_sets = [{"name": name, "path": f"datasets/{EVAL}/{file}"} for name, file in EVAL_FILES]
    return eval_sets, expected


EVAL_FILES = (("coco_karpathy", "dataset_coco.json"), ("flickr30k_karpathy", "dataset_flickr30k.json"),
              ("vqa_v2_val", "v2_OpenEnded_mscoco_val2014_questions.json"), ("refcoco_unc", "refs(unc).p"),
              ("extra_ids", "eval_urls.txt"))


def inherited(duplicates: list[dict[str, str]], contaminated: list[dict[str, str]]) -> list[dict[str, str]]:
    """A dropped copy of a matched sample is matched too, by "duplicate" (unless by its own ids)."""
    found = {(c["key"], c["eval_set"]) for c in contaminated}
    extra = []
    for d in duplicates:
        for c in contaminated:
            if c["key"] == d["duplicate_of"] and (d["key"], c["eval_set"]) not in found:
                extra.append({"key": d["key"], "eval_set": c["eval_set"], "matched_by": "duplicate"})
    return extra


def sort_contaminated(entries: list[dict[str, str]]) -> list[dict[str, str]]:
    sets = [name for name, _ in EVAL_FILES]
    return sorted(entries, key=lambda e: (e["key"], sets.index(e["eval_set"])))


# --- a URL list served over HTTP ---------------------------------------------------------------------


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


# --- reading back what ingest keeps ------------------------------------------------------------------


def _good_cc_rows(data_dir: str) -> list[tuple[int, str, str]]:
    root = os.path.join(data_dir, _ROOTS["cc"])
    rows = []
    with open(os.path.join(root, "Train_GCC-training.tsv"), "rb") as f:
        for row, raw in enumerate(f):
            fields = raw.rstrip(b"\n").split(b"\t")
            if len(fields) == 2 and fields[0].strip() and _utf8(raw) and os.path.exists(
                    os.path.join(root, "images", f"{row:08d}.jpg")):
                rows.append((row, fields[0].decode(), fields[1].decode().strip()))
    return rows


def _good_sbu_rows(data_dir: str) -> list[tuple[int, str]]:
    root = os.path.join(data_dir, _ROOTS["sbu"])
    with open(os.path.join(root, "SBU_captioned_photo_dataset_urls.txt"), "rb") as f:
        urls = f.read().decode().splitlines()
    with open(os.path.join(root, _SBU_CAPTIONS), "rb") as f:
        captions = f.read().split(b"\n")
    return [(row, urls[row]) for row, caption in enumerate(captions[: len(urls)])
            if caption.strip() and _utf8(caption) and os.path.exists(os.path.join(root, "images", f"{row:08d}.jpg"))]


def _good_coco(data_dir: str) -> tuple[list[int], list[int], dict[int, list[str]], dict[int, list[dict]]]:
    root = os.path.join(data_dir, _ROOTS["coco"])
    with open(os.path.join(root, "annotations", "captions_train2017.json"), encoding="utf-8") as f:
        captions = json.load(f)
    with open(os.path.join(root, "annotations", "instances_train2017.json"), encoding="utf-8") as f:
        instances = json.load(f)
    ids = [image["id"] for image in captions["images"]]
    texts: dict[int, list[str]] = {}
    for a in sorted(captions["annotations"], key=lambda a: a["id"]):
        if a["caption"].strip():
            texts.setdefault(a["image_id"], []).append(a["caption"].strip())
    boxes: dict[int, list[dict]] = {}
    for box in sorted(instances["annotations"], key=lambda b: b["id"]):
        boxes.setdefault(box["image_id"], []).append(box)
    good, upright = [], []
    for image in captions["images"]:
        if ids.count(image["id"]) != 1 or image["id"] not in texts:
            continue
        opened = _open(os.path.join(root, "train2017", image["file_name"]))
        if opened is not None:
            good.append(image["id"])
            if opened == ("RGB", 1):
                upright.append(image["id"])
    return good, upright, texts, boxes


def _good_vg(data_dir: str) -> tuple[list[dict[str, Any]], dict[int, list[str]]]:
    root = os.path.join(data_dir, _ROOTS["vg"])
    with open(os.path.join(root, "image_data.json"), encoding="utf-8") as f:
        images = json.load(f)
    with open(os.path.join(root, "region_descriptions.json"), encoding="utf-8") as f:
        phrases = {entry["id"]: [r["phrase"] for r in entry["regions"] if r["phrase"].strip()]
                   for entry in json.load(f)}
    good = [image for image in images if phrases.get(image["image_id"]) and any(
        os.path.exists(os.path.join(root, folder, f"{image['image_id']}.jpg")) for folder in ("VG_100K", "VG_100K_2"))]
    return good, phrases


# --- formats -------------------------------------------------------------------------------------------


def _karpathy_coco(position: int, coco_id: int, split: str, captions: list[str]) -> dict[str, Any]:
    sentences = [{"tokens": _WORD.findall(raw.lower()), "raw": raw, "imgid": position, "sentid": 5 * position + n}
                 for n, raw in enumerate(captions[:5])]
    return {"filepath": "val2014", "sentids": [s["sentid"] for s in sentences],
            "filename": f"COCO_val2014_{coco_id:012d}.jpg", "imgid": position, "split": split,
            "sentences": sentences, "cocoid": coco_id}


def _karpathy_flickr(position: int, flickr_id: int, split: str) -> dict[str, Any]:
    raws = ("A dog runs across the grass.", "Two people stand next to a red car.")
    sentences = [{"tokens": _WORD.findall(raw.lower()), "raw": raw, "imgid": position, "sentid": 2 * position + n}
                 for n, raw in enumerate(raws)]
    return {"sentids": [s["sentid"] for s in sentences], "imgid": position, "sentences": sentences,
            "split": split, "filename": f"{flickr_id}.jpg"}


def _ref(ref_id: int, coco_id: int, split: str, boxes: list[dict[str, Any]]) -> dict[str, Any]:
    """A RefCOCO ref: expressions for one box (instances annotation) of the image."""
    box = boxes[0] if boxes else {"id": 1_900_000 + ref_id, "category_id": coco.CATEGORY_ID["ball"]}
    name = next(n for cid, n, _ in coco.CATEGORIES if cid == box["category_id"])
    raws = (f"the {name} on the left", f"left {name}")
    sentences = [{"tokens": raw.split(), "raw": raw, "sent_id": 2 * ref_id + n, "sent": raw}
                 for n, raw in enumerate(raws)]
    return {"sent_ids": [s["sent_id"] for s in sentences], "ann_id": box["id"], "ref_id": ref_id,
            "file_name": f"COCO_train2014_{coco_id:012d}_{box['id']}.jpg", "image_id": coco_id, "split": split,
            "sentences": sentences, "category_id": box["category_id"]}


def _flickr_id(url: str) -> int:
    return int(_FLICKR_ID.search(url).group(1))


def _reencode(data: bytes, percent: int, quality: int) -> bytes:
    """The picture of ``data`` at ``percent`` % the size, as a JPEG of ``quality``."""
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        if percent != 100:
            size = (image.width * percent // 100, image.height * percent // 100)
            image = image.resize(size, Image.Resampling.LANCZOS)
        return scenes.encode(image, "JPEG", quality=quality)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _open(path: str) -> tuple[str, int] | None:
    """(mode, EXIF orientation) of an image file that decodes; None for one that does not."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.mode, image.getexif().get(0x0112, 1)
    except (OSError, SyntaxError):
        return None
