"""Sample keys and shard assignment (DESIGN.md "The corpus on disk").

A key is stable, unique and WebDataset-safe: only ``[a-z0-9_-]`` (a dot would split the key from the
member extension). The original id always stays in the sample's metadata.
"""

from __future__ import annotations

import hashlib
import re

_UNSAFE = re.compile(r"[^a-z0-9_-]+")


def _digest(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8")).digest()


def make_key(source: str, *source_id: object) -> str:
    """``<source>-<id parts>``; ids that needed rewriting get a short hash so that keys stay unique."""
    raw = "-".join(str(part) for part in source_id)
    slug = _UNSAFE.sub("_", raw.lower()).strip("_") or "x"
    if slug != raw:
        slug = f"{slug}-{_digest(raw).hex()[:8]}"
    head = _UNSAFE.sub("_", source.lower())
    return f"{head}-{slug}"


def shard_of(key: str, num_shards: int) -> int:
    """The shard a key lives in: a function of the key alone, so reruns put it in the same place."""
    return int.from_bytes(_digest(key)[:8], "big") % num_shards


def shard_name(shard: int) -> str:
    return f"{shard:05d}"
