"""Sidecar tables: what the stages after ingest write beside ``raw/`` instead of rewriting tars.

One table per raw shard, keyed by sample key (DESIGN.md "Sidecar tables, not rewritten tars"):
``<folder>/<source>/NNNNN.parquet`` (``folder`` = ``ann/detect``, ``ann/parse``, ``emb/text``, ...) and
``rejects/<stage>/<source>/NNNNN.parquet``. Written like raw shards: temporary name, rename, the table
last; a table whose ``params_hash`` matches (stage parameters + the raw shard's own hash) is done, so a
rerun skips it and a changed model or a re-ingested shard redoes it.

Pure Python over pyarrow and FileSystems: stages, tests and notebooks call these directly.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.raw_shard import (
    SHARD_INDEX_PATTERN,
    ShardCounts,
    ShardPaths,
    read_footer,
    reject_row,
    write_table,
)
from pipelines.shard_shape import footer_shape, possible_modalities
from schemas import layout
from schemas.records import Reject
from schemas.tables import PARAMS_KEY, RECORDS_IN_KEY, REJECTS, REMOVAL_STAGES, UNITS_WRITTEN_KEY, check_version

INGEST = "ingest"


@dataclass(frozen=True)
class SidecarPaths:
    """Where a stage writes one shard: its table and its rejects (``stage`` names the rejects folder)."""

    table: str
    rejects: str

    @classmethod
    def of(cls, root: str, folder: str, stage: str, source: str, shard: int) -> SidecarPaths:
        name = layout.table_name(shard)
        return cls(table_path(root, folder, source, shard), storage.join(root, layout.rejects(stage, source), name))


def table_path(root: str, folder: str, source: str, shard: int) -> str:
    """One shard's table of ``folder`` (``layout.ann("detect")``, ``layout.emb("tags")``, ...): how a reader
    names another stage's table, by its folder alone."""
    return storage.join(root, folder, source, layout.table_name(shard))


@dataclass
class ShardInput:
    """One raw shard as a stage sees it: its index rows (no image bytes) and a way to read an image."""

    root: str
    source: str
    shard: int
    rows: list[dict]  # raw index rows (schemas.tables.SHARD_INDEX), ``json`` replaced by its ``meta``, parsed
    removed: int = 0  # rows ``clean`` removed, left out of ``rows``
    raw_hash: str | None = None  # the shard's ``raw_params_hash``, from the same reads (None with ``keep_removed``)
    _stream: IO[bytes] | None = field(default=None, repr=False)

    @property
    def tar(self) -> str:
        return ShardPaths.of(self.root, INGEST, self.source, self.shard).tar

    def image_bytes(self, row: dict) -> bytes:
        """The stored image of ``row``, read at its byte offset in the tar (no scan of the archive). The tar
        is opened once per shard (an open is a request on object stores), not once per image."""
        if self._stream is None:
            self._stream = storage.open_read(self.tar)
        self._stream.seek(row["image_offset"])
        return self._stream.read(row["image_size"])

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def raw_shards(root: str, source: str) -> list[int]:
    """Ids of the committed raw shards of ``source``; a ValueError naming the folder if there are none."""
    folder = storage.join(root, layout.raw(source))
    indexes = storage.glob(storage.join(folder, SHARD_INDEX_PATTERN))
    if not indexes:
        raise ValueError(f"source {source}: no ingested shards under {folder}; run ingest first")
    return sorted(int(p.rsplit("/", 1)[-1].split(".")[0]) for p in indexes)


def read_shard_input(root: str, source: str, shard: int, columns: list[str] | None = None,
                     keep_removed: bool = False, exists: Callable[[str], bool] = storage.exists) -> ShardInput:
    """The shard's index rows, without the samples ``clean`` removed (unless ``keep_removed``): every stage
    after clean reads its samples here, so a removed sample enters no table, index or link. ``exists``: as
    ``removed_keys``'. One open of the index gives its rows and its footer (``raw_hash``)."""
    path = ShardPaths.of(root, INGEST, source, shard).index
    with storage.open_read(path) as f:
        table = pq.read_table(f, columns=None if columns is None else sorted({"key", *columns}))
    check_version(table.schema, path)
    rows = table.to_pylist()
    removed = set() if keep_removed else removed_keys(root, source, shard, exists)
    kept = [row for row in rows if row["key"] not in removed]
    for row in kept:
        if "json" in row:  # the json member; stages want its ``meta``
            row["meta"] = json.loads(row.pop("json")).get("meta", {})
    raw_hash = None if keep_removed else _raw_hash(table.schema.metadata or {}, removed)
    return ShardInput(root, source, shard, kept, removed=len(rows) - len(kept), raw_hash=raw_hash)


