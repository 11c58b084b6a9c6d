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
from dataclasses import dataclass, field
from typing import IO, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import io as fsio
from pipelines.shards import SHARD_INDEX_PATTERN, ShardCounts, ShardPaths, read_index_metadata, write_table
from schemas import layout
from schemas.records import Reject
from schemas.tables import PARAMS_KEY, RECORDS_IN_KEY, REJECTS, UNITS_WRITTEN_KEY, check_version

INGEST = "ingest"


@dataclass(frozen=True)
class SidecarPaths:
    table: str
    rejects: str

    @classmethod
    def of(cls, root: str, folder: str, stage: str, source: str, shard: int) -> SidecarPaths:
        name = layout.table_name(shard)
        return cls(fsio.join(root, folder, source, name), fsio.join(root, layout.rejects(stage, source), name))


@dataclass
class ShardInput:
    """One raw shard as a stage sees it: its index rows (no image bytes) and a way to read an image."""

    root: str
    source: str
    shard: int
    rows: list[dict]  # raw index rows (schemas.tables.SHARD_INDEX), ``meta`` parsed to a dict
    _stream: IO[bytes] | None = field(default=None, repr=False)

    @property
    def tar(self) -> str:
        return ShardPaths.of(self.root, INGEST, self.source, self.shard).tar

    def image_bytes(self, row: dict) -> bytes:
        """The stored image of ``row``, read at its byte offset in the tar (no scan of the archive). The tar
        is opened once per shard (an open is a request on object stores), not once per image."""
        if self._stream is None:
            self._stream = fsio.open_read(self.tar)
        self._stream.seek(row["image_offset"])
        return self._stream.read(row["image_size"])

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def raw_shards(root: str, source: str) -> list[int]:
    """Ids of the committed raw shards of ``source``; a ValueError naming the folder if there are none."""
    folder = fsio.join(root, layout.raw(source))
    indexes = fsio.glob(fsio.join(folder, SHARD_INDEX_PATTERN))
    if not indexes:
        raise ValueError(f"source {source}: no ingested shards under {folder}; run ingest first")
    return sorted(int(p.rsplit("/", 1)[-1].split(".")[0]) for p in indexes)


def read_shard_input(root: str, source: str, shard: int, columns: list[str] | None = None) -> ShardInput:
    path = ShardPaths.of(root, INGEST, source, shard).index
    with fsio.open_read(path) as f:
        table = pq.read_table(f, columns=columns)
    check_version(table.schema, path)
    rows = table.to_pylist()
    for row in rows:
        if "meta" in row:
            row["meta"] = json.loads(row["meta"]).get("meta", {})
    return ShardInput(root, source, shard, rows)


def raw_params_hash(root: str, source: str, shard: int) -> str:
    return read_index_metadata(ShardPaths.of(root, INGEST, source, shard).index).get(PARAMS_KEY, b"").decode()


def params_hash(stage_params: dict, raw_hash: str) -> str:
    """What a sidecar table depends on: the stage's parameters and the raw shard it was made from."""
    blob = json.dumps({"stage": stage_params, "raw": raw_hash}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sample_texts(row: dict) -> list[tuple[int, str]]:
    """(text_index, text) of a sample: every caption of a multi-caption image (COCO's ``meta.captions``),
    else its one ``txt``. Image-only samples have none."""
    captions = row.get("meta", {}).get("captions")
    if captions:
        return [(i, c["caption"]) for i, c in enumerate(captions)]
    return [] if row.get("text") is None else [(0, row["text"])]


def is_done(paths: SidecarPaths, digest: str) -> bool:
    if not (fsio.exists(paths.table) and fsio.exists(paths.rejects)):
        return False
    return read_index_metadata(paths.table).get(PARAMS_KEY, b"").decode() == digest


def write_sidecar(paths: SidecarPaths, stage: str, rows: list[dict], rejects: Iterable[Reject], schema: pa.Schema,
                  digest: str, records_in: int, metadata: dict[bytes, bytes] | None = None,
                  units_written: int | None = None) -> ShardCounts:
    """Commit one shard's table and rejects (rejects first, the table last: the table is the proof).
    ``units_written``: the input units the rows stand for, where a unit has several rows (rewrites of a
    caption, links of a query); by default one row per unit. ``records_in == units_written + rejects``."""
    reject_rows = sorted(
        ({"stage": stage, "source": r.source, "key": r.key, "location": r.location, "reason": r.reason.value,
          "detail": r.detail} for r in rejects),
        key=lambda row: (row["key"] or "", row["location"], row["reason"], row["detail"]),
    )
    written = len(rows) if units_written is None else units_written
    meta = {PARAMS_KEY: digest.encode(), RECORDS_IN_KEY: str(records_in).encode(),
            UNITS_WRITTEN_KEY: str(written).encode(), **(metadata or {})}
    size = 0
    for path, table_rows, table_schema, extra in ((paths.rejects, reject_rows, REJECTS, {}),
                                                   (paths.table, rows, schema, meta)):
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        size = write_table(tmp, table_rows, table_schema, extra)
        fsio.rename(tmp, path)
    return ShardCounts(records_in, written, size, Counter(r["reason"] for r in reject_rows))


def read_sidecar_counts(paths: SidecarPaths) -> ShardCounts:
    """From the committed files: the units the stage considered (images, texts, queries), those with rows,
    the rejects by reason, and the table's bytes."""
    metadata = read_index_metadata(paths.table)
    with fsio.open_read(paths.rejects) as f:
        reasons = pq.read_table(f, columns=["reason"]).column("reason").to_pylist()
    return ShardCounts(int(metadata[RECORDS_IN_KEY]), int(metadata[UNITS_WRITTEN_KEY]), fsio.size(paths.table),
                       Counter(reasons))


def read_sidecar_rows(paths: SidecarPaths) -> int:
    with fsio.open_read(paths.table) as f:
        return pq.read_metadata(f).num_rows


REGION_LABELS = ["regions.list.element.label", "regions.list.element.origin"]  # ann/detect without boxes and features


def read_sidecar(root: str, folder: str, source: str, columns: list[str] | None = None) -> Iterator[dict]:
    """Every row of ``<folder>/<source>/*.parquet``, shard by shard. ``columns`` may name nested fields by
    their parquet path (``REGION_LABELS``), so a reader of labels does not read every region's features."""
    for path in fsio.glob(fsio.join(root, folder, source, "[0-9]*.parquet")):
        yield from read_table_rows(path, columns)


def read_table_rows(path: str, columns: list[str] | None = None, missing: str | None = None) -> list[dict]:
    """The rows of one sidecar table (schema version checked). ``missing``: the advice of the ValueError
    raised when the table does not exist (which stage to run first)."""
    if missing is not None and not fsio.exists(path):
        raise ValueError(f"no {path}; {missing}")
    with fsio.open_read(path) as f:
        table = pq.ParquetFile(f).read(columns=columns)
    check_version(table.schema, path)
    return table.to_pylist()


def remove_temporaries(root: str, folder: str, stage: str, source: str) -> None:
    for base in (fsio.join(root, folder, source), fsio.join(root, layout.rejects(stage, source))):
        fsio.delete(fsio.glob(fsio.join(base, "*.tmp-*")))
