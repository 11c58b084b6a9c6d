"""Deterministic WebDataset shards with a parquet index and a rejects table beside each tar.

A shard is written whole by one call (all records of one shard id), so its bytes depend only on its
records: samples sorted by key, tar headers with fixed mtime/uid/gid/mode, members in a fixed order.
Files go under a temporary name and are renamed when complete, the index last: an index whose
``params_hash`` matches is the proof that the shard is done, which is what makes stages resumable.

Layout (DESIGN.md): ``raw/<source>/<shard>.tar``, ``raw/<source>/<shard>.parquet`` and
``rejects/<stage>/<source>/<shard>.parquet``. Paths may be any Beam FileSystems URI.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import io as fsio
from pipelines.images import ImageError, process_image
from schemas.config import ImageConfig
from schemas.keys import shard_name
from schemas.records import Candidate, Reason, Reject
from schemas.tables import PARAMS_KEY, RECORDS_IN_KEY, REJECTS, SHARD_INDEX, check_version, with_metadata

_BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class ShardPaths:
    tar: str
    index: str
    rejects: str

    @classmethod
    def of(cls, root: str, stage: str, source: str, shard: int) -> ShardPaths:
        name = shard_name(shard)
        return cls(
            tar=fsio.join(root, "raw", source, f"{name}.tar"),
            index=fsio.join(root, "raw", source, f"{name}.parquet"),
            rejects=fsio.join(root, "rejects", stage, source, f"{name}.parquet"),
        )

    def all(self) -> tuple[str, str, str]:
        return (self.tar, self.rejects, self.index)  # commit order: the index last


@dataclass
class ShardCounts:
    """What one shard (or, summed, one source) did. ``records_in == written + rejected``."""

    records_in: int = 0
    written: int = 0
    bytes: int = 0
    rejected: Counter = field(default_factory=Counter)

    def __add__(self, other: ShardCounts) -> ShardCounts:
        return ShardCounts(
            self.records_in + other.records_in,
            self.written + other.written,
            self.bytes + other.bytes,
            self.rejected + other.rejected,
        )

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def write_shard(
    paths: ShardPaths,
    stage: str,
    records: Iterable[Candidate | Reject],
    image_config: ImageConfig,
    params_hash: str,
) -> ShardCounts:
    """Turn one shard's records into its tar, index and rejects files; returns what it counted."""
    records = list(records)
    candidates = sorted((r for r in records if isinstance(r, Candidate)), key=lambda c: (c.key, c.location))
    rejects = [r for r in records if isinstance(r, Reject)]
    rows: list[dict] = []
    tmp = {path: f"{path}.tmp-{uuid.uuid4().hex}" for path in paths.all()}
    with fsio.create(tmp[paths.tar]) as out:
        counting = _CountingWriter(out)
        with tarfile.open(fileobj=counting, mode="w", format=tarfile.GNU_FORMAT) as tar:
            kept_location: dict[str, str] = {}
            for candidate in candidates:
                if candidate.key in kept_location:
                    rejects.append(_duplicate(candidate, kept_location[candidate.key]))
                    continue
                kept_location[candidate.key] = candidate.location
                sample = _encode_sample(candidate, image_config)
                if isinstance(sample, Reject):
                    rejects.append(sample)
                else:
                    rows.append(_append_sample(tar, sample))
    reject_rows = sorted(
        ({"stage": stage, "source": r.source, "key": r.key, "location": r.location,
          "reason": r.reason.value, "detail": r.detail} for r in rejects),
        key=lambda row: (row["location"], row["reason"], row["key"] or "", row["detail"]),
    )
    _write_table(tmp[paths.rejects], reject_rows, REJECTS, {})
    _write_table(tmp[paths.index], rows, SHARD_INDEX,
                 {PARAMS_KEY: params_hash.encode(), RECORDS_IN_KEY: str(len(records)).encode()})
    for path in paths.all():
        fsio.rename(tmp[path], path)
    return ShardCounts(len(records), len(rows), sum(r["sample_bytes"] for r in rows),
                       Counter(r["reason"] for r in reject_rows))


def is_complete(paths: ShardPaths, params_hash: str) -> bool:
    """Done by an earlier run with the same parameters: index committed with our hash, tar beside it."""
    if not (fsio.exists(paths.index) and fsio.exists(paths.tar) and fsio.exists(paths.rejects)):
        return False
    return read_index_metadata(paths.index).get(PARAMS_KEY, b"").decode() == params_hash


