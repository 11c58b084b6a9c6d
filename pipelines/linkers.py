"""The per-shard logic of the retrieve stage (``pipelines/stages/retrieve.py`` is its Beam shell): each
``ShardLinker`` turns one query shard into links tables and rejects, reading the sidecar tables it needs
(emb/tags, emb/text, ann/detect, ann/parse) and calling ``retrieval.align`` / ``retrieval.related``.

- ``WeakPairs``: mu-VLA §3.2 weak pairs of a ``weak_pairs`` entry, + §3.3.2 phrase-region links.
- ``RelatedImages`` / ``RelatedTexts``: UNIMO App. A related items.

Indexes and models load in ``setup`` (once per worker); the related items' TF-IDF collections are built in
``prepare`` (once per run, before the pipeline) and read one shard at a time; ``params`` names everything
the output depends on beyond the query shard's own inputs (``inputs``), for the shard's params hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines import storage
from pipelines.raw_shard import read_footer
from pipelines.sidecar_tables import (
    SidecarPaths,
    raw_shards,
    read_shard_input,
    read_table_rows,
    table_path,
)
from schemas import layout
from schemas.config_build import output_params, require_path
from schemas.keys import shard_name, shard_of
from schemas.records import Modality, Reason, Reject
from schemas.stages import RESERVED_LINKS, EmbedConfig, RetrieveConfig, WeakPairsConfig
from schemas.tables import LINKS, MODEL_KEY, PARAMS_KEY, PHRASE_REGIONS

STAGE = "retrieve"
RELATED_IMAGES, RELATED_TEXTS = RESERVED_LINKS
TEXT_SPACE = "text"  # the FAISS space of sentences and captions (index/text/<source>/)
DETECT, PARSE, TAGS, TEXTS = layout.ann("detect"), layout.ann("parse"), layout.emb("tags"), layout.emb(TEXT_SPACE)
_PARSE_CACHE = 64  # ann/parse shards a weak-pairs worker keeps in memory


@dataclass(frozen=True)
class Table:
    """One links table: ``links/<name>/<source>/NNNNN.parquet``, its rejects under ``rejects/retrieve/<name>/``;
    ``query`` columns identify a served query."""

    name: str
    schema: pa.Schema
    query: tuple[str, ...]

    @property
    def stage(self) -> str:
        return f"{STAGE}/{self.name}"

    def paths(self, root: str, source: str, shard: int) -> SidecarPaths:
        return SidecarPaths.of(root, layout.links(self.name), self.stage, source, shard)


LINKS_QUERY = ("query_key", "query_text_index")
REGIONS_QUERY = ("query_key", "key", "text_index")


@dataclass
class Linked:
    """One table's share of a shard: rows, refused queries, and the queries considered."""

    rows: list[dict]
    rejects: list[Reject]
    units: int


def _table_rows(root: str, folder: str, source: str, shard: int, columns: list[str], hint: str) -> list[dict]:
    return read_table_rows(table_path(root, folder, source, shard), columns, hint)


def _stored_vectors(vectors: list) -> np.ndarray:
    """Stored vectors as one (n, dim) float32 matrix; (0, 0) for none: numpy cannot reshape an empty list to
    (0, -1), and a shard with no query (every image untagged, every text empty) must give rejects, not a crash."""
    return np.array(vectors, dtype=np.float32).reshape(len(vectors), -1) if vectors else np.zeros((0, 0), np.float32)


def _images(root: str, source: str, shard: int) -> list[str]:
    rows = read_shard_input(root, source, shard, ["key", "modality"]).rows
    return [row["key"] for row in rows if row["modality"] != Modality.TEXT.value]


def _reject(source: str, folder: str, shard: int, key: str, reason: Reason, detail: str) -> Reject:
    return Reject(source, f"{folder}/{source}/{shard_name(shard)}.parquet", reason, detail, key)


def _fingerprint(root: str, folder: str, sources: list[str]) -> str:
    """What a collection of sidecar tables holds: their params hashes (each covers its raw shard), the footers
    read ``storage.READ_THREADS`` at a time."""
    digest = hashlib.sha256()
    paths = [path for source in sources for path in storage.glob(storage.join(root, folder, source, "[0-9]*.parquet"))]
    hashes = storage.read_all(lambda path: read_footer(path).get(PARAMS_KEY, b""), paths)
    for path, params in zip(paths, hashes, strict=True):
        digest.update("/".join(path.rsplit("/", 2)[-2:]).encode() + params)
    return digest.hexdigest()[:16]


_DETECT_HINT = "run `unicorpus annotate detect` first"


