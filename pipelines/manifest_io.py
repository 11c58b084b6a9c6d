"""Reading and updating ``corpus.json`` on any FileSystems path (schemas/manifest.py has the format)."""

from __future__ import annotations

from typing import Any

from pipelines import storage
from schemas.manifest import MANIFEST_NAME, dump_manifest, empty_manifest, parse_manifest, with_entry


def read_manifest(root: str) -> dict[str, Any]:
    path = storage.join(root, MANIFEST_NAME)
    return parse_manifest(storage.read_bytes(path).decode(), path) if storage.exists(path) else empty_manifest()


def update_manifest(root: str, stage: str, entries: dict[str, dict[str, Any]]) -> None:
    """Replace the entries of ``stage`` named in ``entries``; the rest of the manifest stays. Atomic."""
    manifest = read_manifest(root)
    for name, entry in entries.items():
        manifest = with_entry(manifest, stage, name, entry)
    path = storage.join(root, MANIFEST_NAME)
    storage.write_whole(path, dump_manifest(manifest).encode())