def has_kept_modality(root: str, source: str, shard: int, modalities: frozenset[str],
                      exists: Callable[[str], bool] = storage.exists) -> bool:
    """Whether a sample of the shard that ``clean`` kept is of one of ``modalities``. The index footer's shape
    (``shard_shape``) rules a shard out without a row read when it cannot hold any (a text source for detect);
    else, or for an index written without the shape, its ``modality`` column decides, from the same open.
    ``exists``: as ``removed_keys``'."""
    path = ShardPaths.of(root, INGEST, source, shard).index
    with storage.open_read(path) as f:
        index = pq.ParquetFile(f)
        check_version(index.schema_arrow, path)
        shape = footer_shape(index.schema_arrow.metadata or {})
        if shape is not None and not possible_modalities(shape) & modalities:
            return False
        table = index.read(columns=["key", "modality"])
    removed = removed_keys(root, source, shard, exists)
    return any(modality in modalities and key not in removed
               for key, modality in zip(table.column("key").to_pylist(), table.column("modality").to_pylist(),
                                        strict=True))


def removal_folders(root: str, source: str) -> list[str]:
    """Where ``clean`` writes the removals of ``source`` (``rejects/dedup/<source>``, ``rejects/decontam/...``):
    the folders a launcher lists once (``storage.names_in``) for every shard's ``removed_keys``."""
    return [storage.join(root, layout.rejects(stage, source)) for stage in REMOVAL_STAGES]


def removed_keys(root: str, source: str, shard: int | None = None,
                 exists: Callable[[str], bool] = storage.exists) -> set[str]:
    """Keys of ``source`` (of one raw shard, or all) that ``clean`` removed (``rejects/dedup``,
    ``rejects/decontam``): readers of ``raw/`` skip them. ``exists`` (one shard's): a launcher computing every
    shard's answers it from one listing of ``removal_folders`` (``storage.listed``), not a request per file."""
    if shard is None:
        paths = [path for folder in removal_folders(root, source)
                 for path in storage.glob(storage.join(folder, "*.parquet"))]
    else:
        paths = [path for folder in removal_folders(root, source)
                 if exists(path := storage.join(folder, layout.table_name(shard)))]
    keys: set[str] = set()
    for path in paths:
        with storage.open_read(path) as f:
            keys.update(pq.read_table(f, columns=["key"]).column("key").to_pylist())
    return keys


def raw_params_hash(root: str, source: str, shard: int, exists: Callable[[str], bool] = storage.exists) -> str:
    """What a raw shard is, as the stages after it see it: its ingest hash, and the keys ``clean`` removed
    from it (so a new clean redoes exactly the tables of the shards whose removals changed). ``exists``: as
    ``removed_keys``'."""
    index = read_footer(ShardPaths.of(root, INGEST, source, shard).index)
    return _raw_hash(index, removed_keys(root, source, shard, exists))


def _raw_hash(index_footer: dict[bytes, bytes], removed: set[str]) -> str:
    """``raw_params_hash`` from the index footer's metadata and the shard's removed keys."""
    ingested = index_footer.get(PARAMS_KEY, b"").decode()
    if not removed:
        return ingested
    return f"{ingested}-{hashlib.sha256(json.dumps(sorted(removed)).encode()).hexdigest()[:16]}"