class ShardLinker:
    """What one links job defines: its tables, query sources, inputs and the per-shard logic."""

    tables: list[Table]
    sources: list[str]
    inputs: tuple[str, ...]  # sidecar folders of the query shard the result depends on
    input_hint: str

    def __init__(self, root: str):
        self.root = root

    def params(self) -> dict:
        raise NotImplementedError

    def prepare(self, runner) -> None:
        """Build what every worker reads (a collection's files), before the pipeline; once per run."""

    def setup(self) -> None:
        """Load indexes, models, collections; once per worker."""

    def link(self, source: str, shard: int) -> list[Linked]:
        """One ``Linked`` per table, in ``tables`` order."""
        raise NotImplementedError


class WeakPairs(ShardLinker):
    """mu-VLA §3.2 weak pairs (+ §3.3.2 phrase-region links) of one ``weak_pairs`` entry."""

    input_hint = "run `unicorpus annotate detect` and `unicorpus embed` first (emb/tags holds the tag queries)"

    def __init__(self, root: str, weak: WeakPairsConfig, regions: bool, embed: EmbedConfig):
        super().__init__(root)
        self.weak, self.regions, self.embed = weak, regions, embed
        self.sources = list(weak.images)
        self.tables = [Table(weak.name, LINKS, LINKS_QUERY)]
        self.inputs = (TAGS,)
        if regions:
            self.tables.append(Table(f"{weak.name}-regions", PHRASE_REGIONS, REGIONS_QUERY))
            self.inputs += (DETECT,)
        self.text_shards = {name: len(raw_shards(root, name)) for name in weak.texts}

    def params(self) -> dict:
        from retrieval.index import build_digest

        builds = {}
        for name in self.weak.texts:
            path = storage.join(self.root, layout.index_build_file(TEXT_SPACE, name))
            if not storage.exists(path):
                raise ValueError(f"weak pairs {self.weak.name}: no index at {path}; run `unicorpus index` first")
            builds[name] = build_digest(json.loads(storage.read_bytes(path)))
        params = {"kind": "weak_pairs", **output_params(self.weak), "indexes": builds}
        if self.regions:
            require_path(self.embed, "model", "retrieval.embed", "phrase_regions embeds noun phrases and region labels")
            params |= {"model": self.embed.model, "parse": _fingerprint(self.root, PARSE, self.weak.texts)}
        return params

    def setup(self) -> None:
        from retrieval.index import open_indexes

        self.indexes = open_indexes(self.root, TEXT_SPACE, self.weak.texts)
        self.models = {index.model for index in self.indexes}
        self.parse_cache: dict[tuple[str, int], dict] = {}
        if self.regions:
            from retrieval.embed import shared_embedder

            self.embedder = shared_embedder(self.embed.model, self.embed.device, self.embed.batch_size)

    def link(self, source: str, shard: int) -> list[Linked]:
        from retrieval.align import weak_pairs

        tags = {row["key"]: row for row in _table_rows(self.root, TAGS, source, shard,
                                                      ["key", "text", "vector"], self.input_hint)}
        self._check_model(source, shard)
        images = _images(self.root, source, shard)
        queries = [key for key in images if key in tags]
        rejects = [_reject(source, TAGS, shard, key, Reason.NO_TAGS, "the image has no region label")
                   for key in images if key not in tags]
        vectors = _stored_vectors([tags[key]["vector"] for key in queries])
        found = weak_pairs(queries, source, vectors, self.indexes, self.weak.k)
        rejects += [_reject(source, TAGS, shard, key, Reason.NO_RESULTS,
                            f"tag query {tags[key]['text']!r}: the indexes of {', '.join(self.weak.texts)} are empty")
                    for key, rows in zip(queries, found, strict=True) if not rows]
        pairs = [row for rows in found for row in rows]
        out = [Linked(pairs, rejects, len(images))]
        if self.regions:
            out.append(self._regions(source, shard, pairs))
        return out

    def _check_model(self, source: str, shard: int) -> None:
        path = table_path(self.root, TAGS, source, shard)
        model = read_footer(path).get(MODEL_KEY, b"").decode()
        if self.models - {model}:
            raise ValueError(f"{path} was embedded with {model!r} but the indexes of {', '.join(self.weak.texts)} "
                             f"with {sorted(self.models)}: embed and index with one model")

    def _regions(self, source: str, shard: int, pairs: list[dict]) -> Linked:
        from retrieval.align import CachedEncoder, phrase_region_links

        detect = _table_rows(self.root, DETECT, source, shard, ["key", "regions"], _DETECT_HINT)
        labels = {row["key"]: [region["label"] for region in row["regions"]] for row in detect}
        phrases = {
            (p["key"], p["text_index"]): self._phrases(p["source"], p["key"]).get((p["key"], p["text_index"]), [])
            for p in pairs
        }
        # a cache of this job's own: a vector's last bits depend on the batch it was encoded in, so a cache
        # shared across jobs made a shard's scores depend on the shards a worker linked before it
        links = phrase_region_links(pairs, phrases, labels, CachedEncoder(self.embedder.encode))
        rejects = [_reject(source, layout.links(self.weak.name), shard, pair["query_key"], Reason.NO_PHRASES,
                           f"{pair['key']} text {pair['text_index']}: no noun phrase in ann/parse")
                   for pair, rows in zip(pairs, links, strict=True) if not rows]
        return Linked([row for rows in links for row in rows], rejects, len(pairs))

    def _phrases(self, source: str, key: str) -> dict:
        """(key, text_index) -> noun phrases of the ann/parse shard that holds ``key`` (cached per shard)."""
        shard = shard_of(key, self.text_shards[source])
        if (source, shard) not in self.parse_cache:
            if len(self.parse_cache) >= _PARSE_CACHE:
                self.parse_cache.clear()
            rows = _table_rows(self.root, PARSE, source, shard, ["key", "text_index", "noun_phrases"],
                               "run `unicorpus annotate parse` first (phrase_regions needs noun phrases)")
            self.parse_cache[(source, shard)] = {(r["key"], r["text_index"]): r["noun_phrases"] for r in rows}
        return self.parse_cache[(source, shard)]


