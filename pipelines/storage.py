"""File access through Beam's FileSystems, so every path may be local or a ``gs://``/``s3://`` URI."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import IO, TypeVar

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines import s3_clients

s3_clients.share()  # here: every process that touches a file through this module, workers included

READ_THREADS = 10  # reads a launcher keeps in flight at once (``read_all``): a store answers each in tens of ms;
# botocore pools 10 connections per client (more threads would open and drop one per read, warning each time)
_Item = TypeVar("_Item")
_Read = TypeVar("_Read")


def configure(options) -> None:
    """Give the launching process the same FileSystems options as the workers (S3 endpoint and keys,
    GCS project, ...): the driver also lists, checks and writes files (progress, manifest, counts)."""
    FileSystems.set_options(options)


def open_read(path: str) -> IO[bytes]:
    """A binary stream; no transparent decompression (readers decide, e.g. OpenWebText's .xz)."""
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def create(path: str) -> IO[bytes]:
    return FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)


def write_bytes(path: str, data: bytes) -> None:
    with create(path) as f:
        f.write(data)


def write_whole(path: str, data: bytes) -> None:
    """``data`` under a temporary name (``<path>.tmp-<uuid>``, what the stages' clean-ups remove), then renamed:
    a reader sees the old file or the new one, never a part."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    write_bytes(tmp, data)
    rename(tmp, path)


def exists(path: str) -> bool:
    return FileSystems.exists(path)


def size(path: str) -> int:
    (result,) = FileSystems.match([path])
    return result.metadata_list[0].size_in_bytes


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts)


def glob(pattern: str) -> list[str]:
    """Matching file paths, sorted (so readers see files in a deterministic order)."""
    return [path for path, _, _ in listing(pattern)]


def listing(pattern: str) -> list[tuple[str, int, float]]:
    """``(path, size in bytes, last modified in seconds)`` of each match, sorted by path: one listing
    gives both, on every filesystem."""
    (result,) = FileSystems.match([pattern])
    return sorted((m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in result.metadata_list)


def names_in(folders: Iterable[str]) -> dict[str, frozenset[str]]:
    """``folder -> names of the files directly in it``, one listing per folder: an object store pages a LIST
    at 1,000 keys, so a launcher learns which of thousands of shards' files exist in a few requests instead of
    an ``exists`` each (~40 ms a request on S3)."""
    return {folder: frozenset(path.rsplit("/", 1)[-1] for path in glob(join(folder, "*"))) for folder in set(folders)}


def listed(names: dict[str, frozenset[str]], path: str) -> bool:
    """Whether ``path`` was among the files ``names_in`` found; its folder must be one that was listed."""
    folder, name = path.rsplit("/", 1)
    return name in names[folder]


def read_all(read: Callable[[_Item], _Read], items: Sequence[_Item]) -> list[_Read]:
    """``read(item)`` of each item, in order, ``READ_THREADS`` at a time: a launcher reading the footers of
    thousands of shards waits for the store's latency once per ``READ_THREADS`` files, not once per file.
    (Beam's S3 and GCS clients are thread-safe; ``s3_clients`` shares one boto3 client, made under a lock.)
    The first error, in order, is raised with a note naming its item; the reads not started are cancelled."""
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        return list(pool.map(partial(_naming_errors, read), items))


def _naming_errors(read: Callable[[_Item], _Read], item: _Item) -> _Read:
    try:
        return read(item)
    except Exception as e:
        e.add_note(f"(reading {item})")
        raise


def stat(paths: list[str]) -> dict[str, tuple[int, float]]:
    """``path -> (size, last modified)`` of those ``paths`` that exist (locally, folders too)."""
    if not paths:
        return {}
    return {m.path: (m.size_in_bytes, m.last_updated_in_seconds)
            for result in FileSystems.match(list(paths)) for m in result.metadata_list}


def rename(src: str, dst: str) -> None:
    if FileSystems.exists(dst):
        FileSystems.delete([dst])
    FileSystems.rename([src], [dst])


def delete(paths: list[str]) -> None:
    if paths:
        FileSystems.delete(paths)


def remove_empty_folders(folders: Iterable[str]) -> None:
    """Each local folder and its subfolders that hold no file, deepest first (after its files were deleted);
    an object store has no folders, so a URL is left alone."""
    for folder in folders:
        if "://" in folder or not os.path.isdir(folder):
            continue
        for inner, _, _ in os.walk(folder, topdown=False):
            if not os.listdir(inner):
                os.rmdir(inner)


def iter_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line without its newline). Bytes, so each reader decides on decoding."""
    with open_read(path) as raw:
        for number, line in enumerate(io.BufferedReader(raw, 1 << 20), start=1):
            yield number, line.rstrip(b"\r\n")
