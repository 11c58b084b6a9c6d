"""COCO 2017: ``annotations/captions_train2017.json``, ``instances_train2017.json``, ``train2017/`` and the
image-only ``unlabeled2017/`` (FORMATS.md "COCO")."""

from __future__ import annotations

import os
import random

from PIL import Image

from pipelines.minicorpus import scenes
from pipelines.minicorpus.common import Tally, garbage, write_bytes, write_json
from schemas.records import Reason

CAPTIONS = "annotations/captions_train2017.json"
INSTANCES = "annotations/instances_train2017.json"
IMAGES = "train2017"
UNLABELED = "unlabeled2017"

CATEGORIES = [  # (id, name, supercategory): COCO-like sparse ids
    (3, "car", "vehicle"),
    (37, "ball", "sports"),
    (38, "kite", "sports"),
    (64, "tree", "outdoor"),
    (65, "tent", "outdoor"),
    (66, "box", "indoor"),
    (67, "house", "outdoor"),
    (68, "sun", "outdoor"),
]
CATEGORY_ID = {name: cid for cid, name, _ in CATEGORIES}

INFO = {
    "description": "unicorpus mini COCO 2017 Dataset",
    "url": "http://cocodataset.org",
    "version": "1.0",
    "year": 2017,
    "contributor": "unicorpus minicorpus generator",
    "date_created": "2017/09/01",
}
LICENSES = [
    {"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1,
     "name": "Attribution-NonCommercial-ShareAlike License"},
    {"url": "http://creativecommons.org/licenses/by/2.0/", "id": 4, "name": "Attribution License"},
]

PER_SCALE = 16
UNLABELED_PER_SCALE = 8


def _image_entry(rng: random.Random, image_id: int, width: int, height: int) -> dict:
    file_name = f"{image_id:012d}.jpg"
    farm, server = rng.randint(1, 9), rng.randint(1000, 9999)
    photo = f"{rng.getrandbits(32)}_{rng.getrandbits(40):010x}"
    return {
        "license": rng.choice((1, 4)),
        "file_name": file_name,
        "coco_url": f"http://images.cocodataset.org/train2017/{file_name}",
        "height": height,
        "width": width,
        "date_captured": f"2013-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
        "flickr_url": f"http://farm{farm}.staticflickr.com/{server}/{photo}_z.jpg",
        "id": image_id,
    }


def _caption_texts(rng: random.Random, scene: scenes.Scene) -> list[str]:
    variants = scenes.caption_variants(scene)
    rng.shuffle(variants)
    count = min(len(variants), rng.choice((5, 5, 5, 6)))
    texts = []
    for text in variants[:count]:
        style = rng.random()
        if style < 0.75:
            texts.append(scenes.sentence_case(text))  # "A red ball on the grass."
        elif style < 0.9:
            texts.append(text[0].upper() + text[1:])  # no final period
        else:
            texts.append(text + " ")  # lower case with a trailing space, as some COCO captions have
    return texts


