"""Visual Genome v1.2: ``image_data.json``, ``region_descriptions.json``, ``objects.json`` and images split
over ``VG_100K/`` and ``VG_100K_2/`` (FORMATS.md "Visual Genome")."""

from __future__ import annotations

import os
import random

from pipelines.minicorpus import scenes
from pipelines.minicorpus.common import Tally, write_bytes, write_json
from schemas.records import Reason

IMAGE_DATA = "image_data.json"
REGIONS = "region_descriptions.json"
OBJECTS = "objects.json"
URL = "https://cs.stanford.edu/people/rak248/{folder}/{image_id}.jpg"
PER_SCALE = 12
BACKGROUND_SYNSETS = {"grass": "grass.n.01", "sand": "sand.n.01", "snow": "snow.n.02", "road": "road.n.01"}


def write(root: str, rng: random.Random, scale: int, tally: Tally) -> None:
    n = PER_SCALE * scale
    first = rng.randint(1, 2_000_000)
    # n good images, then one whose only region is blank, one whose file is nowhere; then an unknown id.
    ids = list(range(first, first + n + 2))
    blank_id, missing_id = ids[n], ids[n + 1]
    unknown_id = first + n + 2 + rng.randint(10, 1000)
    split = (n + 2) * 3 // 5  # the first ids in VG_100K, the rest in VG_100K_2
    region_ids = iter(range(rng.randint(1, 4_000_000), 10**9))
    object_ids = iter(range(rng.randint(1, 1_000_000), 10**9))

    image_data, regions, objects = [], [], []
    for i, image_id in enumerate(ids):
        scene = scenes.sample_scene(rng)
        folder = "VG_100K" if i < split else "VG_100K_2"
        url = URL.format(folder=folder, image_id=image_id)
        # Image 1 is also a COCO image (with its Flickr id), image 2 a Flickr image only, image 3 neither;
        # the rest at random (evaluation splits name some by these ids, cleaning.py).
        coco_id = rng.randint(1, 581_929) if i == 1 or (i > 3 and rng.random() < 0.3) else None
        has_flickr = coco_id is not None or i == 2 or (i > 3 and rng.random() < 0.3)
        flickr_id = rng.randint(10**8, 10**10) if has_flickr else None
        image_data.append({"width": scene.width, "url": url, "height": scene.height, "image_id": image_id,
                           "coco_id": coco_id, "flickr_id": flickr_id})
        if image_id == blank_id:
            phrases = [(" ", (0, 0, scene.width, scene.height))]
            tally.reject(Reason.EMPTY_TEXT, REGIONS, f"the only region phrase of image {image_id} is blank")
            tally.reject(Reason.EMPTY_TEXT, REGIONS, f"image {image_id} is left with no region")
        else:
            phrases = scenes.region_phrases(scene)
            if i == 0:
                phrases.insert(1, ("", (0, 0, scene.width // 2, scene.height // 2)))
                tally.reject(Reason.EMPTY_TEXT, REGIONS, f"an empty region phrase of image {image_id}")
        regions.append({"regions": [_region(next(region_ids), image_id, p, box) for p, box in phrases],
                        "id": image_id})
        objects.append({"image_id": image_id, "objects": _objects(scene, object_ids), "image_url": url})
        if image_id == missing_id:
            tally.reject(Reason.MISSING_IMAGE, "VG_100K, VG_100K_2", f"{image_id}.jpg is in neither folder")
            continue
        write_bytes(os.path.join(root, folder, f"{image_id}.jpg"), scenes.jpeg(scene))
        if image_id != blank_id:
            tally.sample()

    regions.append({"regions": [_region(next(region_ids), unknown_id, "a red ball", (1, 1, 30, 30))],
                    "id": unknown_id})
    tally.reject(Reason.UNKNOWN_REFERENCE, REGIONS, f"a region of image {unknown_id}, which is not in {IMAGE_DATA}")
    unknown_url = URL.format(folder="VG_100K_2", image_id=unknown_id)
    objects.append({"image_id": unknown_id, "objects": [_object(next(object_ids), "ball", "ball.n.01",
                                                                 (1, 1, 30, 30))], "image_url": unknown_url})
    tally.reject(Reason.UNKNOWN_REFERENCE, OBJECTS, f"objects of image {unknown_id}, which is not in {IMAGE_DATA}")

    write_json(os.path.join(root, IMAGE_DATA), image_data)
    write_json(os.path.join(root, REGIONS), regions)
    write_json(os.path.join(root, OBJECTS), objects)


def _region(region_id: int, image_id: int, phrase: str, box: tuple[int, int, int, int]) -> dict:
    x, y, w, h = box
    return {"region_id": region_id, "width": w, "height": h, "image_id": image_id, "phrase": phrase, "y": y, "x": x}


def _object(object_id: int, name: str, synset: str, box: tuple[int, int, int, int]) -> dict:
    x, y, w, h = box
    return {"synsets": [synset], "h": h, "object_id": object_id, "merged_object_ids": [], "names": [name],
            "w": w, "y": y, "x": x}


def _objects(scene: scenes.Scene, object_ids) -> list[dict]:
    out = [_object(next(object_ids), obj.kind, scenes.SYNSETS[obj.kind], obj.xywh) for obj in scene.objects]
    out.append(_object(next(object_ids), "sky", "sky.n.01", (0, 0, scene.width, scene.horizon)))
    out.append(_object(next(object_ids), scene.ground, BACKGROUND_SYNSETS[scene.ground],
                       (0, scene.horizon, scene.width, scene.height - scene.horizon)))
    return out
