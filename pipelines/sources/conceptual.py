"""Conceptual Captions (CC3M; UNIMO App. A Table 5, UNITER Table 1: 3.0M pairs), in its two raw forms.

``ConceptualCaptionsReader``: the release's headerless ``caption<TAB>url`` TSV, with images a user
downloaded into a folder by 0-based row. ``Img2datasetReader``: the folder img2dataset writes, where
the parquet lists every URL it tried (failures included) and the tar holds what it got.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq

from pipelines import storage
from pipelines.sources import Reader, SourceError
from pipelines.sources.common import (
    InputFile,
    candidate,
    clean_text,
    decode_utf8,
    element_location,
    image_reference,
    is_image_name,
    line_location,
    listed_inputs,
    member_location,
    open_source,
    require_exists,
    sample_key,
    source_lines,
)
from schemas.records import Candidate, Reason, Reject


class ConceptualCaptionsReader(Reader):
    """One part: the TSV. Row ``i`` (0-based) is the sample's id and names its image file."""

    def parts(self) -> list[str]:
        return [self.config.path(self.config.tsv)]

    def read(self, part: str) -> Iterator[Candidate | Reject]:
        rel = self.config.relative(part)
        images = self.config.path(self.config.images) if self.config.images is not None else None
        for number, raw in source_lines(part):
            row = number - 1
            yield self._row(row, raw, line_location(rel, number), images)

    def _row(self, row: int, raw: bytes, location: str, images: str | None) -> Candidate | Reject:
        key = sample_key(self.name, row)
        line = decode_utf8(raw, self.name, location, key)
        if isinstance(line, Reject):
            return line
        fields = line.split("\t")
        if len(fields) != 2:
            detail = f"expected caption<TAB>url, got {len(fields)} tab-separated field(s)"
            return Reject(self.name, location, Reason.MALFORMED, detail, key)
        caption = clean_text(fields[0])
        if caption is None:
            return Reject(self.name, location, Reason.EMPTY_TEXT, "empty caption", key)
        url = fields[1].strip()
        image = image_reference(images, self.config.image_pattern.format(row=row), url)
        if image is None:
            return Reject(self.name, location, Reason.MALFORMED, "empty url", key)
        return candidate(self.name, row, location, {"url": url, "row": row}, text=caption, **image)


# img2dataset parquet columns this reader uses; the others (exif, original sizes) are not needed.
_REQUIRED_COLUMNS = ("key", "url", "caption", "status", "error_message")
_OPTIONAL_COLUMNS = ("width", "height", "sha256")


