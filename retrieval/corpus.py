"""Read one sample of a built corpus by key, without Beam: its raw index row, image, thumbnail and sidecar
rows (detections, parses, links, stored vectors). For the service and ``unicorpus query``, which answer
one key at a time: a key names its source (``<source>-...``, schemas.keys.make_key) and its shard
(schemas.keys.shard_of), so a lookup reads one shard's tables, never a scan of the corpus.

Every path goes through ``_filesystem`` (pyarrow.fs), so the corpus root may be local or a URI
(``s3://``, ``gs://``) that pyarrow understands.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import Future

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from schemas.keys import shard_name, shard_of
from schemas.tables import REMOVAL_STAGES, check_version

_UNSAFE = re.compile(r"[^a-z0-9_-]+")


class UnknownKey(LookupError):
    """No sample with this key in the corpus."""


class ImageTooLarge(ValueError):
    """A stored image over PIL's decompression-bomb limit: no thumbnail (the original is still served)."""


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The one place paths become (filesystem, path): local paths, or URIs pyarrow.fs can open."""
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def _exists(path: str) -> bool:
    fs, inner = _filesystem(path)
    return fs.get_file_info(inner).type != pafs.FileType.NotFound


def _read_table(path: str, columns: list[str] | None = None, key_column: str | None = None,
                key: str | None = None):
    """One parquet file (version-checked), optionally only the rows whose ``key_column`` is ``key``."""
    fs, inner = _filesystem(path)
    filters = None if key_column is None else [(key_column, "=", key)]
    table = pq.read_table(inner, filesystem=fs, columns=columns, filters=filters)
    check_version(table.schema, path)
    return table


class Corpus:
    """A corpus root and its sources' shard counts (``config.sources[name].shards``)."""

    def __init__(self, root: str, shards: dict[str, int], cached_shards: int = 64, thumbnail_decodes: int = 2,
                 cached_thumbnails: int = 1024):
        self.root = root.rstrip("/")
        self.shards = dict(shards)
        # key heads as make_key writes them; longest first, so "coco-un-1" prefers source "coco-un" to "coco"
        self._heads = sorted(((_UNSAFE.sub("_", name.lower()), name) for name in self.shards),
                             key=lambda pair: -len(pair[0]))
        self._rows: OrderedDict[tuple[str, int], dict[str, dict]] = OrderedDict()
        self._cached_shards = cached_shards
        self._lock = threading.Lock()
        self._thumbnails = Thumbnails(self.image_bytes, thumbnail_decodes, cached_thumbnails)

    @classmethod
    def from_config(cls, config) -> Corpus:
        serve = config.retrieval.serve
        return cls(config.output, {name: source.shards for name, source in config.sources.items()},
                   thumbnail_decodes=serve.thumbnail_decodes, cached_thumbnails=serve.cached_thumbnails)

    def path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def locate(self, key: str) -> tuple[str, int, dict]:
        """(source, shard, raw index row with ``meta`` parsed) of ``key``; UnknownKey if there is none."""
        for head, source in self._heads:
            if key.startswith(f"{head}-"):
                shard = shard_of(key, self.shards[source])
                row = self._shard_rows(source, shard).get(key)
                if row is not None:
                    return source, shard, row
        raise UnknownKey(f"no sample with key {key!r} in the corpus")

    def row(self, key: str) -> dict:
        return self.locate(key)[2]

    def _shard_rows(self, source: str, shard: int) -> dict[str, dict]:
        """The raw index of one shard by key, kept in a small LRU (a service sees the same shards again)."""
        with self._lock:
            if (source, shard) in self._rows:
                self._rows.move_to_end((source, shard))
                return self._rows[(source, shard)]
        path = self.path("raw", source, f"{shard_name(shard)}.parquet")
        rows = {} if not _exists(path) else {row["key"]: row for row in _read_table(path).to_pylist()}
        for key in self._removed(source, shard):  # what clean removed is no sample of the corpus any more
            rows.pop(key, None)
        for row in rows.values():
            row["meta"] = json.loads(row.pop("json")).get("meta", {})
        with self._lock:
            self._rows[(source, shard)] = rows
            while len(self._rows) > self._cached_shards:
                self._rows.popitem(last=False)
        return rows

    def _removed(self, source: str, shard: int) -> set[str]:
        """Keys of one shard that ``clean`` removed (``rejects/dedup``, ``rejects/decontam``)."""
        paths = [self.path("rejects", stage, source, f"{shard_name(shard)}.parquet") for stage in REMOVAL_STAGES]
        return {key for path in paths if _exists(path) for key in _read_table(path, ["key"]).column("key").to_pylist()}

    def image_bytes(self, key: str) -> bytes:
        """The stored image, read at its byte offset in the shard's tar (no scan of the archive)."""
        source, shard, row = self.locate(key)
        if row["image_offset"] is None:
            raise UnknownKey(f"sample {key!r} has no image")
        fs, inner = _filesystem(self.path("raw", source, f"{shard_name(shard)}.tar"))
        with fs.open_input_file(inner) as f:
            f.seek(row["image_offset"])
            return f.read(row["image_size"])

    def thumbnail(self, key: str, side: int = 256) -> bytes:
        """A JPEG whose longest side is at most ``side`` pixels (decoded at reduced size, bounded, cached)."""
        return self._thumbnails.get(key, side)

    def sidecar_rows(self, folder: str, key: str) -> list[dict]:
        """Rows of ``key`` in ``<folder>/<source>/<shard>.parquet`` (ann/detect, ann/parse, emb/text, ...);
        empty when that stage has not run for the key's shard."""
        source, shard, _ = self.locate(key)
        path = self.path(folder, source, f"{shard_name(shard)}.parquet")
        return _read_table(path, key_column="key", key=key).to_pylist() if _exists(path) else []

    def regions(self, key: str) -> list[dict]:
        rows = self.sidecar_rows("ann/detect", key)
        return rows[0]["regions"] if rows else []

    def links(self, name: str, key: str) -> list[dict] | None:
        """LINKS rows whose query is ``key`` under ``links/<name>/<source>/``, best first; None when that
        link table was never built for the key's shard."""
        source, shard, _ = self.locate(key)
        path = self.path("links", name, source, f"{shard_name(shard)}.parquet")  # a query's links: its own shard
        if not _exists(path):
            return None
        rows = _read_table(path, key_column="query_key", key=key).to_pylist()
        return sorted(rows, key=lambda row: row["rank"])


