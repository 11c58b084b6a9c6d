"""Deterministic WebDataset shards with a parquet index and a rejects table beside each tar.

A shard is written whole by one call (all records of one shard id), so its bytes depend only on its
records: samples sorted by key, tar headers with fixed mtime/uid/gid/mode, members in a fixed order.
Files go under a temporary name and are renamed when complete, the index last: an index whose
``params_hash`` matches is the proof that the shard is done, which is what makes stages resumable.

Layout (DESIGN.md): ``raw/<source>/<shard>.tar``, ``raw/<source>/<shard>.parquet``,
``rejects/<stage>/<source>/<shard>.parquet``, and for downloaded images ``urls/<source>/<shard>.parquet``
(one row per URL, like img2dataset's status table; outside ``raw/`` so that the ``raw/*/*.parquet`` glob
holds one schema for DuckDB, polars and HF). Paths may be any Beam FileSystems URI.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.images import ImageError, ImageTooLarge, process_image
from pipelines.shard_shape import shape_footer
from pipelines.sources.common import surrogate_field
from schemas import layout
from schemas.config import DownloadConfig, ImageConfig
from schemas.records import Candidate, Reason, Reject
from schemas.tables import PARAMS_KEY, RECORDS_IN_KEY, REJECTS, SHARD_INDEX, URL_STATUS, check_version, with_metadata

_BLOCK = tarfile.BLOCKSIZE
SHARD_INDEX_PATTERN = "[0-9][0-9][0-9][0-9][0-9].parquet"


@dataclass(frozen=True)
class ShardPaths:
    tar: str
    index: str
    rejects: str
    urls: str  # the per-URL download status table, for sources whose images are fetched

    @classmethod
    def of(cls, root: str, stage: str, source: str, shard: int) -> ShardPaths:
        return cls(
            tar=storage.join(root, layout.raw_tar(source, shard)),
            index=storage.join(root, layout.raw_index(source, shard)),
            rejects=storage.join(root, layout.rejects(stage, source), layout.table_name(shard)),
            urls=storage.join(root, layout.urls(source), layout.table_name(shard)),
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
    download: DownloadConfig | None = None,
    reuse: dict[str, Reusable] | None = None,
) -> ShardCounts:
    """Turn one shard's records into its tar, index and rejects files; returns what it counted.

    Candidates with an ``image_url`` are fetched first, concurrently (``download``), each decoded as it
    arrives, and get a row in the shard's URL status table. ``reuse`` holds samples of an earlier version
    of this shard whose download succeeded (``--retry-failed``): they are copied, not fetched again. (The
    ingest pipeline writes several shards of a worker over one download pool: ``shard_downloads``.)
    """
    from pipelines.download import fetch_each

    job = ShardJob.of(paths, stage, records, params_hash, reuse)
    for position, fetched in fetch_each(job.urls(), download or DownloadConfig()):
        job.take(position, fetched, image_config)
    return commit_shard(job, image_config)


@dataclass
class ShardJob:
    """One shard on its way to disk: its records, and its downloads as they come in."""

    paths: ShardPaths
    stage: str
    records_in: int
    candidates: list[Candidate]  # unique keys, sorted by key
    rejects: list[Reject]
    params_hash: str
    reuse: dict[str, Reusable]
    to_fetch: list[Candidate]  # candidates with an image_url, not reused
    fetched: dict[str, tuple[_Sample | Reject, dict]] = field(default_factory=dict)  # key -> sample, status row

    @classmethod
    def of(cls, paths: ShardPaths, stage: str, records: Iterable[Candidate | Reject], params_hash: str,
           reuse: dict[str, Reusable] | None = None) -> ShardJob:
        records = list(records)
        candidates, rejects = _unique_candidates(records)
        reuse = reuse or {}
        to_fetch = [c for c in candidates if c.image_url is not None and c.key not in reuse]
        return cls(paths, stage, len(records), candidates, rejects, params_hash, reuse, to_fetch)

    def urls(self) -> list[str]:
        return [c.image_url for c in self.to_fetch]

    def take(self, position: int, fetched, config: ImageConfig) -> None:
        """The download of ``urls()[position]``: decoded (or refused) now, kept until the shard is written."""
        candidate = self.to_fetch[position]
        self.fetched[candidate.key] = _prepare(candidate, config, fetched)

    @property
    def ready(self) -> bool:
        return len(self.fetched) == len(self.to_fetch)


def commit_shard(job: ShardJob, image_config: ImageConfig) -> ShardCounts:
    """Write a ready job's tar, index and rejects (and URL status table), atomically, index last."""
    assert job.ready, f"{job.paths.index}: {len(job.to_fetch) - len(job.fetched)} downloads outstanding"
    paths, rejects = job.paths, list(job.rejects)
    rows, statuses = [], []
    tmp = {path: f"{path}.tmp-{uuid.uuid4().hex}" for path in paths.all() + (paths.urls,)}
    try:
        with storage.create(tmp[paths.tar]) as out, tarfile.open(
            fileobj=CountingWriter(out), mode="w", format=tarfile.GNU_FORMAT
        ) as tar:
            for candidate in job.candidates:
                if candidate.key in job.reuse:
                    sample, status = job.reuse[candidate.key].sample, job.reuse[candidate.key].status
                elif candidate.key in job.fetched:
                    sample, status = job.fetched[candidate.key]
                else:
                    sample, status = _encode_sample(candidate, image_config, candidate.image_bytes), None
                if status is not None:
                    statuses.append(status)
                if isinstance(sample, Reject):
                    rejects.append(sample)
                else:
                    rows.append(_append_sample(tar, sample))
        reject_rows = sorted((reject_row(job.stage, r) for r in rejects),
                             key=lambda row: (row["location"], row["reason"], row["key"] or "", row["detail"]))
        write_table(tmp[paths.rejects], reject_rows, REJECTS, {})
        if statuses:
            write_table(tmp[paths.urls], statuses, URL_STATUS, {})
        write_table(tmp[paths.index], rows, SHARD_INDEX,  # with the card's shape: inferred here, once
                    {PARAMS_KEY: job.params_hash.encode(), RECORDS_IN_KEY: str(job.records_in).encode(),
                     **shape_footer(rows)})
    except BaseException:  # a failed shard leaves nothing that looks like output
        storage.delete([path for path in tmp.values() if storage.exists(path)])
        raise
    for path in ((paths.urls,) if statuses else ()) + paths.all():
        storage.rename(tmp[path], path)
    return ShardCounts(job.records_in, len(rows), sum(r["sample_bytes"] for r in rows),
                       Counter(r["reason"] for r in reject_rows))


