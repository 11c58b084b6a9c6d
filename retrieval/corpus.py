"""Read one sample of a built corpus by key, without Beam: its raw index row, image, thumbnail and sidecar
rows (detections, parses, links, stored vectors). For the service and ``unicorpus query``, which answer
one key at a time: a key names its source (``<source>-...``, schemas.keys.make_key) and its shard
(schemas.keys.shard_of), so a lookup reads one shard's tables, never a scan of the corpus.

Every path goes through ``retrieval.files`` (fsspec), so the corpus root may be local or a URL (``gs://``,
``s3://``, ``memory://``); folder names come from ``schemas.layout``.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator

from retrieval import files
from retrieval.thumbnails import Thumbnails
from schemas import layout
from schemas.keys import shard_of
from schemas.manifest import empty_manifest, parse_manifest
from schemas.tables import REMOVAL_STAGES

_UNSAFE = re.compile(r"[^a-z0-9_-]+")


class UnknownKey(LookupError):
    """No sample with this key in the corpus."""


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
        return files.join(self.root, *parts)

    def manifest(self) -> dict:
        """``corpus.json``, or an empty manifest before the first stage."""
        path = self.path(layout.MANIFEST)
        return parse_manifest(files.read_bytes(path).decode(), path) if files.exists(path) else empty_manifest()

    def rows(self, folder: str, source: str, columns: list[str] | None = None) -> Iterator[dict]:
        """Every row of ``<folder>/<source>/NNNNN.parquet``, shard by shard (a whole table of the corpus, for the
        report). ``columns`` may name nested fields by their parquet path."""
        for path in files.glob(self.path(folder, source, "[0-9]*.parquet")):
            yield from files.read_table(path, columns).to_pylist()

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
        path = self.path(layout.raw_index(source, shard))
        rows = {} if not files.exists(path) else {row["key"]: row for row in files.read_table(path).to_pylist()}
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
        paths = [self.path(layout.rejects(stage, source), layout.table_name(shard))
                 for stage in REMOVAL_STAGES]
        return {key for path in paths if files.exists(path)
                for key in files.read_table(path, ["key"]).column("key").to_pylist()}

    def image_bytes(self, key: str) -> bytes:
        """The stored image, read at its byte offset in the shard's tar (no scan of the archive)."""
        source, shard, row = self.locate(key)
        if row["image_offset"] is None:
            raise UnknownKey(f"sample {key!r} has no image")
        return files.read_bytes(self.path(layout.raw_tar(source, shard)), row["image_offset"], row["image_size"])

    def thumbnail(self, key: str, side: int = 256) -> bytes:
        """A JPEG whose longest side is at most ``side`` pixels (decoded at reduced size, bounded, cached)."""
        return self._thumbnails.get(key, side)

    def sidecar_rows(self, folder: str, key: str) -> list[dict]:
        """Rows of ``key`` in ``<folder>/<source>/<shard>.parquet`` (ann/detect, ann/parse, emb/text, ...);
        empty when that stage has not run for the key's shard."""
        source, shard, _ = self.locate(key)
        path = self.path(layout.table(folder, source, shard))
        return files.read_table(path, filters=[("key", "=", key)]).to_pylist() if files.exists(path) else []

    def regions(self, key: str) -> list[dict]:
        rows = self.sidecar_rows(layout.ann("detect"), key)
        return rows[0]["regions"] if rows else []

    def links(self, name: str, key: str) -> list[dict] | None:
        """LINKS rows whose query is ``key`` under ``links/<name>/<source>/``, best first; None when that
        link table was never built for the key's shard."""
        source, shard, _ = self.locate(key)
        path = self.path(layout.table(layout.links(name), source, shard))  # a query's links: its own shard
        if not files.exists(path):
            return None
        rows = files.read_table(path, filters=[("query_key", "=", key)]).to_pylist()
        return sorted(rows, key=lambda row: row["rank"])