def params_hash(stage_params: dict, raw_hash: str) -> str:
    """What a sidecar table depends on: the stage's parameters and the raw shard it was made from."""
    blob = json.dumps({"stage": stage_params, "raw": raw_hash}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sample_texts(row: dict) -> list[tuple[int, str]]:
    """(text_index, text) of a sample: every caption of a multi-caption image (COCO's ``meta.captions``,
    Visual Genome's region descriptions ``meta.regions``: each a pair in UNITER Table 1), else its one
    ``txt``. Image-only samples have none. Index 0 is the sample's ``txt``."""
    meta = row.get("meta", {})
    if meta.get("captions"):
        return [(i, c["caption"]) for i, c in enumerate(meta["captions"])]
    if meta.get("regions") and row.get("text") is not None:
        return [(i, r["phrase"]) for i, r in enumerate(meta["regions"])]
    return [] if row.get("text") is None else [(0, row["text"])]


def is_done(paths: SidecarPaths, digest: str, exists: Callable[[str], bool] = storage.exists) -> bool:
    """Committed with ``digest``. ``exists``: a launcher checking every shard answers it from one listing per
    folder (``storage.listed``)."""
    if not (exists(paths.table) and exists(paths.rejects)):
        return False
    return read_footer(paths.table).get(PARAMS_KEY, b"").decode() == digest


def write_sidecar(paths: SidecarPaths, stage: str, rows: list[dict], rejects: Iterable[Reject], schema: pa.Schema,
                  digest: str, records_in: int, metadata: dict[bytes, bytes] | None = None,
                  units_written: int | None = None) -> ShardCounts:
    """Commit one shard's table and rejects (rejects first, the table last: the table is the proof).
    ``units_written``: the input units the rows stand for, where a unit has several rows (rewrites of a
    caption, links of a query); by default one row per unit. ``records_in == units_written + rejects``."""
    reject_rows = sorted((reject_row(stage, r) for r in rejects),
                         key=lambda row: (row["key"] or "", row["location"], row["reason"], row["detail"]))
    written = len(rows) if units_written is None else units_written
    meta = {PARAMS_KEY: digest.encode(), RECORDS_IN_KEY: str(records_in).encode(),
            UNITS_WRITTEN_KEY: str(written).encode(), **(metadata or {})}
    size = 0
    for path, table_rows, table_schema, extra in ((paths.rejects, reject_rows, REJECTS, {}),
                                                   (paths.table, rows, schema, meta)):
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        size = write_table(tmp, table_rows, table_schema, extra)
        storage.rename(tmp, path)
    return ShardCounts(records_in, written, size, Counter(r["reason"] for r in reject_rows))


def read_sidecar_counts(paths: SidecarPaths, footer: dict[bytes, bytes] | None = None,
                        size: Callable[[str], int] = storage.size) -> ShardCounts:
    """From the committed files: the units the stage considered (images, texts, queries), those with rows,
    the rejects by reason, and the table's bytes. ``footer``: the table's, if the caller has read it already;
    ``size``: a file's bytes (the launcher answers it from a listing)."""
    metadata = read_footer(paths.table) if footer is None else footer
    with storage.open_read(paths.rejects) as f:
        reasons = pq.read_table(f, columns=["reason"]).column("reason").to_pylist()
    return ShardCounts(int(metadata[RECORDS_IN_KEY]), int(metadata[UNITS_WRITTEN_KEY]), size(paths.table),
                       Counter(reasons))


REGION_LABELS = ["regions.list.element.label", "regions.list.element.origin"]  # ann/detect without boxes and features


def read_sidecar(root: str, folder: str, source: str, columns: list[str] | None = None) -> Iterator[dict]:
    """Every row of ``<folder>/<source>/*.parquet``, shard by shard. ``columns`` may name nested fields by
    their parquet path (``REGION_LABELS``), so a reader of labels does not read every region's features."""
    for path in storage.glob(storage.join(root, folder, source, "[0-9]*.parquet")):
        yield from read_table_rows(path, columns)


def read_table_rows(path: str, columns: list[str] | None = None, missing: str | None = None) -> list[dict]:
    """The rows of one sidecar table (schema version checked). ``missing``: the advice of the ValueError
    raised when the table does not exist (which stage to run first)."""
    if missing is not None and not storage.exists(path):
        raise ValueError(f"no {path}; {missing}")
    with storage.open_read(path) as f:
        table = pq.ParquetFile(f).read(columns=columns)
    check_version(table.schema, path)
    return table.to_pylist()


def sidecar_folders(root: str, folder: str, stage: str, source: str) -> list[str]:
    """Where a stage's tables of ``source`` and their rejects go (what ``SidecarPaths.of`` names files in)."""
    return [storage.join(root, folder, source), storage.join(root, layout.rejects(stage, source))]


def remove_temporaries(root: str, folder: str, stage: str, source: str) -> None:
    for base in sidecar_folders(root, folder, stage, source):
        storage.delete(storage.glob(storage.join(base, "*.tmp-*")))
