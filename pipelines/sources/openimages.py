"""OpenImages (v6/v7): the image list, human-verified image-level labels, class names, optional boxes.

Each row of the image list is an image sample; with ``pseudo_pairs.enabled`` its positive labels become
a caption (UNIMO-2 §4) and the sample a pair. The label and box files are joined to the image list by
ImageID. So that a worker holds only part of the join, the work is split into ``shards`` buckets by a hash
of the ImageID: each part reads the files through and keeps its bucket's rows, so every row (also a bad
one) is read, and reported, by exactly one part.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from pipelines.sources import Reader, SourceError
from pipelines.sources.common import (
    csv_records,
    image_reference,
    iter_csv,
    relative_to,
    source_path,
)
from pipelines.sources.labels import pseudo_caption
from schemas.keys import make_key, shard_of
from schemas.records import Candidate, Modality, Reason, Reject

IMAGE_LIST_HEADER = (
    "ImageID", "Subset", "OriginalURL", "OriginalLandingURL", "License", "AuthorProfileURL", "Author",
    "Title", "OriginalSize", "OriginalMD5", "Thumbnail300KURL", "Rotation",
)  # fmt: skip
LABELS_HEADER = ("ImageID", "Source", "LabelName", "Confidence")
BOXES_HEADER = (
    "ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax", "IsOccluded",
    "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside",
)  # fmt: skip
CLASSES_HEADER = ("LabelName", "DisplayName")
_PART = re.compile(r"^bucket-(\d+)-of-(\d+)$")
_Keep = Callable[[list[str]], bool]  # whether a CSV row (its raw fields) belongs to this part's bucket


@dataclass
class _Image:
    """What the join collects for one ImageID of this bucket."""

    label_ids: list[str] = field(default_factory=list)
    objects: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Row:
    image_id: str
    location: str
    url: str
    rotation: float | None


class OpenImagesReader(Reader):
    def parts(self) -> list[str]:
        n = self.config.shards
        return [f"bucket-{i:05d}-of-{n:05d}" for i in range(n)]

    def read(self, part: str) -> Iterator[Candidate | Reject]:
        bucket, buckets = _parse_part(part)

        def mine(fields: list[str]) -> bool:
            return shard_of(fields[0] if fields else "", buckets) == bucket

        classes = load_classes(self._path(self.config.classes))
        rows: list[_Row] = []
        images: dict[str, _Image] = {}
        yield from self._image_list(mine, rows, images)
        yield from self._labels(mine, classes, images)
        if self.config.boxes is not None:
            yield from self._boxes(mine, classes, images)
        for row in rows:
            yield self._record(row, images[row.image_id], classes)

    # --- the files -------------------------------------------------------------------------------

    def _path(self, relative: str) -> str:
        return source_path(self.config.root, relative)

    def _rows(
        self, relative: str, header: tuple[str, ...], mine: _Keep
    ) -> Iterator[tuple[str, list[str]] | Reject]:
        path = self._path(relative)
        return csv_records(self.name, path, relative_to(path, self.config.root), header, keep=mine)

    def _image_list(self, mine: _Keep, rows: list[_Row], images: dict[str, _Image]) -> Iterator[Reject]:
        for record in self._rows(self.config.image_list, IMAGE_LIST_HEADER, mine):
            if isinstance(record, Reject):
                yield record
                continue
            location, fields = record
            image_id, url, rotation = fields[0], fields[2].strip(), fields[11]
            angle = _number(rotation) if rotation else None
            if not image_id or (angle is not None and math.isnan(angle)):
                problem = "empty ImageID" if not image_id else f"Rotation {rotation!r} is not a number"
                yield Reject(self.name, location, Reason.MALFORMED, problem)
                continue
            rows.append(_Row(image_id, location, url, angle))
            images.setdefault(image_id, _Image())  # a repeated ImageID: the writer rejects the second

    def _labels(self, mine: _Keep, classes: dict[str, str], images: dict[str, _Image]) -> Iterator[Reject]:
        """Human-verified labels: Confidence 1 is a positive label, 0 a verified NEGATIVE one."""
        for record in self._rows(self.config.labels, LABELS_HEADER, mine):
            if isinstance(record, Reject):
                yield record
                continue
            location, (image_id, _, label, confidence) = record
            value = _number(confidence)
            if value not in (0.0, 1.0):
                detail = f"Confidence {confidence!r}: expected 0 or 1 (human-verified labels)"
                yield Reject(self.name, location, Reason.MALFORMED, detail)
                continue
            problem = self._unknown(image_id, label, images, classes)
            if problem:
                yield Reject(self.name, location, Reason.UNKNOWN_REFERENCE, problem)
            elif value == 1.0 and label not in images[image_id].label_ids:
                images[image_id].label_ids.append(label)

    def _boxes(self, mine: _Keep, classes: dict[str, str], images: dict[str, _Image]) -> Iterator[Reject]:
        """Boxes are already normalised: ``XMin, XMax, YMin, YMax`` -> ``[x1, y1, x2, y2]``."""
        for record in self._rows(self.config.boxes, BOXES_HEADER, mine):
            if isinstance(record, Reject):
                yield record
                continue
            location, fields = record
            image_id, label = fields[0], fields[2]
            box = _box(fields[4:8])
            problem = self._unknown(image_id, label, images, classes)
            if box is None:
                detail = f"XMin,XMax,YMin,YMax {','.join(fields[4:8])!r}: expected numbers, min <= max"
                yield Reject(self.name, location, Reason.MALFORMED, detail)
            elif problem:
                yield Reject(self.name, location, Reason.UNKNOWN_REFERENCE, problem)
            else:
                images[image_id].objects.append({"name": classes[label], "box": box})

    def _unknown(self, image_id: str, label: str, images: dict[str, _Image], classes: dict[str, str]) -> str:
        if image_id not in images:
            return f"ImageID {image_id!r} is not in {self.config.image_list}"
        if label not in classes:
            return f"LabelName {label!r} is not in {self.config.classes}"
        return ""

    # --- samples ---------------------------------------------------------------------------------

    def _record(self, row: _Row, image: _Image, classes: dict[str, str]) -> Candidate | Reject:
        key = make_key(self.name, row.image_id)
        labels = [classes[label] for label in image.label_ids]
        meta: dict[str, Any] = {
            "image_id": row.image_id,
            "labels": labels,
            "label_ids": list(image.label_ids),
            "url": row.url,
            "rotation": row.rotation,
        }
        if self.config.boxes is not None:
            meta["objects"] = image.objects
        text = None
        pseudo = self.config.pseudo_pairs
        if pseudo.enabled:
            if not labels:
                detail = f"ImageID {row.image_id!r} has no positive human-verified label"
                return Reject(self.name, row.location, Reason.NO_LABEL, detail, key)
            text = pseudo_caption(key, labels, pseudo)
        if self.config.images is None:
            image = image_reference(None, "", meta.get("url"))
            if image is None:
                return Reject(self.name, row.location, Reason.MALFORMED, "empty OriginalURL", key)
        else:
            image = {"image_path": source_path(self.config.root, self.config.images, f"{row.image_id}.jpg")}
        return Candidate(
            key=key,
            source=self.name,
            modality=Modality.PAIR if text is not None else Modality.IMAGE,
            source_id=row.image_id,
            location=row.location,
            text=text,
            meta=meta,
            **image,
        )


def _parse_part(part: str) -> tuple[int, int]:
    match = _PART.match(part)
    if not match:
        raise ValueError(f"not an OpenImages part: {part!r} (expected bucket-I-of-N)")
    bucket, buckets = int(match.group(1)), int(match.group(2))
    if not 0 <= bucket < buckets:
        raise ValueError(f"not an OpenImages part: {part!r} (bucket out of range)")
    return bucket, buckets


def _number(text: str) -> float:
    """A finite float, or NaN for anything else (NaN compares unequal to everything)."""
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def _box(values: list[str]) -> list[float] | None:
    """``[XMin, XMax, YMin, YMax]`` strings -> ``[x1, y1, x2, y2]`` clipped to [0, 1], or ``None``."""
    x1, x2, y1, y2 = (_number(v) for v in values)
    if not x1 <= x2 or not y1 <= y2:  # also false for NaN
        return None
    return [round(min(max(v, 0.0), 1.0), 6) for v in (x1, y1, x2, y2)]


def load_classes(path: str) -> dict[str, str]:
    """LabelName -> DisplayName from ``class-descriptions-boxable.csv`` (no header: ``/m/011k07,Tortoise``)
    or ``oidv7-class-descriptions.csv`` (header ``LabelName,DisplayName``), detected by the first row.
    Not records, so a bad row raises ``SourceError`` (file and line): its labels could not be named.
    Names are lower-cased (``Tortoise`` -> ``tortoise``), as every other source's labels are, so tags, tag
    queries and label statistics agree across sources."""
    rows = iter_csv(path)
    first = next(rows, None)
    if first is None:
        raise SourceError(f"{path}: empty file, expected class descriptions")
    line, fields, problem = first
    fields = [fields[0].lstrip("\ufeff"), *fields[1:]] if fields else fields
    if fields == list(CLASSES_HEADER):
        body: Iterator = rows
    elif len(fields) == 2 and fields[0].startswith("/") and problem is None:
        body = chain([(line, fields, problem)], rows)
    else:
        raise SourceError(
            f"{path}: expected the header LabelName,DisplayName (oidv7-class-descriptions.csv) or "
            "headerless rows like /m/011k07,Tortoise (class-descriptions-boxable.csv), "
            f"got {','.join(fields)[:200]!r}"
        )
    classes: dict[str, str] = {}
    for line, fields, problem in body:
        if problem or len(fields) != 2 or not fields[0]:
            raise SourceError(f"{path}:{line}: expected LabelName,DisplayName, got {problem or fields!r}")
        classes.setdefault(fields[0], fields[1].lower())
    return classes
