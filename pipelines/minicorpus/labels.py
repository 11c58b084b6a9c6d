"""Image collections with class labels: OpenImages (CSV tables + ``images/<ImageID>.jpg``) and
ImageNet-21k (``words.txt`` + ``nXXXXXXXX/`` folders or ``nXXXXXXXX.tar`` files) (FORMATS.md)."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import random

from pipelines.minicorpus import scenes
from pipelines.minicorpus.common import Tally, tar_bytes, write_bytes, write_lines, write_text
from schemas.records import Reason

# --- OpenImages -----------------------------------------------------------------------------------

OI_IMAGES = "train-images-boxable-with-rotation.csv"
OI_LABELS = "train-annotations-human-imagelabels-boxable.csv"
OI_CLASSES = "class-descriptions-boxable.csv"
OI_BOXES = "train-annotations-bbox.csv"
OI_PER_SCALE = 12
OI_IMAGE_HEADER = ["ImageID", "Subset", "OriginalURL", "OriginalLandingURL", "License", "AuthorProfileURL",
                   "Author", "Title", "OriginalSize", "OriginalMD5", "Thumbnail300KURL", "Rotation"]
OI_LABEL_HEADER = ["ImageID", "Source", "LabelName", "Confidence"]
OI_BOX_HEADER = ["ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax", "IsOccluded",
                 "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside"]
OI_MIDS = {"ball": "/m/018xm", "box": "/m/025dyy", "tent": "/m/01j61q", "tree": "/m/07j7r", "car": "/m/0k4j",
           "house": "/m/03jm5", "sun": "/m/06m_p", "kite": "/m/02zt3"}
OI_OTHER_CLASSES = {"/m/011k07": "Tortoise", "/m/01g317": "Person", "/m/0bt9lr": "Dog", "/m/01mzpv": "Chair",
                    "/m/015p6": "Bird", "/m/04_sv": "Motorcycle", "/m/0dzct": "Human face"}
OI_UNKNOWN_MID = "/m/0zz9qx"  # in no class description
_AUTHORS = ("Mike Miley", "Ana Ruiz", "J. Peterson", "Kim Lee", "Sam O'Neil", "Priya Das")
_TITLES = ("Sunday in the park", "Beach day, finally", "Untitled", "IMG_{n}", "Snow, snow and more snow",
           'The "red" one', "Road trip, day {n}", "DSC{n}")


def _csv(rows: list[list]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _mid_to_name(kind: str) -> str:
    return kind.capitalize()


def write_openimages(root: str, rng: random.Random, scale: int, tally: Tally) -> None:
    n = OI_PER_SCALE * scale
    image_ids = sorted(f"{rng.getrandbits(64):016x}" for _ in range(n + 2))
    assert len(set(image_ids)) == len(image_ids)
    roles = ["good"] * n + ["negatives_only", "no_labels"]
    rng.shuffle(roles)
    unknown_image = f"{rng.getrandbits(64):016x}"
    good_ids = [i for i, r in zip(image_ids, roles, strict=True) if r == "good"]
    unknown_class_on, malformed_on = rng.sample(good_ids, 2)

    image_rows, label_rows, box_rows = [OI_IMAGE_HEADER], [OI_LABEL_HEADER], [OI_BOX_HEADER]
    all_mids = list(OI_MIDS.values()) + list(OI_OTHER_CLASSES)
    for image_id, role in zip(image_ids, roles, strict=True):
        scene = scenes.sample_scene(rng)
        data = scenes.jpeg(scene)
        write_bytes(os.path.join(root, "images", f"{image_id}.jpg"), data)
        image_rows.append(_image_row(rng, image_id, data))
        present = [OI_MIDS[k] for k in scene.kinds]
        absent = [m for m in all_mids if m not in present]
        negatives = rng.sample(absent, rng.randint(1, 3))
        labels = []
        if role == "good":
            labels += [(m, "verification", 1) for m in present]
            labels += [(m, rng.choice(("verification", "crowdsource-verification")), 0) for m in negatives]
            if image_id == unknown_class_on:
                labels.append((OI_UNKNOWN_MID, "verification", 1))
                tally.reject(Reason.UNKNOWN_REFERENCE, OI_LABELS, f"label {OI_UNKNOWN_MID} of {image_id} is no class")
            for obj in scene.objects:
                box_rows.append(_box_row(image_id, OI_MIDS[obj.kind], obj, scene))
            tally.sample()
        elif role == "negatives_only":
            labels += [(m, "verification", 0) for m in negatives]  # verified absent, nothing present
            tally.reject(Reason.NO_LABEL, OI_LABELS, f"{image_id} has only negative (Confidence 0) labels")
        else:
            tally.reject(Reason.NO_LABEL, OI_LABELS, f"{image_id} has no label rows")
        labels.sort()
        for mid, source, confidence in labels:
            label_rows.append([image_id, source, mid, confidence])
        if image_id == malformed_on:
            label_rows.append([image_id, "verification"])  # two fields instead of four
            tally.reject(Reason.MALFORMED, f"{OI_LABELS}:{len(label_rows)}", "a row with two of four fields")
    box_rows.append([unknown_image, "xclick", OI_MIDS["ball"], 1, "0.100000", "0.400000", "0.500000", "0.900000",
                     0, 0, 0, 0, 0])
    tally.reject(Reason.UNKNOWN_REFERENCE, OI_BOXES, f"a box of {unknown_image}, which is not in {OI_IMAGES}")
    box_rows[1:] = sorted(box_rows[1:], key=lambda r: r[0])  # the release sorts by ImageID

    classes = {**{mid: _mid_to_name(kind) for kind, mid in OI_MIDS.items()}, **OI_OTHER_CLASSES}
    write_text(os.path.join(root, OI_CLASSES), _csv([[m, classes[m]] for m in sorted(classes)]))
    write_text(os.path.join(root, OI_IMAGES), _csv(image_rows))
    write_text(os.path.join(root, OI_LABELS), _csv(label_rows))
    write_text(os.path.join(root, OI_BOXES), _csv(box_rows))


def _image_row(rng: random.Random, image_id: str, data: bytes) -> list:
    server, photo, secret = rng.randint(1, 8000), rng.randint(10**9, 10**10), f"{rng.getrandbits(40):010x}"
    user = f"user{rng.randint(100, 99999)}"
    title = rng.choice(_TITLES).format(n=rng.randint(1000, 9999))
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    rotation = rng.choice(("0.0", "0.0", "0.0", ""))
    return [image_id, "train", f"https://farm{rng.randint(1, 9)}.staticflickr.com/{server}/{photo}_{secret}_o.jpg",
            f"https://www.flickr.com/photos/{user}/{photo}", "https://creativecommons.org/licenses/by/2.0/",
            f"https://www.flickr.com/people/{user}/", rng.choice(_AUTHORS), title, len(data) * 40, md5,
            f"https://c{rng.randint(1, 8)}.staticflickr.com/{rng.randint(1, 9)}/{server}/{photo}_{secret}_z.jpg",
            rotation]


def _box_row(image_id: str, mid: str, obj: scenes.Obj, scene: scenes.Scene) -> list:
    x0, y0, x1, y1 = obj.box
    truncated = int(x0 == 0 or y0 == 0 or x1 == scene.width or y1 == scene.height)
    coords = [x0 / scene.width, x1 / scene.width, y0 / scene.height, y1 / scene.height]
    return [image_id, "xclick", mid, 1, *(f"{c:.6f}" for c in coords), 0, truncated, 0, 0, 0]


# --- ImageNet-21k ---------------------------------------------------------------------------------

WORDS = "words.txt"
IN_PER_SCALE = 3
IN_UNKNOWN_PER_SCALE = 2
# (wnid, words.txt names, scene kind, stored as a tar?)
SYNSETS = [
    ("n02778669", "ball", "ball", False),
    ("n02958343", "car, auto, automobile, machine, motorcar", "car", False),
    ("n03621049", "kite", "kite", False),
    ("n13104059", "tree", "tree", True),
    ("n03544360", "house", "house", True),
    ("n04411264", "tent, collapsible shelter", "tent", True),
]
UNKNOWN_SYNSET = ("n04254680", "ball")  # soccer ball: a folder of images, absent from words.txt
OTHER_WORDS = [
    ("n00001740", "entity"),
    ("n00002137", "abstraction, abstract entity"),
    ("n00021939", "artifact, artefact"),
    ("n02084071", "dog, domestic dog, Canis familiaris"),
    ("n02121808", "domestic cat, house cat, Felis domesticus, Felis catus"),
    ("n03001627", "chair"),
    ("n09450163", "sun"),
]


def write_imagenet(root: str, rng: random.Random, scale: int, tally: Tally) -> None:
    words = sorted([(wnid, names) for wnid, names, _, _ in SYNSETS] + OTHER_WORDS)
    write_lines(os.path.join(root, WORDS), [f"{wnid}\t{names}" for wnid, names in words])
    for wnid, _, kind, as_tar in SYNSETS + [(UNKNOWN_SYNSET[0], "", UNKNOWN_SYNSET[1], False)]:
        count = (IN_UNKNOWN_PER_SCALE if wnid == UNKNOWN_SYNSET[0] else IN_PER_SCALE) * scale
        numbers = sorted(rng.sample(range(1, 60_000), count))
        members = [(f"{wnid}_{k}.JPEG", scenes.jpeg(scenes.sample_scene(rng, main=kind)))
                   for k in numbers]
        if as_tar:
            write_bytes(os.path.join(root, f"{wnid}.tar"), tar_bytes(members))
        else:
            for name, data in members:
                write_bytes(os.path.join(root, wnid, name), data)
        if wnid == UNKNOWN_SYNSET[0]:
            tally.reject(Reason.NO_LABEL, f"{wnid}/", f"synset {wnid} is not in {WORDS}", count=count)
        else:
            tally.sample(count)
