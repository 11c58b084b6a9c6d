"""Shared pieces of the format writers: the ground-truth tally, deterministic files and archives."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter
from collections.abc import Iterable
from typing import Any

from schemas.records import Modality, Reason

# Fixed archive metadata, so that the same seed gives byte-identical archives.
MTIME = 1_500_000_000  # 2017-07-14


class Tally:
    """What ingest must make of one source: samples written and rejects by reason.

    Writers call ``sample`` for every record that must become a sample and ``reject`` for every
    record they plant to be refused, as they write it, so the oracle is bookkeeping of the generation
    itself (docs/SOURCES.md decides which reason applies), never a re-read of the files.
    """

    def __init__(self, name: str, kind: str, modality: Modality, sentences: set[str] | None = None) -> None:
        self.name = name
        self.kind = kind
        self.modality = Modality(modality)
        self.samples = 0
        self.rejects: Counter[str] = Counter()
        self.planted: list[dict[str, Any]] = []
        # Normalised sentences written so far, shared by the sources of one generation: template
        # sentences are drawn until new (prose.sentence), so only planted copies repeat.
        self.sentences: set[str] = set() if sentences is None else sentences
        self.copies: list[tuple[str, str]] = []  # (copied sentence, sample key) of planted text copies

    def sample(self, count: int = 1) -> None:
        self.samples += count

    def reject(self, reason: Reason, where: str, what: str, count: int = 1) -> None:
        """``count`` rejects for ``reason``; ``where`` names the file (and line when line-based)."""
        reason = Reason(reason)
        self.rejects[reason.value] += count
        self.planted.append({"reason": reason.value, "count": count, "where": where, "what": what})

    def copy(self, sentence: str, key: str) -> None:
        """Sample ``key`` holds the planted copy of ``sentence`` (clean must find it a duplicate)."""
        self.copies.append((sentence, key))

    def as_dict(self) -> dict[str, Any]:
        rejects = {reason: n for reason, n in sorted(self.rejects.items()) if n}
        return {
            "kind": self.kind,
            "modality": self.modality.value,
            "samples": self.samples,
            "rejects": rejects,
            "records": self.samples + sum(rejects.values()),
            "planted": self.planted,
        }


def write_bytes(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_lines(path: str, lines: Iterable[bytes | str]) -> None:
    """Each line followed by ``\\n``; ``bytes`` lines are written as they are (planted bad encodings)."""
    write_bytes(path, b"".join((ln if isinstance(ln, bytes) else ln.encode("utf-8")) + b"\n" for ln in lines))


def write_json(path: str, obj: Any) -> None:
    """Like the releases: ``json.dump`` defaults (ASCII, ``", "`` and ``": "`` separators), no indent."""
    write_text(path, json.dumps(obj))


def tar_bytes(members: Iterable[tuple[str, bytes]], mode: int = 0o644) -> bytes:
    """A plain ustar archive with fixed mtime/uid/gid/owner names, members in the order given."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = MTIME
            info.mode = mode
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def garbage(rng, size: int = 600) -> bytes:
    """Bytes that no image decoder accepts (for a planted corrupt image)."""
    return b"this is not an image\n" + bytes(rng.getrandbits(8) for _ in range(size))
