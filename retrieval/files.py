"""The one file layer outside Beam (the service, ``unicorpus query``, the report): fsspec, so a corpus root
may be a local folder or a URL (``memory://``, ``file://``, ``gs://``, ``s3://``), as the stages can write one.
Inside Beam pipelines ``pipelines/storage.py`` (Beam FileSystems) is the layer.

``gs://`` and ``s3://`` use gcsfs / s3fs when installed; without them, pyarrow's own filesystems wrapped as
fsspec (what ``retrieval/corpus.py`` used before), configured from the environment (``AWS_*``, GCP credentials)
when a bucket is first read.
FAISS reads local files only: ``local_copy`` brings a remote folder into a local cache once.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import uuid
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.tables import check_version

ARROW_PROTOCOLS = ("s3", "gs", "gcs", "hdfs")  # pyarrow opens these itself when fsspec has no package for them


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def filesystem(path: str):
    """(fsspec filesystem, path inside it) of a local path or a URL. One instance per protocol and bucket: a
    service asks this for every read (fsspec's own instance cache costs tens of microseconds a call)."""
    if "://" not in path:
        return _filesystem_of("file://"), os.path.abspath(path)
    protocol, rest = path.split("://", 1)
    fs = _filesystem_of(f"{protocol}://{rest.split('/', 1)[0]}")
    return fs, fs._strip_protocol(path)


@functools.lru_cache(maxsize=256)
def _filesystem_of(bucket: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(bucket)[0]
    except ImportError:  # s3fs / gcsfs not installed
        if bucket.split("://", 1)[0] not in ARROW_PROTOCOLS:
            raise
        import pyarrow.fs as pafs
        from fsspec.implementations.arrow import ArrowFSWrapper

        return ArrowFSWrapper(pafs.FileSystem.from_uri(bucket)[0])


def join(base: str, *parts: str) -> str:
    return "/".join((base.rstrip("/"), *parts))


def exists(path: str) -> bool:
    fs, inner = filesystem(path)
    return fs.exists(inner)


def read_bytes(path: str, offset: int = 0, size: int | None = None) -> bytes:
    """The file, or ``size`` bytes of it from ``offset`` (one ranged request on object stores)."""
    fs, inner = filesystem(path)
    return fs.cat_file(inner, start=offset or None, end=None if size is None else offset + size)


def write_bytes(path: str, data: bytes) -> None:
    """Atomic: written under a temporary name, then renamed (object stores: one upload)."""
    fs, inner = filesystem(path)
    fs.makedirs(inner.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{inner}.tmp-{uuid.uuid4().hex}"
    fs.pipe_file(tmp, data)
    fs.mv(tmp, inner)


def glob(pattern: str) -> list[str]:
    """Matching paths, sorted, spelled like ``pattern`` (a URL pattern gives URLs)."""
    fs, inner = filesystem(pattern)
    found = sorted(fs.glob(inner))
    if "://" not in pattern:
        return found
    protocol = pattern.split("://", 1)[0]  # fsspec lists paths without it (``memory://a/b`` -> ``/a/b``)
    return [f"{protocol}://{path if protocol == 'file' else path.lstrip('/')}" for path in found]


def read_table(path: str, columns: list[str] | None = None, filters=None) -> pa.Table:
    """One of our parquet tables, its schema version checked. ``columns`` may name nested fields by their
    parquet path (``regions.list.element.label``); ``filters`` (pyarrow's) read only matching rows."""
    fs, inner = filesystem(path)
    if filters is not None:  # a local file through pyarrow's own file system: fsspec's adds a layer of Python
        table = pq.read_table(inner, filesystem=None if "://" not in path else fs, columns=columns, filters=filters)
    else:
        with fs.open(inner, "rb") as f:
            table = pq.ParquetFile(f).read(columns=columns)
    check_version(table.schema, path)
    return table


def default_cache() -> str:
    """Where remote files FAISS needs are copied: ``$UNICORPUS_INDEX_CACHE``, else ``~/.cache/unicorpus/indexes``."""
    return os.environ.get("UNICORPUS_INDEX_CACHE") or os.path.expanduser(os.path.join("~", ".cache", "unicorpus",
                                                                                      "indexes"))


def read_proof(folder: str, name: str, missing: str) -> bytes:
    """The proof file ``name`` a producer writes last in ``folder`` (``local_copy``'s); none is a ValueError
    saying ``missing`` (what makes it)."""
    try:
        return read_bytes(join(folder, name))
    except FileNotFoundError:
        raise ValueError(f"{folder}: no {name}; {missing}, or its build was killed before the end: run it again") \
            from None


def mapped(path: str, dtype):
    """A local file of ``dtype`` numbers memory-mapped read-only, as a plain array over the map (the processes
    of a machine share its pages)."""
    import numpy as np

    if not os.path.getsize(path):
        return np.zeros(0, dtype=dtype)  # an empty file cannot be mapped
    return np.asarray(np.memmap(path, dtype=dtype, mode="r"))


def local_copy(folder: str, names: Sequence[str], cache: str | None = None, proof: bytes | None = None) -> str:
    """A local folder holding ``names`` of ``folder``: ``folder`` itself when local, else a copy under ``cache``
    (one folder per URL), made once. The last of ``names`` is the producer's proof of completeness (written
    last): a copy whose proof has the remote one's bytes is current; any other is replaced, whole. ``proof``:
    its bytes when the caller has read them already (a current copy then costs no request; a new one reads
    the proof once more after copying, to see that the files belong together)."""
    if not is_remote(folder):
        return folder.removeprefix("file://")
    target = os.path.join(cache or default_cache(), hashlib.sha256(folder.encode()).hexdigest()[:24])
    if proof is None:
        proof = read_bytes(join(folder, names[-1]))
    local_proof = os.path.join(target, names[-1])
    if _holds(local_proof, proof):
        return target
    tmp = f"{target}.tmp-{uuid.uuid4().hex}"
    os.makedirs(tmp)
    fs, inner = filesystem(folder)
    for name in names[:-1]:
        fs.get_file(f"{inner.rstrip('/')}/{name}", os.path.join(tmp, name))
    if read_bytes(join(folder, names[-1])) != proof:  # rebuilt while we copied: the files may not belong together
        shutil.rmtree(tmp)
        raise ValueError(f"{folder} changed while it was copied to {target}; try again")
    with open(os.path.join(tmp, names[-1]), "wb") as f:
        f.write(proof)
    _install(tmp, target, local_proof, proof)
    return target


def _holds(local_proof: str, proof: bytes) -> bool:
    try:
        with open(local_proof, "rb") as f:
            return f.read() == proof
    except FileNotFoundError:
        return False


def _install(tmp: str, target: str, local_proof: str, proof: bytes) -> None:
    """``tmp`` becomes ``target`` unless another process (service workers start together) installed the same
    copy first; a stale ``target`` is renamed aside, never deleted in place, so a racing rename cannot meet a
    half-deleted folder."""
    for _ in range(10):
        if _holds(local_proof, proof):
            shutil.rmtree(tmp)
            return
        stale = f"{target}.old-{uuid.uuid4().hex}"
        try:
            if os.path.exists(target):
                os.rename(target, stale)
            os.replace(tmp, target)
        except OSError:  # another process moved or installed a copy meanwhile: look again
            continue
        finally:
            shutil.rmtree(stale, ignore_errors=True)
        return
    raise OSError(f"{target}: could not install a copy of {local_proof} while other processes replaced it")