def write_coco(root: str, rng: random.Random, scale: int, tally: Tally) -> None:
    n = PER_SCALE * scale
    # Ids of the n good images, then: missing file, corrupt file, only-empty-caption image, unknown id.
    ids = rng.sample(range(1, 581_930), n + 4)
    missing_id, corrupt_id, empty_id, unknown_id = ids[n:]
    caption_ids = iter(rng.sample(range(1, 830_000), 8 * (n + 4)))
    box_ids = iter(rng.sample(range(1, 2_000_000), 8 * (n + 4)))

    images: list[dict] = []
    captions: list[dict] = []
    boxes: list[dict] = []
    later: list[tuple[str, dict]] = []  # duplicates, appended after shuffling so they come second

    def add(image_id: int, scene: scenes.Scene, texts: list[str], with_boxes: bool = True) -> dict:
        entry = _image_entry(rng, image_id, scene.width, scene.height)
        images.append(entry)
        for text in texts:
            captions.append({"image_id": image_id, "id": next(caption_ids), "caption": text})
        if with_boxes:
            for obj in scene.objects:
                x, y, w, h = obj.xywh
                boxes.append({
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                    "area": float(w * h),
                    "iscrowd": 0,
                    "image_id": image_id,
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "category_id": CATEGORY_ID[obj.kind],
                    "id": next(box_ids),
                })
        return entry

    folder = os.path.join(root, IMAGES)
    for i, image_id in enumerate(ids[:n]):
        if i == 1:  # stored sideways with an EXIF orientation tag; square, so width/height are unambiguous
            scene = scenes.sample_scene(rng, size=(144, 144))
            data = scenes.rotated_jpeg(scene)
        else:
            scene = scenes.sample_scene(rng)
            image = scenes.draw(scene)
            data = scenes.encode(image.convert("L") if i == 0 else image)  # image 0: grayscale JPEG
        texts = _caption_texts(rng, scene)
        if i == 2:
            texts.insert(rng.randrange(len(texts) + 1), "")
            tally.reject(Reason.EMPTY_TEXT, CAPTIONS, f"an empty caption of image {image_id}")
        entry = add(image_id, scene, texts)
        write_bytes(os.path.join(folder, entry["file_name"]), data)
        if i == 3:
            later.append(("caption", dict(captions[-1])))
            tally.reject(Reason.DUPLICATE_ID, CAPTIONS, f"caption annotation id {captions[-1]['id']} listed twice")
        if i == 4:
            later.append(("image", dict(entry)))
            tally.reject(Reason.DUPLICATE_ID, CAPTIONS, f"image id {image_id} listed twice in images")
        tally.sample()

    scene = scenes.sample_scene(rng)
    add(missing_id, scene, _caption_texts(rng, scene))  # no file written
    tally.reject(Reason.MISSING_IMAGE, IMAGES, f"{missing_id:012d}.jpg is not in {IMAGES}/")

    scene = scenes.sample_scene(rng)
    entry = add(corrupt_id, scene, _caption_texts(rng, scene))
    write_bytes(os.path.join(folder, entry["file_name"]), garbage(rng))
    tally.reject(Reason.CORRUPT_IMAGE, IMAGES, f"{entry['file_name']} holds garbage bytes")

    scene = scenes.sample_scene(rng)
    entry = add(empty_id, scene, ["   "], with_boxes=False)
    write_bytes(os.path.join(folder, entry["file_name"]), scenes.jpeg(scene))
    tally.reject(Reason.EMPTY_TEXT, CAPTIONS, f"the only caption of image {empty_id} is blank")
    tally.reject(Reason.EMPTY_TEXT, CAPTIONS, f"image {empty_id} is left with no caption")

    captions.append({"image_id": unknown_id, "id": next(caption_ids), "caption": "A red ball on the grass."})
    tally.reject(Reason.UNKNOWN_REFERENCE, CAPTIONS, f"a caption of image {unknown_id}, which is not in images")
    unknown_box = {"segmentation": [[1, 1, 20, 1, 20, 20, 1, 20]], "area": 361.0, "iscrowd": 0,
                   "image_id": unknown_id, "bbox": [1.0, 1.0, 19.0, 19.0], "category_id": CATEGORY_ID["ball"],
                   "id": next(box_ids)}
    tally.reject(Reason.UNKNOWN_REFERENCE, INSTANCES, f"a box of image {unknown_id}, which is not in images")

    rng.shuffle(images)
    rng.shuffle(captions)
    rng.shuffle(boxes)
    boxes.insert(rng.randrange(len(boxes) + 1), unknown_box)
    for what, element in later:
        (images if what == "image" else captions).append(element)

    write_json(os.path.join(root, CAPTIONS),
               {"info": INFO, "licenses": LICENSES, "images": images, "annotations": captions})
    categories = [{"supercategory": sup, "id": cid, "name": name} for cid, name, sup in CATEGORIES]
    write_json(os.path.join(root, INSTANCES),
               {"info": INFO, "licenses": LICENSES, "images": images, "annotations": boxes, "categories": categories})


def write_unlabeled(root: str, rng: random.Random, scale: int, tally: Tally) -> None:
    """``unlabeled2017/``: image files only; two PNGs (a palette one and one with alpha), and one whose header
    claims 100M pixels (a decompression bomb: ``too_large``)."""
    n = UNLABELED_PER_SCALE * scale
    for i, image_id in enumerate(sorted(rng.sample(range(1, 600_000), n))):
        image = scenes.draw(scenes.sample_scene(rng))
        if i == 0:
            name, data = f"{image_id:012d}.png", scenes.encode(image.quantize(32), "PNG")
        elif i == 1:
            rgba = image.convert("RGBA")
            rgba.putalpha(Image.new("L", image.size, 200))
            name, data = f"{image_id:012d}.png", scenes.encode(rgba, "PNG")
        else:
            name, data = f"{image_id:012d}.jpg", scenes.encode(image)
        write_bytes(os.path.join(root, UNLABELED, name), data)
        tally.sample()
    write_bytes(os.path.join(root, UNLABELED, "huge.png"), scenes.header_only_png(10_000, 10_000))
    tally.reject(Reason.TOO_LARGE, UNLABELED, "huge.png claims 10000x10000 pixels, over image.max_pixels")
