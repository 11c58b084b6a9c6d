"""Where the bytes of a WebDataset output go: image, caption and metadata members, tar headers and padding,
and the tables beside the tars; and, for two outputs of the same URLs, which stored images are the same.

Two tools' shards of the same images can differ in size for reasons that have nothing to do with the
images (issue 15 point 4: img2dataset's tars were 1.5x ours), so a size is only compared kind by kind.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
from collections import Counter
from collections.abc import Callable

IMAGE_EXTENSIONS = {"jpg", "jpeg", "png", "webp"}
KINDS = ("image", "txt", "json", "other", "headers", "padding", "tables")


def tar_bytes(tar_path: str) -> Counter:
    """One tar's size by kind: its members' data (``image``, ``txt``, ``json``, ``other``), ``headers``
    (a member's header blocks, PAX or GNU extended headers included) and ``padding`` (data rounded up to
    512-byte blocks, end-of-archive blocks, record fill); the kinds sum to the file's size."""
    sizes: Counter = Counter()
    with tarfile.open(tar_path) as tar:
        for member in tar:
            sizes[_kind(member.name)] += member.size
            sizes["headers"] += member.offset_data - member.offset
    sizes["padding"] = os.path.getsize(tar_path) - sum(sizes.values())
    return sizes


def output_bytes(folder: str) -> Counter:
    """Every tar under ``folder`` by kind (``tar_bytes``), and every other file (parquet indexes, status
    tables, stats) as ``tables``."""
    sizes: Counter = Counter()
    for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True):
        if path.endswith(".tar"):
            sizes += tar_bytes(path)
        elif os.path.isfile(path):
            sizes["tables"] += os.path.getsize(path)
    return sizes


def stored_images(folder: str, url_of: Callable[[dict], str]) -> dict[str, bytes]:
    """The image member of every sample under ``folder`` by its URL, which ``url_of`` reads from the
    sample's ``json`` member (each tool puts it elsewhere)."""
    from pipelines.raw_shard import iter_samples

    images = {}
    for path in glob.glob(os.path.join(folder, "**", "*.tar"), recursive=True):
        for sample in iter_samples(path):
            image = next((sample[e] for e in IMAGE_EXTENSIONS if e in sample), None)
            if image is not None:
                images[url_of(json.loads(sample["json"]))] = image
    return images


def compare_images(ours: dict[str, bytes], theirs: dict[str, bytes]) -> dict:
    """Images both stored for the same URL: how many, how many byte for byte the same, and ours/theirs in
    bytes over the others."""
    common = sorted(set(ours) & set(theirs))
    differing = [url for url in common if ours[url] != theirs[url]]
    ratio = (sum(len(ours[u]) for u in differing) / sum(len(theirs[u]) for u in differing)) if differing else 1.0
    return {"common": len(common), "identical": len(common) - len(differing), "differing_ratio": ratio}


def _kind(name: str) -> str:
    extension = name.rpartition(".")[2].lower()
    return "image" if extension in IMAGE_EXTENSIONS else extension if extension in ("txt", "json") else "other"
