"""Helpers every reader shares (docs/SOURCES.md "Conventions for all readers").

File access that fails with ``SourceError`` naming the file, text decoding that yields a ``Reject``
instead of raising, record locations, boxes and candidate construction. Add functions here rather than
copying them into a reader; do not rename existing ones (other readers use them).
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import posixpath
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from pipelines import storage
from pipelines.sources import SourceError
from pipelines.sources.jsonstream import iter_json_array, iter_json_object
from schemas.keys import make_key
from schemas.records import Candidate, Modality, Reason, Reject

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


# --- locations (relpath is relative to the source root) -------------------------------------------


def line_location(relpath: str, line: int) -> str:
    """``relpath:LINE`` for a line of a text file (1-based)."""
    return f"{relpath}:{line}"


def element_location(relpath: str, *path: int | str) -> str:
    """``relpath[INDEX]`` for an element of a JSON list (0-based); nested steps append ``[STEP]``,
    e.g. ``captions.json[annotations][3]`` or ``region_descriptions.json[7][regions][2]``."""
    return relpath + "".join(f"[{step}]" for step in path)


def member_location(relpath: str, member: str) -> str:
    """``relpath::member`` for a member of an archive."""
    return f"{relpath}::{member}"


# --- file access ----------------------------------------------------------------------------------


def open_source(path: str) -> IO[bytes]:
    """Open a raw file, or raise ``SourceError`` naming it."""
    try:
        return storage.open_read(path)
    except Exception as e:  # Beam wraps OSError in BeamIOError, remote filesystems raise their own.
        raise SourceError(f"{path}: cannot open: {e}") from e


def require_exists(path: str, what: str = "file") -> None:
    if not storage.exists(path):
        raise SourceError(f"{path}: no such {what}")


def source_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """``pipelines.storage.iter_lines`` with a missing or unreadable file as ``SourceError``, and a leading
    byte-order mark (Windows editors write one) removed from line 1."""
    require_exists(path)
    try:
        for number, line in storage.iter_lines(path):
            yield number, strip_bom(line) if number == 1 else line
    except OSError as e:
        raise SourceError(f"{path}: cannot read: {e}") from e


def strip_bom(data: bytes) -> bytes:
    """``data`` without a leading UTF-8 byte-order mark: the start of a file, not text."""
    return data.removeprefix(codecs.BOM_UTF8)


def json_array_elements(path: str) -> Iterator[tuple[int, Any]]:
    """Stream ``(index, element)`` of a file holding a top-level JSON array (jsonstream)."""
    require_exists(path)
    with open_source(path) as stream:
        yield from iter_json_array(stream, path)


def json_object_members(path: str) -> Iterator[tuple[str, int | None, Any]]:
    """Stream the members of a file holding a top-level JSON object, arrays element by element."""
    require_exists(path)
    with open_source(path) as stream:
        yield from iter_json_object(stream, path)


def list_files(folder: str, extensions: tuple[str, ...]) -> list[str]:
    """Files under ``folder`` (recursive) whose name ends with one of ``extensions`` (any case), sorted."""
    return [path for path, _, _ in list_file_stats(folder, extensions)]


def list_file_stats(folder: str, extensions: tuple[str, ...]) -> list[tuple[str, int, float]]:
    """``list_files`` with each file's size and mtime (the same listing)."""
    require_exists(folder, "folder")
    try:
        found = storage.listing(storage.join(folder, "**"))
    except Exception as e:
        raise SourceError(f"{folder}: cannot list: {e}") from e
    return [entry for entry in found if entry[0].lower().endswith(extensions)]


@dataclass(frozen=True)
class InputFile:
    """One input of a source as its parameters hash sees it (``Reader.inputs``)."""

    path: str  # relative to the source root
    size: int
    mtime: float
    key: str | None = None  # the one sample this file is, whose shard alone depends on it; None: any shard

    def row(self) -> list:
        return [self.path, self.size, self.mtime]


def listed_inputs(root: str, entries: list[tuple[str, int, float]]) -> list[InputFile]:
    """``InputFile`` of each ``(path, size, mtime)`` of a listing."""
    return [InputFile(relative_to(path, root), size, mtime) for path, size, mtime in entries]


def input_files(root: str, paths: list[str]) -> list[InputFile]:
    """``InputFile`` of each of ``paths`` that exists; the others are the readers' business."""
    found = storage.stat(list(dict.fromkeys(paths)))
    return listed_inputs(root, [(path, size, mtime) for path, (size, mtime) in sorted(found.items())])


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def relative_to(path: str, folder: str) -> str:
    """``path`` relative to ``folder``, with ``/`` separators (also for URIs)."""
    return posixpath.relpath(path.replace("\\", "/"), folder.replace("\\", "/"))


