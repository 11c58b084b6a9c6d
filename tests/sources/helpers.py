"""Fixture builders shared by the reader tests: tiny real images, JSON files, record bookkeeping."""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from schemas.records import Candidate, Reject


def jpeg_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_jpeg(path: Path, color: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(color))
    return path


def write_json(path: Path, data: Any, indent: int | None = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False), encoding="utf-8")
    return path


def read_all(reader) -> list[Candidate | Reject]:
    """Every record of every part; the reader must survive pickling (Beam ships it to workers)."""
    reader = pickle.loads(pickle.dumps(reader))
    return [record for part in reader.parts() for record in reader.read(part)]


def split(records: Iterable[Candidate | Reject]) -> tuple[list[Candidate], list[Reject]]:
    records = list(records)
    candidates = [r for r in records if isinstance(r, Candidate)]
    rejects = [r for r in records if isinstance(r, Reject)]
    assert len(candidates) + len(rejects) == len(records)
    return candidates, rejects


def by_location(rejects: Iterable[Reject]) -> dict[str, str]:
    """location -> reason value; asserts each location is rejected once."""
    result: dict[str, str] = {}
    for reject in rejects:
        assert reject.location not in result, f"{reject.location} rejected twice"
        result[reject.location] = reject.reason.value
    return result