def reject_row(stage: str, reject: Reject) -> dict:
    """A ``REJECTS`` table row. Lone surrogates (a non-UTF-8 file name in a location, say) are written as
    ``\\udcxx`` escapes: parquet strings are UTF-8, and the row must exist to say what was refused."""
    return {"stage": stage, "source": reject.source, "key": reject.key, "location": _escaped(reject.location),
            "reason": reject.reason.value, "detail": _escaped(reject.detail)}


def _escaped(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _unique_candidates(records: list[Candidate | Reject]) -> tuple[list[Candidate], list[Reject]]:
    """Candidates sorted by key, the first by location kept per key; the other copies are rejects."""
    rejects = [r for r in records if isinstance(r, Reject)]
    unique: dict[str, Candidate] = {}
    for candidate in sorted((r for r in records if isinstance(r, Candidate)), key=lambda c: (c.key, c.location)):
        if candidate.key in unique:
            rejects.append(_duplicate(candidate, unique[candidate.key].location))
        else:
            unique[candidate.key] = candidate
    return list(unique.values()), rejects


def _prepare(candidate: Candidate, config: ImageConfig, fetched) -> tuple[_Sample | Reject, dict]:
    """The sample (or reject) for one downloaded candidate, and its URL status row."""
    status = {"key": candidate.key, "url": fetched.url, "status": fetched.status, "attempts": fetched.attempts,
              "bytes": fetched.bytes, "elapsed_s": round(fetched.elapsed_s, 3), "detail": fetched.detail}
    if fetched.status != "ok":
        return _reject(candidate, Reason.FAILED_DOWNLOAD, f"{fetched.status}: {fetched.detail}"), status
    sample = _encode_sample(candidate, config, fetched.data)
    if isinstance(sample, Reject):
        status.update(status="decode_error", detail=sample.detail)
    return sample, status


def is_complete(paths: ShardPaths, params_hash: str) -> bool:
    """Done by an earlier run with the same parameters: index committed with our hash, tar beside it."""
    if not (storage.exists(paths.index) and storage.exists(paths.tar) and storage.exists(paths.rejects)):
        return False
    return read_footer(paths.index).get(PARAMS_KEY, b"").decode() == params_hash


def read_counts(paths: ShardPaths) -> ShardCounts:
    """The counts of a finished shard, from its files alone (runner-independent summaries)."""
    with storage.open_read(paths.index) as f:
        index = pq.read_table(f, columns=["sample_bytes"])
    check_version(index.schema, paths.index)
    with storage.open_read(paths.rejects) as f:
        reasons = pq.read_table(f, columns=["reason"]).column("reason").to_pylist()
    records_in = int(index.schema.metadata[RECORDS_IN_KEY])
    return ShardCounts(records_in, index.num_rows, sum(index.column("sample_bytes").to_pylist()),
                       Counter(reasons))


def read_footer(path: str) -> dict[bytes, bytes]:
    """The key-value metadata in any of our parquet tables' footer (params hash, counts, model, ...), its
    schema version checked; reads the footer only, not the rows."""
    return read_footer_and_rows(path)[0]


def read_footer_and_rows(path: str) -> tuple[dict[bytes, bytes], int]:
    """``read_footer`` and the table's number of rows, from one read of the footer."""
    with storage.open_read(path) as f:
        metadata = pq.read_metadata(f)
    schema = metadata.schema.to_arrow_schema()
    check_version(schema, path)
    return dict(schema.metadata), metadata.num_rows


def iter_samples(tar_path: str) -> Iterator[dict]:
    """Samples of one shard as WebDataset does: ``__key__`` plus one entry per member extension."""
    sample: dict = {}
    with storage.open_read(tar_path) as f, tarfile.open(fileobj=f, mode="r|") as tar:
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
    key: str
    members: list[tuple[str, bytes]]  # (extension, data) in tar order: image, txt, json
    row: dict  # the index row, less what the tar position decides (offsets, sizes)


@dataclass
class Reusable:
    """A sample of an earlier version of a shard, copied verbatim by ``--retry-failed``."""

    sample: _Sample
    status: dict


def _encode_sample(candidate: Candidate, config: ImageConfig, data: bytes | None) -> _Sample | Reject:
    field = _not_unicode(candidate)
    if field is not None:
        return _reject(candidate, Reason.NON_UTF8, f"{field} holds an unpaired surrogate: not valid Unicode text, "
                                                   f"cannot be written as UTF-8")
    image = None
    members: list[tuple[str, bytes]] = []
    if candidate.modality.value != "text":
        if data is None:
            try:
                data = storage.read_bytes(candidate.image_path)
            except OSError as e:
                return _reject(candidate, Reason.MISSING_IMAGE, f"{candidate.image_path}: {e}")
            except UnicodeError as e:  # a lone surrogate in the path: no file can have that name
                return _reject(candidate, Reason.NON_UTF8, f"image path {_escaped(candidate.image_path)}: {e}")
        try:
            image = process_image(data, config)
        except ImageTooLarge as e:
            return _reject(candidate, Reason.TOO_LARGE, str(e))
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
    row = {
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
        "json": meta_json,
    }
    return _Sample(candidate.key, members, row)


def _not_unicode(candidate: Candidate) -> str | None:
    """The field of a candidate that cannot be written as UTF-8 (``text``, ``meta.captions[2].caption``),
    or ``None``. One encode in the common case; the search only when it fails."""
    fields = {"text": candidate.text, "source_id": candidate.source_id, "meta": candidate.meta}
    try:
        json.dumps(fields, ensure_ascii=False).encode("utf-8")
        return None
    except UnicodeEncodeError:
        return next(filter(None, (surrogate_field(value, name) for name, value in fields.items())), "a field")


def _append_sample(tar: tarfile.TarFile, sample: _Sample) -> dict:
    image_offset = image_size = None
    for position, (extension, data) in enumerate(sample.members):
        add_member(tar, f"{sample.key}.{extension}", data)
        if position == 0 and sample.row["image_format"] is not None:
            image_size = len(data)
            image_offset = tar.offset - _BLOCK * ((len(data) + _BLOCK - 1) // _BLOCK)
    return {**sample.row, "image_offset": image_offset, "image_size": image_size,
            "sample_bytes": sum(len(data) for _, data in sample.members)}


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """A member with fixed headers (mtime 0, mode 644, uid/gid 0, no user names): a tar's bytes depend only
    on its members' names and data."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def load_reusable(paths: ShardPaths) -> dict[str, Reusable]:
    """The successfully downloaded samples of a finished shard, for ``--retry-failed``."""
    if not storage.exists(paths.urls):
        return {}
    with storage.open_read(paths.urls) as f:
        ok = {row["key"]: row for row in pq.read_table(f).to_pylist() if row["status"] == "ok"}
    with storage.open_read(paths.index) as f:
        rows = {row["key"]: row for row in pq.read_table(f).to_pylist() if row["key"] in ok}
    reusable = {}
    for sample in iter_samples(paths.tar):
        key = sample.pop("__key__")
        if key in rows:
            row = {k: v for k, v in rows[key].items() if k not in ("image_offset", "image_size", "sample_bytes")}
            order = [row["image_format"], "txt", "json"]
            members = [(ext, sample[ext]) for ext in order if ext in sample]
            reusable[key] = Reusable(_Sample(key, members, row), ok[key])
    return reusable


def has_failed_downloads(paths: ShardPaths, exists: Callable[[str], bool] = storage.exists) -> bool:
    """``exists``: a launcher checking many shards answers it from one listing (``storage.listed``)."""
    if not exists(paths.urls):
        return False
    with storage.open_read(paths.urls) as f:
        return any(status != "ok" for status in pq.read_table(f, columns=["status"]).column("status").to_pylist())


def write_table(path: str, rows: list[dict], schema: pa.Schema, metadata: dict[bytes, bytes] | None = None) -> int:
    """A parquet table with the schema version (and ``metadata``) in its footer, on any FileSystems path;
    returns its size in bytes."""
    table = pa.Table.from_pylist(rows, schema=with_metadata(schema, metadata))
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    storage.write_bytes(path, buffer.getvalue())
    return buffer.tell()


def _reject(candidate: Candidate, reason: Reason, detail: str) -> Reject:
    return Reject(candidate.source, candidate.location, reason, detail, candidate.key)


def _duplicate(candidate: Candidate, kept_location: str) -> Reject:
    return _reject(candidate, Reason.DUPLICATE_ID, f"same key as the record kept from {kept_location}")


class CountingWriter:
    """A write-only stream that knows its position, so tarfile works over non-seekable outputs."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out, self._position = out, 0

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position