# --- text -----------------------------------------------------------------------------------------


def decode_utf8(raw: bytes, source: str, location: str, key: str | None = None) -> str | Reject:
    """The text of ``raw``, or a ``non_utf8`` reject saying where the first bad byte is."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        detail = f"invalid UTF-8 at byte {e.start}: {raw[e.start:e.start + 4]!r}"
        return Reject(source, location, Reason.NON_UTF8, detail, key)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def surrogate_reject(text: str, source: str, location: str, key: str | None = None) -> Reject | None:
    """A ``non_utf8`` reject if ``text`` holds a lone surrogate (valid in a JSON string as ``\\ud800``, but
    no character: it cannot be written as UTF-8), else ``None``."""
    found = _LONE_SURROGATE.search(text)
    if found is None:
        return None
    detail = f"unpaired surrogate {found.group()!a} at character {found.start()}: not valid Unicode text"
    return Reject(source, location, Reason.NON_UTF8, detail, key)


def surrogate_field(value: Any, where: str) -> str | None:
    """The dotted path (``meta.objects[0].names[1]``) of the first string in ``value`` (JSON-like: dicts,
    lists, strings) that holds a lone surrogate, or ``None``."""
    if isinstance(value, str):
        return where if _LONE_SURROGATE.search(value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for name, item in items:
        step = f"{where}.{name}" if isinstance(value, dict) else f"{where}[{name}]"
        found = (surrogate_field(name, f"{step} (the key)") if isinstance(name, str) else None) or \
            surrogate_field(item, step)
        if found:
            return found
    return None


def clean_text(text: str) -> str | None:
    """Captions are stored stripped; an empty or whitespace-only one is no caption (``None``)."""
    text = text.strip()
    return text or None


def caption_or_reject(raw: bytes, source: str, location: str, key: str | None = None) -> str | Reject:
    """A caption from raw bytes: ``non_utf8`` or ``empty_text`` reject, else the stripped text."""
    text = decode_utf8(raw, source, location, key)
    if isinstance(text, Reject):
        return text
    return clean_text(text) or Reject(source, location, Reason.EMPTY_TEXT, "empty caption", key)


# --- numbers and boxes ----------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    """A finite JSON number (``bool`` is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_id(value: Any) -> bool:
    """A record id as releases write them: an integer or a non-empty string."""
    return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, str) and value != ""


def id_order(value: int | str) -> tuple[bool, int | str]:
    """Sort key for ids that puts integers (numerically) before strings, so mixed ids still sort."""
    return isinstance(value, str), value


def is_size(value: Any) -> bool:
    """A usable image side length: a positive number."""
    return is_number(value) and value > 0


def normalise_box(x: float, y: float, w: float, h: float, width: float, height: float) -> list[float]:
    """Pixel ``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` normalised by the image size and clipped to [0, 1]
    (annotations sometimes overhang the image by a pixel). Rounded to 6 places for stable output."""

    def clip(value: float) -> float:
        return round(min(max(value, 0.0), 1.0), 6)

    return [clip(x / width), clip(y / height), clip((x + w) / width), clip((y + h) / height)]


def pixel_box(values: Any) -> tuple[float, float, float, float] | None:
    """``values`` as a pixel ``(x, y, w, h)`` if it is four numbers with w, h >= 0, else ``None``."""
    if not isinstance(values, (list, tuple)) or len(values) != 4 or not all(map(is_number, values)):
        return None
    x, y, w, h = values
    return (x, y, w, h) if w >= 0 and h >= 0 else None


def pixel_box_of(item: dict, keys: tuple[str, str, str, str]) -> tuple[float, float, float, float] | None:
    """``pixel_box`` of the values of ``item`` under ``keys`` (its x, y, w, h fields)."""
    return pixel_box([item.get(k) for k in keys])


def box_from(item: dict, keys: tuple[str, str, str, str], width: float, height: float) -> list[float] | None:
    """The normalised box of ``item`` whose pixel x, y, w, h are under ``keys``, or ``None``."""
    xywh = pixel_box_of(item, keys)
    return None if xywh is None else normalise_box(*xywh, width, height)


# --- records --------------------------------------------------------------------------------------


