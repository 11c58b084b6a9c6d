"""Visual Genome region descriptions: one sample per image (UNIMO App. A Table 5, UNITER Table 1).

Each region phrase with its box is an image-text pair in the papers (5.06M of them); here an image's
regions travel together in ``meta`` and its text is the phrase with the lowest region id, so images are
not repeated 50 times. ``objects.json``, when configured, adds ground-truth object tags (mu-VLA §3.2).
The big JSON files are streamed (jsonstream); regions and objects are grouped by image while streaming.
The image file (last part of the image's ``url``) is searched in every folder of ``image_dirs``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipelines import storage
from pipelines.sources import Reader, SourceError
from pipelines.sources.common import (
    box_from,
    candidate,
    clean_text,
    element_location,
    id_order,
    is_id,
    is_size,
    json_array_elements,
    pixel_box_of,
    sample_key,
    surrogate_reject,
)
from schemas.records import Candidate, Reason, Reject

_REGION_BOX = ("x", "y", "width", "height")
_OBJECT_BOX = ("x", "y", "w", "h")


@dataclass
class _Image:
    index: int  # position in image_data.json
    url: str
    width: float
    height: float
    coco_id: Any
    flickr_id: Any

    @property
    def file_name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


class VisualGenomeReader(Reader):
    """A single part: regions must be grouped by image across the whole file anyway."""

    def parts(self) -> list[str]:
        return [self.config.path(self.config.regions)]

    def read(self, part: str) -> Iterator[Candidate | Reject]:
        files = self._image_files()  # first: absent folders fail before the long streaming
        images: dict[Any, _Image] = {}
        yield from self._read_images(images)
        regions: dict[Any, list[tuple[Any, str, list[float]]]] = defaultdict(list)
        yield from self._read_regions(part, images, regions)
        objects: dict[Any, list[dict]] | None = None
        if self.config.objects is not None:
            objects = defaultdict(list)
            yield from self._read_objects(images, objects)
        rel = self.config.relative(self.config.path(self.config.image_data))
        for image_id, image in images.items():
            objs = None if objects is None else objects.get(image_id, [])
            location = element_location(rel, image.index)
            yield self._sample(image_id, image, location, regions.get(image_id, []), objs, files)

    # --- image_data.json --------------------------------------------------------------------------

    def _read_images(self, images: dict[Any, _Image]) -> Iterator[Reject]:
        path = self.config.path(self.config.image_data)
        rel = self.config.relative(path)
        for index, element in json_array_elements(path):
            location = element_location(rel, index)
            image = _image(index, element)
            if image is None:
                detail = "image needs image_id, url, width, height"
                yield Reject(self.name, location, Reason.MALFORMED, detail)
                continue
            image_id = _image_id(element)
            if image_id in images:
                key = sample_key(self.name, image_id)
                yield Reject(self.name, location, Reason.DUPLICATE_ID, f"image id {image_id}", key)
            else:
                images[image_id] = image

    # --- region_descriptions.json -----------------------------------------------------------------

    def _read_regions(
        self, path: str, images: dict[Any, _Image], regions: dict[Any, list]
    ) -> Iterator[Reject]:
        rel = self.config.relative(path)
        for index, element in json_array_elements(path):
            location = element_location(rel, index)
            if not isinstance(element, dict) or not isinstance(element.get("regions"), list):
                yield Reject(self.name, location, Reason.MALFORMED, "element needs a regions list")
                continue
            image_id = _image_id(element)
            if not element["regions"] and not (is_id(image_id) and image_id in images):
                yield self._unknown(location, image_id, "regions")
            for number, region in enumerate(element["regions"]):
                where = element_location(rel, index, "regions", number)
                yield from self._add_region(images, regions, image_id, region, where)

    def _add_region(
        self, images: dict[Any, _Image], regions: dict[Any, list], image_id: Any, region: Any, location: str
    ) -> Iterator[Reject]:
        if not _is_region(region):
            detail = "region needs region_id, phrase, x, y, width, height"
            yield Reject(self.name, location, Reason.MALFORMED, detail)
            return
        image_id = region.get("image_id", image_id)
        image = images.get(image_id) if is_id(image_id) else None
        phrase = clean_text(region["phrase"])
        if image is None:
            yield self._unknown(location, image_id, "region")
        elif bad := surrogate_reject(region["phrase"], self.name, location):
            yield bad
        elif phrase is None:
            detail = f"empty phrase of region {region['region_id']}"
            yield Reject(self.name, location, Reason.EMPTY_TEXT, detail)
        else:
            box = box_from(region, _REGION_BOX, image.width, image.height)
            regions[image_id].append((region["region_id"], phrase, box))

    # --- objects.json -----------------------------------------------------------------------------

    def _read_objects(self, images: dict[Any, _Image], objects: dict[Any, list]) -> Iterator[Reject]:
        path = self.config.path(self.config.objects)
        rel = self.config.relative(path)
        for index, element in json_array_elements(path):
            location = element_location(rel, index)
            if not isinstance(element, dict) or not isinstance(element.get("objects"), list):
                yield Reject(self.name, location, Reason.MALFORMED, "element needs an objects list")
                continue
            image_id = _image_id(element)
            image = images.get(image_id) if is_id(image_id) else None
            if image is None:
                yield self._unknown(location, image_id, "objects")
                continue
            for number, obj in enumerate(element["objects"]):
                where = element_location(rel, index, "objects", number)
                item = _object(obj, image)
                if item is None:
                    yield Reject(self.name, where, Reason.MALFORMED, "object needs names, x, y, w, h")
                else:
                    objects[image_id].append(item)

    # --- samples ----------------------------------------------------------------------------------

    def _image_files(self) -> dict[str, str]:
        """File name -> path over all ``image_dirs`` (the first folder holding a name wins)."""
        files: dict[str, str] = {}
        folders = [self.config.path(d) for d in self.config.image_dirs]
        present = [f for f in folders if storage.exists(f)]
        if not present:
            raise SourceError(f"none of the image folders exists: {', '.join(folders)}")
        for folder in present:
            for path in storage.glob(storage.join(folder, "*")):
                files.setdefault(path.replace("\\", "/").rsplit("/", 1)[-1], path)
        return files

    def _sample(
        self,
        image_id: Any,
        image: _Image,
        location: str,
        regions: list[tuple[Any, str, list[float]]],
        objects: list[dict] | None,
        files: dict[str, str],
    ) -> Candidate | Reject:
        key = sample_key(self.name, image_id)
        if not regions:
            return Reject(self.name, location, Reason.EMPTY_TEXT, "image has no valid region", key)
        path = files.get(image.file_name)
        if path is None:
            detail = f"{image.file_name} in none of {', '.join(self.config.image_dirs)}"
            return Reject(self.name, location, Reason.MISSING_IMAGE, detail, key)
        regions = sorted(regions, key=lambda r: id_order(r[0]))
        meta: dict[str, Any] = {
            "image_id": image_id,
            "url": image.url,
            "coco_id": image.coco_id,
            "flickr_id": image.flickr_id,
            "width": image.width,
            "height": image.height,
            "regions": [{"region_id": rid, "phrase": phrase, "box": box} for rid, phrase, box in regions],
        }
        if objects is not None:
            meta["objects"] = objects
        return candidate(self.name, image_id, location, meta, text=regions[0][1], image_path=path)

    def _unknown(self, location: str, image_id: Any, what: str) -> Reject:
        return Reject(self.name, location, Reason.UNKNOWN_REFERENCE, f"{what} of unknown image {image_id!r}")


def _image_id(element: dict) -> Any:
    """VG writes the image id as ``image_id`` (image_data, objects) or ``id`` (region_descriptions)."""
    return element.get("image_id", element.get("id")) if isinstance(element, dict) else None


def _is_region(region: Any) -> bool:
    return (
        isinstance(region, dict)
        and is_id(region.get("region_id"))
        and isinstance(region.get("phrase"), str)
        and pixel_box_of(region, _REGION_BOX) is not None
    )


def _image(index: int, element: Any) -> _Image | None:
    ok = (
        isinstance(element, dict)
        and is_id(_image_id(element))
        and isinstance(element.get("url"), str)
        and is_size(element.get("width"))
        and is_size(element.get("height"))
    )
    if not ok:
        return None
    ids = element.get("coco_id"), element.get("flickr_id")
    return _Image(index, element["url"], element["width"], element["height"], *ids)


def _object(obj: Any, image: _Image) -> dict | None:
    """``{names, synsets, box}`` of an objects.json object (older releases have ``name``, not ``names``)."""
    if not isinstance(obj, dict):
        return None
    names = obj.get("names", [obj["name"]] if "name" in obj else None)
    synsets = obj.get("synsets", [])
    box = box_from(obj, _OBJECT_BOX, image.width, image.height)
    valid_names = isinstance(names, list) and names and all(isinstance(n, str) for n in names)
    if not valid_names or not isinstance(synsets, list) or box is None:
        return None
    return {"names": names, "synsets": synsets, "box": box}