def read_counts(paths: ShardPaths) -> ShardCounts:
    """The counts of a finished shard, from its files alone (runner-independent summaries)."""
    with fsio.open_read(paths.index) as f:
        index = pq.read_table(f, columns=["sample_bytes"])
    check_version(index.schema, paths.index)
    with fsio.open_read(paths.rejects) as f:
        reasons = pq.read_table(f, columns=["reason"]).column("reason").to_pylist()
    records_in = int(index.schema.metadata[RECORDS_IN_KEY])
    return ShardCounts(records_in, index.num_rows, sum(index.column("sample_bytes").to_pylist()),
                       Counter(reasons))


def read_index_metadata(path: str) -> dict[bytes, bytes]:
    with fsio.open_read(path) as f:
        schema = pq.read_schema(f)
    check_version(schema, path)
    return dict(schema.metadata)


def iter_samples(tar_path: str) -> Iterator[dict]:
    """Samples of one shard as WebDataset does: ``__key__`` plus one entry per member extension."""
    sample: dict = {}
    with fsio.open_read(tar_path) as f, tarfile.open(fileobj=f, mode="r|") as tar:
        for member in tar:
            key, _, extension = member.name.partition(".")
            if sample and sample["__key__"] != key:
                yield sample
                sample = {}
            sample["__key__"] = key
            sample[extension] = tar.extractfile(member).read()
    if sample:
        yield sample


@dataclass
class _Sample:
    candidate: Candidate
    members: list[tuple[str, bytes]]  # (extension, data) in tar order: image, txt, json
    meta_json: str
    image: object | None  # ProcessedImage


def _encode_sample(candidate: Candidate, config: ImageConfig) -> _Sample | Reject:
    image = None
    members: list[tuple[str, bytes]] = []
    if candidate.modality.value != "text":
        data = candidate.image_bytes
        if data is None:
            try:
                data = fsio.read_bytes(candidate.image_path)
            except OSError as e:
                return _reject(candidate, Reason.MISSING_IMAGE, f"{candidate.image_path}: {e}")
        try:
            image = process_image(data, config)
        except ImageError as e:
            return _reject(candidate, Reason.CORRUPT_IMAGE, str(e))
        members.append((image.extension, image.data))
    if candidate.text is not None:
        members.append(("txt", candidate.text.encode("utf-8")))
    record = {
        "key": candidate.key,
        "source": candidate.source,
        "source_id": candidate.source_id,
        "modality": candidate.modality.value,
        "meta": candidate.meta,
    }
    if image is not None:
        record.update(width=image.width, height=image.height, sha256=image.sha256)
    meta_json = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    members.append(("json", meta_json.encode("utf-8")))
    return _Sample(candidate, members, meta_json, image)


def _append_sample(tar: tarfile.TarFile, sample: _Sample) -> dict:
    image_offset = image_size = None
    for position, (extension, data) in enumerate(sample.members):
        info = tarfile.TarInfo(f"{sample.candidate.key}.{extension}")
        info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(data))
        if position == 0 and sample.image is not None:
            image_size = len(data)
            image_offset = tar.offset - _BLOCK * ((len(data) + _BLOCK - 1) // _BLOCK)
    candidate, image = sample.candidate, sample.image
    return {
        "key": candidate.key,
        "source": candidate.source,
        "modality": candidate.modality.value,
        "source_id": candidate.source_id,
        "text": candidate.text,
        "image_format": image.extension if image else None,
        "width": image.width if image else None,
        "height": image.height if image else None,
        "sha256": image.sha256 if image else None,
        "phash": image.phash if image else None,
        "image_offset": image_offset,
        "image_size": image_size,
        "sample_bytes": sum(len(data) for _, data in sample.members),
        "meta": sample.meta_json,
    }


def _write_table(path: str, rows: list[dict], schema: pa.Schema, metadata: dict[bytes, bytes]) -> None:
    table = pa.Table.from_pylist(rows, schema=with_metadata(schema, metadata))
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    fsio.write_bytes(path, buffer.getvalue())


def _reject(candidate: Candidate, reason: Reason, detail: str) -> Reject:
    return Reject(candidate.source, candidate.location, reason, detail, candidate.key)


def _duplicate(candidate: Candidate, kept_location: str) -> Reject:
    return _reject(candidate, Reason.DUPLICATE_ID, f"same key as the record kept from {kept_location}")


class _CountingWriter:
    """A write-only stream that knows its position, so tarfile works over non-seekable outputs."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out, self._position = out, 0

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position