def make_thumbnail(data: bytes, side: int) -> bytes:
    """A JPEG of at most ``side`` pixels a side. A JPEG is decoded in draft mode: libjpeg scales by 1/2, 1/4 or
    1/8 while decoding (DCT scaling), so a 100-megapixel photo never exists at full size in memory (issue 13:
    10 concurrent thumbnails of one 12000 x 9000 JPEG took 7 GB before). Other formats decode in full."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (side, side))  # a no-op for formats without reduced decoding
            if image.mode != "RGB":
                image = image.convert("RGB")
            image.thumbnail((side, side))
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=85)
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"image too large for a thumbnail ({e}); ask for the original") from None
    return out.getvalue()


class Thumbnails:
    """Thumbnails by (key, side): at most ``decodes`` images read and decoded at once (memory is bounded by
    that, not by the number of clients), concurrent requests for one image share one decode, and the last
    ``cached`` thumbnails are kept (a few kB each)."""

    def __init__(self, read, decodes: int = 2, cached: int = 1024):
        self._read, self._cached = read, cached
        self._slots = threading.BoundedSemaphore(decodes)
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._pending: dict[tuple[str, int], Future] = {}
        self._lock = threading.Lock()

    def get(self, key: str, side: int) -> bytes:
        with self._lock:
            if (key, side) in self._cache:
                self._cache.move_to_end((key, side))
                return self._cache[(key, side)]
            pending = self._pending.get((key, side))
            if pending is None:
                future = self._pending[(key, side)] = Future()
        if pending is not None:
            return pending.result()
        try:
            with self._slots:
                data = make_thumbnail(self._read(key), side)
        except BaseException as e:
            with self._lock:
                del self._pending[(key, side)]
            future.set_exception(e)
            raise
        with self._lock:
            del self._pending[(key, side)]
            self._cache[(key, side)] = data
            while len(self._cache) > self._cached:
                self._cache.popitem(last=False)
        future.set_result(data)
        return data
