"""One interactive query, shared by ``unicorpus query`` and the HTTP service: free text, a tag list or a
sample key in, ranked hits out.

- free text is embedded as given; a tag list becomes one tag query first (mu-VLA §3.2: "which sentences
  does this tag list retrieve?" is the weak-pair question asked by hand);
- a sample key searches with its own stored vector (``emb/<space>/``): the searched space's vector when
  it has one, else its vector in the other space (both spaces share one model, so an image's tag vector
  searches sentences and a caption's vector searches images); the key's own entries are left out;
- related items (UNIMO App. A) are read from ``links/related-images|related-texts/`` that the retrieve
  stage wrote: ranking them again here would need the TF-IDF statistics of the whole collection.

Models and indexes are loaded once (``QueryEngine``); every request is validated here so that the CLI
and the service refuse the same things with the same messages.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future
from dataclasses import asdict, dataclass

import numpy as np

from retrieval import files
from retrieval.corpus import Corpus, UnknownKey
from retrieval.thumbnails import ImageTooLarge
from schemas import layout

SPACES = ("text", "tags")
RELATED = {"images": "related-images", "texts": "related-texts"}


class QueryError(ValueError):
    """A request that cannot be answered as asked: HTTP 400, exit code 2."""

    status = 400


class NotFound(QueryError):
    """A key, or a table it needs, that does not exist: HTTP 404."""

    status = 404


class Unprocessable(QueryError):
    """A request for something the data cannot give (a thumbnail of an image over PIL's limit): HTTP 422."""

    status = 422


@dataclass
class Hit:
    rank: int  # 0 = best
    score: float  # cosine (search) or the link's score (related items)
    key: str
    source: str
    text_index: int | None  # which text of the sample; None for an image
    text: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def check_k(k, max_k: int) -> int:
    """``k`` as an int in 1..max_k (strings from a URL or the command line are parsed here)."""
    if isinstance(k, bool) or not isinstance(k, (int, str)):
        raise QueryError(f"k: expected an integer, got {type(k).__name__}")
    try:
        value = int(k)
    except ValueError:
        raise QueryError(f"k: expected an integer, got {k!r}") from None
    if not 1 <= value <= max_k:
        raise QueryError(f"k: expected 1 <= k <= {max_k}, got {value}")
    return value


def check_utf8(value: str, name: str) -> str:
    """``value`` if it is valid Unicode text; a command-line argument whose bytes were not UTF-8 arrives with
    lone surrogates (Python's surrogateescape) that no model, table or terminal can take."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError(f"{name}: not valid UTF-8 (check the terminal's or the file's encoding)") from None
    return value


def parse_tags(tags: str | list[str]) -> list[str]:
    """``"ball, tree"`` or ``["ball", "tree"]`` -> ["ball", "tree"]; no tag at all is an error."""
    items = tags.split(",") if isinstance(tags, str) else tags
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise QueryError("tags: expected a comma-separated list of labels")
    for item in items:
        check_utf8(item, "tags")
    labels = [" ".join(t.split()) for t in items if t.strip()]
    if not labels:
        raise QueryError("tags: empty tag list")
    return labels


def check_request(text, tags, key, k, max_k: int) -> tuple[str, object, int]:
    """(kind, normalised value, k) of a search request, checked before any model runs: exactly one of a
    non-empty text, a tag list or a key, and a k in 1..max_k."""
    given = [name for name, value in (("text", text), ("tags", tags), ("key", key)) if value is not None]
    if len(given) != 1:
        raise QueryError("give exactly one of a text, tags or a key" + (f" (got {', '.join(given)})" if given else ""))
    k = check_k(k, max_k)
    if tags is not None:
        return "tags", parse_tags(tags), k
    value = text if key is None else key
    if not isinstance(value, str):
        raise QueryError(f"{given[0]}: expected a string, got {type(value).__name__}")
    value = " ".join(check_utf8(value, given[0]).split())
    if not value:
        raise QueryError("empty query" if key is None else "key: empty")
    return given[0], value, k


class Batcher:
    """Encodes on one thread, each batch = every text that queued while the last one ran. Under load,
    concurrent requests share one model call (a batch of short queries costs little more than one), and
    only one thread ever calls into torch (each calling thread would get its own OpenMP team)."""

    def __init__(self, encode, max_batch: int = 64):
        self._encode, self._max_batch = encode, max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="encode", daemon=True).start()

    def __call__(self, text: str) -> np.ndarray:
        future: Future = Future()
        self._queue.put((text, future))
        return future.result()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                vectors = self._encode([text for text, _ in batch])
            except Exception as e:  # every waiting request raises it
                for _, future in batch:
                    future.set_exception(e)
                continue
            for (_, future), vector in zip(batch, vectors, strict=True):
                future.set_result(vector)


def _index(value) -> int:
    """A text index from a URL or the command line: a non-negative int (default 0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise QueryError(f"text_index: expected a non-negative integer, got {value!r}")
    return int(value)


class QueryEngine:
    """The corpus, its FAISS indexes (``index/<space>/<source>/``) and the embedding model, loaded once."""

    def __init__(self, config, embedder=None):
        from retrieval.index import open_indexes

        self.corpus = Corpus.from_config(config)
        self.max_k = config.retrieval.serve.max_k
        self.thumbnail_side = config.retrieval.serve.thumbnail_side
        self.indexes: dict[str, dict[str, object]] = {}
        for space in SPACES:
            found = open_indexes(config.output, space, cache=config.retrieval.serve.index_cache)
            if found:
                self.indexes[space] = {os.path.basename(index.folder.rstrip("/")): index for index in found}
        if not self.indexes:
            raise ValueError(f"no indexes under {files.join(config.output, layout.INDEX)}/; "
                             "run `unicorpus embed` and `unicorpus index`")
        self._config, self._embedder = config, embedder
        self._lock = threading.Lock()
        self._batcher = None

    @property
    def embedder(self):
        """The model, loaded on first use (a key or related-items query needs none); ``serve`` loads it at start."""
        with self._lock:
            if self._embedder is None:
                self._embedder = self._load_embedder(self._config)
        return self._embedder

    def _load_embedder(self, config):
        """The configured model, else the one the indexes were built with (build.json records its path);
        its dimension must be the indexes'."""
        from retrieval.embed import Embedder

        model = config.retrieval.embed.model or next(iter(next(iter(self.indexes.values())).values())).model
        embedder = Embedder(model, config.retrieval.embed.device, config.retrieval.embed.batch_size)
        if config.retrieval.serve.threads:
            import torch

            torch.set_num_threads(config.retrieval.serve.threads)
        for space, by_source in self.indexes.items():
            for source, index in by_source.items():
                if index.dim != embedder.dim:
                    raise ValueError(f"{layout.index_folder(space, source)}: dimension {index.dim}, but the model "
                                     f"{model} gives {embedder.dim}; set retrieval.embed.model to the model it was "
                                     "built with")
        return embedder

    # --- what is loaded ---------------------------------------------------------------------------

    def catalog(self) -> dict[str, dict[str, int]]:
        """space -> source -> vector count."""
        return {space: {source: int(index.ntotal) for source, index in sorted(by_source.items())}
                for space, by_source in self.indexes.items()}

    def resolve(self, index: str) -> tuple[str, list]:
        """``space`` or ``space/source`` -> (space, its indexes)."""
        if not isinstance(index, str):
            raise QueryError("index: expected 'space' or 'space/source'")
        space, _, source = index.partition("/")
        if space not in self.indexes:
            raise QueryError(f"index: unknown space {space!r} (have: {', '.join(self.indexes)})")
        if not source:
            return space, list(self.indexes[space].values())
        if source not in self.indexes[space]:
            raise QueryError(f"index: no index {index!r} (have: "
                             f"{', '.join(f'{space}/{s}' for s in self.indexes[space])})")
        return space, [self.indexes[space][source]]

    # --- queries ----------------------------------------------------------------------------------

    def search(self, text: str | None = None, tags=None, key: str | None = None, k=5,
               index: str = "text") -> list[Hit]:
        """Exactly one of ``text``, ``tags`` (labels or "a,b") or ``key``; the top ``k`` of ``index``."""
        kind, value, k = check_request(text, tags, key, k, self.max_k)
        space, indexes = self.resolve(index)
        if kind == "key":
            return self._search_key(value, k, space, indexes)
        if kind == "tags":
            from retrieval.embed import tag_query

            value = tag_query(value)
        return self._search_vector(self.encode(value), k, indexes)

    def encode(self, text: str) -> np.ndarray:
        embedder = self.embedder
        with self._lock:
            if self._batcher is None:
                self._batcher = Batcher(embedder.encode, embedder.batch_size)
        return self._batcher(text)

    def _search_vector(self, vector: np.ndarray, k: int, indexes: list, exclude: str | None = None,
                       extra: int = 0) -> list[Hit]:
        from retrieval.index import search_many

        (merged,) = search_many(indexes, vector.reshape(1, -1).astype(np.float32), k + extra)
        hits = [(score, entry) for score, entry in merged if entry["key"] != exclude][:k]
        return [Hit(rank, float(score), entry["key"], entry["source"], entry.get("text_index"), entry.get("text"))
                for rank, (score, entry) in enumerate(hits)]

    def _search_key(self, key: str, k: int, space: str, indexes: list) -> list[Hit]:
        own = self.stored_vectors(key, space)
        vectors = own or self.stored_vectors(key, next((s for s in SPACES if s != space), space))
        if not vectors:
            raise NotFound(f"sample {key!r} has no stored vector (emb/text or emb/tags); run `unicorpus embed`")
        # the key's own entries in the searched space are as many as its stored vectors there
        return self._search_vector(vectors[0], k, indexes, exclude=key, extra=len(own))

    def stored_vectors(self, key: str, space: str) -> list[np.ndarray]:
        """The key's vectors in ``emb/<space>/``, by text_index."""
        try:
            rows = self.corpus.sidecar_rows(layout.emb(space), key)
        except UnknownKey as e:
            raise NotFound(str(e)) from None
        return [np.asarray(row["vector"], dtype=np.float32) for row in sorted(rows, key=lambda r: r["text_index"])]

    def related(self, key: str, kind: str = "images", k=10, text_index=None) -> list[Hit]:
        """UNIMO related images or texts of ``key``, from the retrieve stage's links. Related texts are
        per text of the sample (``text_index``, default 0: its first caption or its sentence)."""
        if kind not in RELATED:
            raise QueryError(f"kind: expected one of {', '.join(RELATED)}, got {kind!r}")
        k = check_k(k, self.max_k)
        if kind == "images" and text_index is not None:
            raise QueryError("text_index: only for kind=texts (an image has one set of related images)")
        text_index = None if kind == "images" else _index(text_index)
        if not isinstance(key, str) or not key:
            raise QueryError("key: expected a sample key")
        try:
            rows = self.corpus.links(RELATED[kind], key)
            source = self.corpus.locate(key)[0]
        except UnknownKey as e:
            raise NotFound(str(e)) from None
        if rows is None:
            raise NotFound(f"no {layout.links(RELATED[kind])}/{source}/ table; run `unicorpus retrieve`")
        rows = [row for row in rows if row.get("query_text_index") == text_index]
        return [Hit(row["rank"], float(row["score"]), row["key"], row["source"], row["text_index"], row["text"])
                for row in rows[:k]]

    def sample(self, key: str) -> dict:
        """A sample as the page shows it: index fields, texts, regions (without features) and parses."""
        try:
            source, shard, row = self.corpus.locate(key)
            regions = self.corpus.regions(key)
            parses = self.corpus.sidecar_rows(layout.ann("parse"), key)
        except UnknownKey as e:
            raise NotFound(str(e)) from None
        fields = ("key", "source", "modality", "source_id", "text", "image_format", "width", "height", "meta")
        return {**{name: row[name] for name in fields}, "shard": shard, "has_image": row["image_offset"] is not None,
                "regions": [{name: region[name] for name in ("box", "label", "score", "origin")} for region in regions],
                "parses": [{name: p[name] for name in ("text_index", "text", "noun_phrases")} for p in parses]}

    def has_image(self, key: str) -> bool:
        try:
            return self.corpus.row(key)["image_offset"] is not None
        except UnknownKey:
            return False

    def image(self, key: str, thumb: bool = False) -> tuple[bytes, str]:
        """(bytes, MIME type): the stored image as it is, or a JPEG thumbnail."""
        try:
            if thumb:
                return self.corpus.thumbnail(key, self.thumbnail_side), "image/jpeg"
            data, fmt = self.corpus.image_bytes(key), self.corpus.row(key)["image_format"]
            return data, "image/jpeg" if fmt == "jpg" else f"image/{fmt}"
        except UnknownKey as e:
            raise NotFound(str(e)) from None
        except ImageTooLarge as e:
            raise Unprocessable(str(e)) from None

    def image_sha256(self, key: str) -> str:
        """The stored image's sha256 (its identity, for HTTP caching); NotFound without one."""
        try:
            sha256 = self.corpus.row(key)["sha256"]
        except UnknownKey as e:
            raise NotFound(str(e)) from None
        if sha256 is None:
            raise NotFound(f"sample {key!r} has no image")
        return sha256