def _sidecar_shards(root: str, folder: str, sources: list[str]) -> tuple[tuple[str, int], ...]:
    """(source, shard) of every table of ``folder`` for ``sources``, in collection order."""
    return tuple((source, int(path.rsplit("/", 1)[-1].split(".")[0])) for source in sources
                 for path in storage.glob(storage.join(root, folder, source, "[0-9]*.parquet")))


def _region_documents(root: str, source: str, shard: int) -> list[dict]:
    rows = _table_rows(root, DETECT, source, shard, ["key", "source", "regions"], _DETECT_HINT)
    return [{"key": row["key"], "source": row["source"], "labels": [region["label"] for region in row["regions"]]}
            for row in rows]


def _text_documents(root: str, source: str, shard: int) -> list[dict]:
    return _table_rows(root, TEXTS, source, shard, ["key", "source", "text_index", "text", "vector"],
                       "run `unicorpus embed` first (emb/text holds the text vectors)")


class _RelatedLinker(ShardLinker):
    """A related-items job: its collection (``retrieval.tfidf``, sharded like its input tables, with its postings
    and row store: ``retrieval.postings``) is built once under ``links/<table>/_stats/tfidf-<collection
    fingerprint>-<cap>/``; a worker reads the postings of its queries' terms and the rows of its hits."""

    folder: str  # the sidecar tables of the collection
    kind: str  # ``related_images`` or ``related_texts``: the prefix of its fields in ``retrieval.retrieve``

    def __init__(self, root: str, section: RetrieveConfig, queries: list[str], collections: list[str]):
        super().__init__(root)
        self.section, self.sources, self.collections = section, queries, collections
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """The collection's ``_fingerprint`` (a footer read per table of its sources), once per linker: a run
        makes its own linkers (``stages.retrieve.linkers``), so a new run sees tables changed since. Taken by
        ``params`` before the linker travels to the workers, whose ``setup`` then reads no footer."""
        if self._fingerprint is None:
            self._fingerprint = _fingerprint(self.root, self.folder, self.collections)
        return self._fingerprint

    def params(self) -> dict:
        """The job's fields of ``retrieval.retrieve`` (those that change the output), the collections it
        searches (resolved: None in the config means every source with tables) and their fingerprint."""
        own = {name: value for name, value in output_params(self.section).items() if name.startswith(self.kind)}
        return {"kind": self.kind, **own, "collections": self.collections, "collection": self.fingerprint()}

    def collection(self):
        raise NotImplementedError

    @property
    def cap(self) -> int | None:
        return getattr(self.section, f"{self.kind}_postings_cap")

    def _folder(self) -> tuple[str, str]:
        """The stats folder of the table, and the collection's folder in it (its postings' cap in the name, and
        what else changes its files: ``_built_with``)."""
        stats = storage.join(self.root, layout.stats(layout.links(self.tables[0].name)))
        cap = "all" if self.cap is None else f"cap{self.cap}"
        return stats, storage.join(stats, "-".join(["tfidf", self.fingerprint(), cap, *self._built_with()]))

    def _built_with(self) -> list[str]:
        return []

    def prepare(self, runner) -> None:
        from pipelines.tfidf_collections import build, remove_others

        stats, folder = self._folder()
        remove_others(stats, folder)
        build(self.collection(), runner)

    def setup(self) -> None:
        collection = self.collection()
        self.vectorizer, self.index = collection.vectorizer(), collection.index()


