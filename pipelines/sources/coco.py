"""COCO captions: one image-text pair per image (UNIMO App. A Table 5, UNITER Table 1: 533K pairs).

``captions_*.json`` gives the images and about five captions each; the sample's text is the caption
with the lowest annotation id and all valid captions go into ``meta``. ``instances_*.json``, when
configured, adds the ground-truth boxes as ``objects`` (tags for weak alignment, mu-VLA §3.2). Both
files are streamed (jsonstream), so the 450 MB instances file is never held whole.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pipelines import storage
from pipelines.sources import Reader, SourceError
from pipelines.sources.common import (
    candidate,
    clean_text,
    element_location,
    id_order,
    is_id,
    is_size,
    json_object_members,
    normalise_box,
    pixel_box,
    sample_key,
    surrogate_reject,
)
from schemas.records import Candidate, Reason, Reject


@dataclass
class _Image:
    index: int  # position in the captions file's ``images`` list
    file_name: str
    width: float
    height: float
    captions: list[tuple[Any, str]] = field(default_factory=list)  # (annotation id, caption)
    objects: list[tuple[Any, dict]] = field(default_factory=list)  # (annotation id, object)


class CocoReader(Reader):
    """Reads one captions file (a single part); see docs/SOURCES.md for its samples and rejects."""

    def parts(self) -> list[str]:
        return [self.config.path(self.config.captions)]

    def read(self, part: str) -> Iterator[Candidate | Reject]:
        members = _lists(part, ("images", "annotations"))
        rel = self.config.relative(part)
        images: dict[Any, _Image] = {}
        for index, element in members["images"]:
            yield from self._add_image(images, index, element, element_location(rel, "images", index))
        seen: set[Any] = set()
        for index, element in members["annotations"]:
            location = element_location(rel, "annotations", index)
            yield from self._add_caption(images, seen, element, location)
        if self.config.instances is not None:
            yield from self._read_instances(images)
        for image_id, image in images.items():
            yield self._sample(rel, image_id, image)

    def _add_image(
        self, images: dict[Any, _Image], index: int, element: Any, location: str
    ) -> Iterator[Reject]:
        ok = (
            isinstance(element, dict)
            and is_id(element.get("id"))
            and isinstance(element.get("file_name"), str)
            and is_size(element.get("width"))
            and is_size(element.get("height"))
        )
        if not ok:
            yield Reject(self.name, location, Reason.MALFORMED, "image needs id, file_name, width, height")
        elif element["id"] in images:
            key = sample_key(self.name, element["id"])
            yield Reject(self.name, location, Reason.DUPLICATE_ID, f"image id {element['id']}", key)
        else:
            images[element["id"]] = _Image(index, element["file_name"], element["width"], element["height"])

    def _add_caption(
        self, images: dict[Any, _Image], seen: set[Any], element: Any, location: str
    ) -> Iterator[Reject]:
        ok = (
            isinstance(element, dict)
            and is_id(element.get("id"))
            and is_id(element.get("image_id"))
            and isinstance(element.get("caption"), str)
        )
        if not ok:
            yield Reject(self.name, location, Reason.MALFORMED, "caption needs id, image_id, caption")
            return
        ann_id, image_id = element["id"], element["image_id"]
        if ann_id in seen:
            yield Reject(self.name, location, Reason.DUPLICATE_ID, f"caption annotation id {ann_id}")
            return
        seen.add(ann_id)
        caption = clean_text(element["caption"])
        if image_id not in images:
            detail = f"caption of unknown image {image_id}"
            yield Reject(self.name, location, Reason.UNKNOWN_REFERENCE, detail)
        elif bad := surrogate_reject(element["caption"], self.name, location, sample_key(self.name, image_id)):
            yield bad
        elif caption is None:
            yield Reject(self.name, location, Reason.EMPTY_TEXT, f"empty caption {ann_id}")
        else:
            images[image_id].captions.append((ann_id, caption))

    def _read_instances(self, images: dict[Any, _Image]) -> Iterator[Reject]:
        """Boxes are resolved after the whole file: COCO lists ``categories`` after ``annotations``."""
        path = self.config.path(self.config.instances)
        rel = self.config.relative(path)
        members = _lists(path, ("annotations", "categories"), _INSTANCE_FIELDS)
        categories = {
            c["id"]: c["name"]
            for _, c in members["categories"]
            if isinstance(c, dict) and is_id(c.get("id")) and isinstance(c.get("name"), str)
        }
        for index, element in members["annotations"]:
            location = element_location(rel, "annotations", index)
            yield from self._add_object(images, categories, element, location)

    def _add_object(
        self, images: dict[Any, _Image], categories: dict[Any, str], element: Any, location: str
    ) -> Iterator[Reject]:
        xywh = pixel_box(element.get("bbox")) if isinstance(element, dict) else None
        if xywh is None or not all(is_id(element.get(k)) for k in ("id", "image_id", "category_id")):
            yield Reject(self.name, location, Reason.MALFORMED, "box needs id, image_id, category_id, bbox")
            return
        image = images.get(element["image_id"])
        category = categories.get(element["category_id"])
        if image is None:
            detail = f"box of unknown image {element['image_id']}"
            yield Reject(self.name, location, Reason.UNKNOWN_REFERENCE, detail)
        elif category is None:
            detail = f"box of unknown category {element['category_id']}"
            yield Reject(self.name, location, Reason.UNKNOWN_REFERENCE, detail)
        else:
            box = normalise_box(*xywh, image.width, image.height)
            obj = {"name": category, "box": box, "iscrowd": element.get("iscrowd", 0)}
            image.objects.append((element["id"], obj))

    def _sample(self, rel: str, image_id: Any, image: _Image) -> Candidate | Reject:
        location = element_location(rel, "images", image.index)
        if not image.captions:
            key = sample_key(self.name, image_id)
            return Reject(self.name, location, Reason.EMPTY_TEXT, "image has no valid caption", key)
        captions = sorted(image.captions, key=lambda c: id_order(c[0]))
        meta: dict[str, Any] = {
            "image_id": image_id,
            "file_name": image.file_name,
            "width": image.width,
            "height": image.height,
            "captions": [{"id": ann_id, "caption": text} for ann_id, text in captions],
        }
        if self.config.instances is not None:
            meta["objects"] = [obj for _, obj in sorted(image.objects, key=lambda o: id_order(o[0]))]
        image_path = storage.join(self.config.path(self.config.images), image.file_name)
        return candidate(self.name, image_id, location, meta, text=captions[0][1], image_path=image_path)


# What is kept of instance annotations and categories: segmentation polygons are most of the file.
_INSTANCE_FIELDS = ("id", "image_id", "category_id", "bbox", "iscrowd", "name")


def _lists(
    path: str, names: tuple[str, ...], fields: tuple[str, ...] | None = None
) -> dict[str, list[tuple[int, Any]]]:
    """The elements of the named top-level lists of a COCO annotation file (others are skipped), as
    dicts reduced to ``fields`` when given. Elements are collected, not handled as they stream by,
    because a file's lists may come in any order."""
    found: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    present: set[str] = set()
    for key, index, value in json_object_members(path):
        if key not in names:
            continue
        present.add(key)
        if index is not None:
            if fields is not None and isinstance(value, dict):
                value = {k: value[k] for k in fields if k in value}
            found[key].append((index, value))
        elif not isinstance(value, list):
            raise SourceError(f"{path}: '{key}' is a {type(value).__name__}, expected a list")
    missing = [n for n in names if n not in present]
    if missing:
        raise SourceError(f"{path}: not a COCO annotation file: no {', '.join(map(repr, missing))} list")
    return found