class Img2datasetReader(Reader):
    """Parts: the ``NNNNN`` shards, each a ``NNNNN.parquet`` + ``NNNNN.tar`` pair (given without suffix)."""

    def parts(self) -> list[str]:
        root = self.config.root
        require_exists(root, "folder")
        paths = [path for ext in (".parquet", ".tar") for path in storage.glob(storage.join(root, "*" + ext))]
        stems = {path.rsplit(".", 1)[0] for path in paths}
        if not stems:
            raise SourceError(f"{root}: no img2dataset shards (NNNNN.parquet + NNNNN.tar)")
        return sorted(stems)

    def inputs(self, parts: list[str]) -> list[InputFile]:
        """Every shard's parquet and tar with size and mtime."""
        root = self.config.root
        return listed_inputs(
            root, sorted(e for ext in (".parquet", ".tar") for e in storage.listing(storage.join(root, "*" + ext)))
        )

    def read(self, part: str) -> Iterator[Candidate | Reject]:
        parquet, tar = part + ".parquet", part + ".tar"
        parquet_rel = self.config.relative(parquet)
        rows = _read_rows(parquet)
        require_exists(tar)
        by_key: dict[str, tuple[str, dict[str, Any]]] = {}  # key -> (location, row)
        for index, row in enumerate(rows):
            location = element_location(parquet_rel, index)
            if row["key"] in by_key:
                yield Reject(self.name, location, Reason.DUPLICATE_ID, f"key {row['key']}")
            else:
                by_key[row["key"]] = (location, row)
        for key, members in _tar_samples(tar):
            row = by_key.get(key, (None, None))[1]
            if row is not None and row["status"] == "success" and _image_member(members) is not None:
                del by_key[key]
                yield self._sample(tar, row, members)
            elif row is None and _image_member(members) is not None:
                location = member_location(self.config.relative(tar), _image_member(members))
                yield Reject(self.name, location, Reason.UNKNOWN_REFERENCE,
                             f"image member without a row in {parquet_rel}", sample_key(self.name, key))
        for location, row in by_key.values():
            yield self._reject(row, location)

    def _sample(self, tar: str, row: dict[str, Any], members: dict[str, bytes]) -> Candidate | Reject:
        image_name = _image_member(members)
        location = member_location(self.config.relative(tar), image_name)
        text = _text(members, row)
        if text is None:
            key = sample_key(self.name, row["key"])
            return Reject(self.name, location, Reason.EMPTY_TEXT, "no caption in .txt or parquet", key)
        meta = {k: row.get(k) for k in ("url", "key", "width", "height", "sha256")}
        return candidate(self.name, row["key"], location, meta, text=text, image_bytes=members[image_name])

    def _reject(self, row: dict[str, Any], location: str) -> Reject:
        key = sample_key(self.name, row["key"])
        if row["status"] != "success":
            detail = row["error_message"] or f"status {row['status']}"
            return Reject(self.name, location, Reason.FAILED_DOWNLOAD, detail, key)
        return Reject(self.name, location, Reason.MISSING_IMAGE, f"no image member for key {row['key']}", key)


def _read_rows(path: str) -> list[dict[str, Any]]:
    """The parquet's rows (a shard is about 10K rows: small); a wrong schema is a ``SourceError``."""
    require_exists(path)
    try:
        with open_source(path) as f:
            table = pq.read_table(f)
    except SourceError:
        raise
    except Exception as e:  # pyarrow raises several types for a file that is not parquet
        raise SourceError(f"{path}: not a readable parquet file: {e}") from e
    missing = [c for c in _REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise SourceError(f"{path}: not an img2dataset parquet: no column {', '.join(missing)}")
    columns = [c for c in _REQUIRED_COLUMNS + _OPTIONAL_COLUMNS if c in table.column_names]
    rows = table.select(columns).to_pylist()
    for row in rows:
        row["key"] = str(row["key"])
    return rows


def _tar_samples(path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {member name: bytes})`` per run of consecutive members sharing a key (WebDataset: the
    name up to the first dot of its base name). Streamed: one sample in memory at a time. Only image
    and ``.txt`` members are read."""
    key, members = None, {}
    try:
        with open_source(path) as f, tarfile.open(fileobj=f, mode="r|") as archive:
            for info in archive:
                if not info.isfile():
                    continue
                member_key, ext = _split_name(info.name)
                if member_key != key and key is not None:
                    yield key, members
                    members = {}
                key = member_key
                if is_image_name(info.name) or ext == "txt":
                    members[info.name] = archive.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise SourceError(f"{path}: not a readable tar: {e}") from e
    if key is not None:
        yield key, members


def _split_name(name: str) -> tuple[str, str]:
    """``dir/KEY.ext.more`` -> (``dir/KEY``, ``ext.more``): the WebDataset key and extension."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower()


def _image_member(members: dict[str, bytes]) -> str | None:
    return next((name for name in members if is_image_name(name)), None)


def _text(members: dict[str, bytes], row: dict[str, Any]) -> str | None:
    """The ``.txt`` member if it is valid UTF-8 and not empty, else the parquet's caption."""
    for name, data in members.items():
        if name.endswith(".txt"):
            try:
                text = clean_text(data.decode("utf-8-sig"))
            except UnicodeDecodeError:
                text = None
            if text is not None:
                return text
    caption = row.get("caption")
    return clean_text(caption) if isinstance(caption, str) else None