class RelatedImages(_RelatedLinker):
    """UNIMO App. A: TF-IDF over region labels, cosine, top N other images of the collections."""

    inputs = (DETECT,)
    input_hint = _DETECT_HINT
    folder = DETECT

    kind = "related_images"

    def __init__(self, root: str, section: RetrieveConfig, queries: list[str], collections: list[str]):
        super().__init__(root, section, queries, collections)
        self.top_n = section.related_images_top_n
        self.tables = [Table(RELATED_IMAGES, LINKS, LINKS_QUERY)]

    def collection(self):
        from functools import partial

        from pipelines.tfidf_collections import Collection
        from retrieval.tfidf import label_terms

        return Collection(self._folder()[1], _sidecar_shards(self.root, self.folder, self.collections),
                          partial(_region_documents, self.root), label_terms, "labels", ("key", "source"),
                          postings=True, cap=self.cap)

    def link(self, source: str, shard: int) -> list[Linked]:
        from retrieval.related import related_images

        detect = _table_rows(self.root, DETECT, source, shard, ["key", "regions"], self.input_hint)
        labels = {row["key"]: [region["label"] for region in row["regions"] if region["label"]] for row in detect}
        images = _images(self.root, source, shard)
        queries = [key for key in images if labels.get(key)]
        rejects = [_reject(source, DETECT, shard, key, Reason.NO_TAGS, "the image has no region label")
                   for key in images if not labels.get(key)]
        found = related_images(self.vectorizer, self.index, [{"labels": labels[key]} for key in queries], queries,
                               self.top_n)
        rows = []
        for key, hits in zip(queries, found, strict=True):
            if not hits:
                rejects.append(_reject(source, DETECT, shard, key, Reason.NO_RESULTS,
                                       f"no other image shares a label of {sorted(set(labels[key]))}"))
            rows += [{"query_key": key, "query_source": source, "rank": rank, "key": item["key"],
                      "source": item["source"], "text_index": None, "text": None, "score": score,
                      "query_text_index": None} for rank, (item, score) in enumerate(hits)]
        return [Linked(rows, rejects, len(images))]


class RelatedTexts(_RelatedLinker):
    """UNIMO App. A: inverted index + TF-IDF top M, embedding rerank, top N texts of the collections."""

    inputs = (TEXTS,)
    input_hint = "run `unicorpus embed` first (emb/text holds the text vectors)"
    folder = TEXTS

    kind = "related_texts"

    def __init__(self, root: str, section: RetrieveConfig, queries: list[str], collections: list[str]):
        super().__init__(root, section, queries, collections)
        self.top_m, self.top_n = section.related_texts_candidates, section.related_texts_top_n
        self.tables = [Table(RELATED_TEXTS, LINKS, LINKS_QUERY)]

    def params(self) -> dict:
        """``cosines``: the rerank's, summed in float64 (``tfidf.row_dots``); tables of the float32 product
        before are redone once (a last bit may differ)."""
        return {**super().params(), "cosines": "float64"}

    def _built_with(self) -> list[str]:
        """The rerank codec (``retrieval.codes``), as a file name can hold it."""
        return [re.sub(r"[^A-Za-z0-9]+", "_", self.section.related_texts_rerank_codec)]

    def collection(self):
        from functools import partial

        from pipelines.tfidf_collections import Collection
        from retrieval.tfidf import text_terms

        return Collection(self._folder()[1], _sidecar_shards(self.root, self.folder, self.collections),
                          partial(_text_documents, self.root), text_terms, "text",
                          ("key", "source", "text_index", "text"), vector="vector", postings=True,
                          cap=self.cap, codec=self.section.related_texts_rerank_codec)

    def setup(self) -> None:
        super().setup()
        self.codes = self.collection().codes()

    def link(self, source: str, shard: int) -> list[Linked]:
        from retrieval.related import related_texts

        queries = _table_rows(self.root, TEXTS, source, shard, ["key", "text_index", "text", "vector"],
                              self.input_hint)
        vectors = _stored_vectors([row["vector"] for row in queries])
        found = related_texts(self.vectorizer, self.index, self.codes, queries, vectors,
                              [row["key"] for row in queries], self.top_m, self.top_n)
        rows, rejects = [], []
        for query, hits in zip(queries, found, strict=True):
            if not hits:
                rejects.append(_reject(source, TEXTS, shard, query["key"], Reason.NO_RESULTS,
                                       f"text {query['text_index']}: no other text shares a term"))
            rows += [{"query_key": query["key"], "query_source": source, "rank": rank,
                      **{name: item[name] for name in ("key", "source", "text_index", "text")},
                      "score": score, "query_text_index": query["text_index"]}
                     for rank, (item, score) in enumerate(hits)]
        return [Linked(rows, rejects, len(queries))]
