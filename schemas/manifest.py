"""The corpus manifest, ``corpus.json``: what ran, with which parameters, and what it counted.

Plain JSON (sorted keys, no timestamps) so that the same run writes the same bytes. Layout::

    {"schema_version": 1,
     "stages": {"ingest": {"<source>": {"kind": ..., "params": {...}, "params_hash": ...,
                                        "shards": N, "counts": {...}}}}}
"""

from __future__ import annotations

import json
from typing import Any

from schemas import SCHEMA_VERSION

MANIFEST_NAME = "corpus.json"


def empty_manifest() -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "stages": {}}


def parse_manifest(text: str, where: str) -> dict[str, Any]:
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from e
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        found = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise ValueError(f"{where}: manifest schema_version {found!r}, this code reads {SCHEMA_VERSION}")
    if not isinstance(manifest.get("stages"), dict):
        raise ValueError(f"{where}: 'stages' must be a mapping")
    return manifest


def with_entry(manifest: dict[str, Any], stage: str, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``manifest`` in which ``stage``/``name`` is replaced by ``entry``; others stay."""
    stages = {**manifest["stages"], stage: {**manifest["stages"].get(stage, {}), name: entry}}
    return {**manifest, "stages": stages}


def dump_manifest(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