def candidate(
    source: str,
    source_id: Any,
    location: str,
    meta: dict[str, Any],
    *,
    text: str | None = None,
    image_path: str | None = None,
    image_bytes: bytes | None = None,
    image_url: str | None = None,
) -> Candidate:
    """A candidate keyed ``make_key(source, source_id)``; the modality follows from what it carries."""
    has_image = image_path is not None or image_bytes is not None or image_url is not None
    if text is None:
        modality = Modality.IMAGE
    else:
        modality = Modality.PAIR if has_image else Modality.TEXT
    return Candidate(
        key=make_key(source, source_id),
        source=source,
        modality=modality,
        source_id=str(source_id),
        location=location,
        text=text,
        image_path=image_path,
        image_bytes=image_bytes,
        image_url=image_url,
        meta=meta,
    )


def sample_key(source: str, source_id: Any) -> str:
    """The key a record's sample has (or would have had): for rejects that stand for a whole sample."""
    return make_key(source, source_id)


# --- CSV (OpenImages) -----------------------------------------------------------------------------

_SURROGATE = re.compile("[\udc80-\udcff]")


def iter_csv(path: str) -> Iterator[tuple[int, list[str], str | None]]:
    """``(line, fields, problem)`` per CSV record (blank lines skipped): ``line`` is where the record
    starts (quoted fields may span lines), ``problem`` is ``None`` or why the record cannot be used
    (bytes that are not UTF-8, a csv syntax error). The csv module, since fields hold quoted commas."""
    require_exists(path)
    with open_source(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.reader(text)
        last = 0
        while True:
            try:
                fields = next(reader)
                problem = "invalid UTF-8" if any(_SURROGATE.search(f) for f in fields) else None
            except StopIteration:
                return
            except csv.Error as e:
                fields, problem = [], f"CSV error: {e}"
            start, last = last + 1, reader.line_num
            if fields or problem:
                yield start, fields, problem


def csv_records(
    source: str,
    path: str,
    relpath: str,
    header: Sequence[str],
    keep: Callable[[list[str]], bool] | None = None,
) -> Iterator[tuple[str, list[str]] | Reject]:
    """Data rows of a CSV file whose first record must be ``header`` exactly: ``(location, fields)``,
    or a ``malformed`` reject for a row that does not parse or has the wrong number of fields.
    ``keep`` (given the raw fields, also of a bad row) selects this worker's rows of a split file.
    A wrong or missing header raises ``SourceError`` naming the file and the expected header."""
    rows = iter_csv(path)
    expected = ",".join(header)
    first = next(rows, None)
    if first is None:
        raise SourceError(f"{path}: empty file, expected the header {expected}")
    found = [f.lstrip("\ufeff") if i == 0 else f for i, f in enumerate(first[1])]
    if found != list(header):
        raise SourceError(f"{path}: expected the header {expected}, got {','.join(found)[:200]}")
    for line, fields, problem in rows:
        if keep is not None and not keep(fields):
            continue
        location = line_location(relpath, line)
        if problem is None and len(fields) != len(header):
            problem = f"expected {len(header)} fields ({expected}), got {len(fields)}"
        if problem is not None:
            yield Reject(source, location, Reason.MALFORMED, problem)
        else:
            yield location, fields


def source_path(root: str, *parts: str) -> str:
    """``root`` joined with config paths, skipping ``.`` and empty parts (``images: .``)."""
    parts = tuple(p for p in parts if p not in ("", "."))
    return storage.join(root, *parts) if parts else root


def match_files(root: str, pattern: str) -> list[str]:
    """Files under ``root`` matching ``pattern``, sorted. ``**/`` also matches no folder at all, as in
    Python's glob (Beam's ``**`` needs at least one), so ``**/*.txt`` finds ``root/a.txt`` too. No match
    raises ``SourceError``: a source that reads nothing is a wrong path, not an empty corpus."""
    return [path for path, _, _ in match_file_stats(root, pattern)]


def match_file_stats(root: str, pattern: str) -> list[tuple[str, int, float]]:
    """``match_files`` with each file's size and mtime (the same listing)."""
    patterns = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
    try:
        found = sorted({entry for pat in patterns for entry in storage.listing(storage.join(root, pat))})
    except Exception as e:
        raise SourceError(f"{root}: cannot list {pattern}: {e}") from e
    if not found:
        raise SourceError(f"{root}: no files match {pattern}")
    return found


def image_reference(folder: str | None, file_name: str, url: str | None) -> dict[str, str] | None:
    """Where a URL-list source's image is: ``image_path`` in its local folder, or, with ``images: null``
    in the config, ``image_url`` for the shard writer to fetch; None when there is no URL to fetch."""
    if folder is not None:
        return {"image_path": storage.join(folder, file_name)}
    return {"image_url": url} if url else None
