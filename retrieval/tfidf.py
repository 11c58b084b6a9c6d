"""One TF-IDF and one sparse top-k search over a collection split in shards (UNIMO §2.1, App. A "Data
Augmentations": related images, related texts, TF-IDF hard negatives).

- TF-IDF is scikit-learn's ``TfidfVectorizer`` formula (raw counts x smooth idf ``ln((1 + N) / (1 + df)) + 1``,
  rows L2-normalised; ``dtype`` as its own), with the document frequencies a combine over the whole
  collection (``DocumentFrequencyCombiner``: the four CombineFn methods without importing Beam), so any
  worker vectorises with the collection's statistics without seeing the collection.
- The collection is a list of ``CollectionShard``s: one CSR matrix per shard with the identities of its
  rows, written once (``shard_bytes``) and searched one at a time. A query's scores against a shard are a
  sparse product with the shard's transposed matrix (its inverted index: term -> rows), so only rows sharing
  a term are scored; only hits above the query's running floor join its running top, which a partition cuts
  back to k when it overflows, and which is sorted once at the end. The result is exact: a score does not
  depend on the shard its row sits in, and ties go to the earlier row of the collection (shard order, then
  row order), as in one matrix.
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property, reduce

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")
ROW_BITS = 32  # a hit's tie key: shard position << 32 | row, ordered like the row's collection position
BLOCK_ENTRIES = 1 << 18  # queries x shard rows scored per sparse product: a block's hit arrays stay small (4M:
# as fast within noise, 6.4x the peak memory on 100k images; docs/BENCHMARKS.md)


def words(text: str) -> list[str]:
    """Lower-cased words of a text."""
    return _WORD.findall(text.lower())


@cache
def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def text_terms(text: str) -> list[str]:
    """Words of a caption or sentence, English stop words out (they would put every text in every posting
    list and defeat the inverted index)."""
    stop = _stop_words()
    return [word for word in words(text) if word not in stop]


def label_terms(labels: list[str]) -> list[str]:
    """Region labels as terms, one per region (a label of several words, ``traffic light``, is one term):
    an image's term frequencies count its regions of each class."""
    return [term for term in (" ".join(label.lower().split()) for label in labels) if term]


# --- the vectorizer -----------------------------------------------------------------------------------------


@dataclass
class DocumentFrequencies:
    documents: int
    counts: Counter  # term -> number of documents containing it


class DocumentFrequencyCombiner:
    """CombineFn semantics over documents, ``analyzer(document)`` their terms (as scikit-learn's); the output
    is the same whatever order workers merged in."""

    def __init__(self, analyzer: Callable[[object], Sequence[str]]):
        self.analyzer = analyzer

    def create_accumulator(self) -> DocumentFrequencies:
        return DocumentFrequencies(0, Counter())

    def add_input(self, accumulator: DocumentFrequencies, document) -> DocumentFrequencies:
        accumulator.documents += 1
        accumulator.counts.update(set(self.analyzer(document)))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[DocumentFrequencies]) -> DocumentFrequencies:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged.documents += accumulator.documents
            merged.counts.update(accumulator.counts)
        return merged

    def extract_output(self, accumulator: DocumentFrequencies) -> DocumentFrequencies:
        return accumulator


def document_frequencies(documents: Iterable, analyzer: Callable[[object], Sequence[str]]) -> DocumentFrequencies:
    """The combine in one process (tests, benchmarks, a collection small enough to hold)."""
    combiner = DocumentFrequencyCombiner(analyzer)
    return combiner.extract_output(reduce(combiner.add_input, documents, combiner.create_accumulator()))


class TfidfVectorizer:
    """Raw term counts x smooth idf, rows L2-normalised (scikit-learn's defaults), columns the sorted terms.
    Terms in more than ``max_df`` of the documents carry no weight (stop words of this collection; they
    would make every product dense); terms outside the collection are dropped.

    A row's norm, and a query's score, are sums in the order of the row's terms: ``sorted_terms`` sums in
    column order, so equal bags of terms are bit-equal rows and tie exactly (related items); without it,
    in order of first appearance (rewrite's negatives: their stored float32 cosines stay bit for bit what
    they were)."""

    def __init__(self, frequencies: DocumentFrequencies, analyzer: Callable[[object], Sequence[str]],
                 max_df: float = 1.0, dtype=np.float64, sorted_terms: bool = True):
        limit = max_df * frequencies.documents
        kept = sorted(t for t, df in frequencies.counts.items() if df <= limit)
        self.vocabulary = {t: i for i, t in enumerate(kept)}
        self.analyzer = analyzer
        self.dtype, self.sorted_terms = np.dtype(dtype), sorted_terms
        n = frequencies.documents
        self.document_counts = np.array([frequencies.counts[t] for t in kept], dtype=np.int64)
        self.idf = np.array([math.log((1 + n) / (1 + count)) + 1 for count in self.document_counts.tolist()],
                            dtype=self.dtype)

    def transform(self, documents: Sequence):
        """A CSR matrix (documents, vocabulary); a document without a known term is an all-zero row."""
        from scipy import sparse

        indptr, indices, values = [0], [], []
        for document in documents:
            counts = Counter(self.vocabulary[t] for t in self.analyzer(document) if t in self.vocabulary)
            columns = sorted(counts) if self.sorted_terms else list(counts)
            indices += columns
            values += [counts[c] for c in columns]
            indptr.append(len(indices))
        matrix = sparse.csr_matrix((np.array(values, dtype=self.dtype), np.array(indices, dtype=np.int64),
                                    np.array(indptr, dtype=np.int64)), shape=(len(documents), len(self.vocabulary)))
        matrix = matrix @ sparse.diags(self.idf)
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        return sparse.csr_matrix(sparse.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0))
                                 @ matrix)


# --- the collection, in shards ------------------------------------------------------------------------------


@dataclass
class CollectionShard:
    """One shard of a collection: its TF-IDF rows and the identities of those rows (``columns``: name -> one
    str or int per row; which ones a caller needs: ``key``, ``source``, ``text``, ...). A rerank's vectors are
    kept apart, as codes (``retrieval.codes``)."""

    matrix: object  # scipy CSR, (rows, vocabulary)
    columns: dict[str, list]

    def __post_init__(self):
        for name, values in self.columns.items():
            if len(values) != self.matrix.shape[0]:
                raise ValueError(f"collection shard column {name!r}: {len(values)} values for "
                                 f"{self.matrix.shape[0]} rows")

    def row(self, i: int) -> dict:
        return {name: values[i] for name, values in self.columns.items()}


class _Strings(Sequence):
    """A string column as stored (UTF-8 with end offsets), decoded by the row: a worker decodes the texts of
    its hits, not of every row of every shard it searches."""

    def __init__(self, blob: bytes, ends: np.ndarray):
        self.blob, self.ends = blob, ends

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> str:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return self.blob[self.ends[i - 1] if i else 0:self.ends[i]].decode("utf-8")


def shard_bytes(shard: CollectionShard) -> bytes:
    """A shard as one ``.npz`` (no pickle: strings as UTF-8 with offsets)."""
    arrays = {"data": shard.matrix.data, "indices": shard.matrix.indices, "indptr": shard.matrix.indptr,
              "shape": np.array(shard.matrix.shape, dtype=np.int64)}
    for name, values in shard.columns.items():
        if all(isinstance(v, str) for v in values) and values:
            encoded = [v.encode("utf-8") for v in values]
            arrays[f"str:{name}"] = np.frombuffer(b"".join(encoded), dtype=np.uint8)
            arrays[f"ends:{name}"] = np.cumsum([len(e) for e in encoded], dtype=np.int64)
        else:
            arrays[f"int:{name}"] = np.array(values, dtype=np.int64)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


class _StoredColumns(Mapping):
    """A stored shard's columns, each decoded when first used."""

    def __init__(self, npz):
        self.npz, self.decoded = npz, {}
        self.kinds = {column: kind for kind, _, column in (name.partition(":") for name in npz.files)
                      if kind in ("int", "str")}

    def __getitem__(self, name: str):
        if name not in self.decoded:
            self.decoded[name] = self.npz[f"int:{name}"].tolist() if self.kinds[name] == "int" else \
                _Strings(self.npz[f"str:{name}"].tobytes(), self.npz[f"ends:{name}"])
        return self.decoded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.kinds)

    def __len__(self) -> int:
        return len(self.kinds)


class _StoredShard(CollectionShard):
    """A shard read from its ``.npz``, each array decoded when first used: a search reads the matrix (and the
    columns it excludes by), a gather the columns it needs."""

    def __init__(self, npz):  # not the dataclass' __init__: the file was written from a checked shard
        self.npz = npz
        self.columns = _StoredColumns(npz)

    @cached_property
    def matrix(self):
        from scipy import sparse

        return sparse.csr_matrix((self.npz["data"], self.npz["indices"], self.npz["indptr"]),
                                 shape=tuple(self.npz["shape"]))


def shard_from_bytes(data: bytes) -> CollectionShard:
    return _StoredShard(np.load(io.BytesIO(data), allow_pickle=False))


# --- the search ---------------------------------------------------------------------------------------------


def best(ids: np.ndarray, scores: np.ndarray, top: int) -> np.ndarray:
    """Positions of the ``top`` best by score, ties to the lower id, best first: a linear-time cut, then a sort
    of the rest."""
    positions = np.arange(len(scores))
    if len(scores) > top:
        threshold = -np.partition(-scores, top - 1)[top - 1]
        positions = np.flatnonzero(scores >= threshold)  # every tie at the threshold stays: the sort decides
    return positions[np.lexsort((ids[positions], -scores[positions]))[:top]]


@dataclass
class Hits:
    """One query's top k: tie keys (shard position << 32 | row: the order of the collection) and scores."""

    ties: np.ndarray
    scores: np.ndarray

    def pairs(self) -> list[tuple[int, float]]:
        return list(zip(self.ties.tolist(), self.scores.tolist(), strict=True))


_EMPTY = -1  # the tie key of an empty slot (its score is 0, below every hit)


def _cut(scores: np.ndarray, ties: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (rows, width) arrays holding more than ``top`` hits, its ``top`` best (in no particular order),
    ties to the lower tie key: one partition finds each row's ``top``-th score; what reaches it stays, and where
    more than ``top`` do (hits tie at the cut), the lowest tie keys among those equal to it win."""
    cut = scores.shape[1] - top  # the top-th largest is the cut-th smallest
    kth = np.partition(scores, cut, axis=1)[:, cut:cut + 1]
    keep = scores >= kth
    tied = np.flatnonzero(np.count_nonzero(keep, axis=1) > top)
    if len(tied):
        line, slot = np.nonzero(scores[tied] == kth[tied])  # the entries at the cut
        order = np.lexsort((ties[tied[line], slot], line))
        line, slot = line[order], slot[order]
        counts = np.bincount(line, minlength=len(tied))
        rank = np.arange(len(line)) - (np.cumsum(counts) - counts)[line]
        need = top - np.count_nonzero(scores[tied] > kth[tied], axis=1)
        late = rank >= need[line]
        keep[tied[line[late]], slot[late]] = False
    return scores[keep].reshape(-1, top), ties[keep].reshape(-1, top)


def _padded(query: np.ndarray, slot: np.ndarray, ties: np.ndarray, scores: np.ndarray,
            rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Hits as (``rows``, most slots) arrays: hit i at [query[i], slot[i]]; empty slots score 0."""
    width = int(slot.max(initial=-1)) + 1
    padded_scores, padded_ties = np.zeros((rows, width), dtype=scores.dtype), np.full((rows, width), _EMPTY)
    padded_scores[query, slot], padded_ties[query, slot] = scores, ties
    return padded_scores, padded_ties


class RunningTop:
    """Every query's best ``top`` hits so far, in no particular order, with room for as many again: (queries, 2 top)
    arrays of scores and tie keys, row q's first ``filled[q]`` slots taken. New hits are appended while the row
    has room; a row that overflows is cut back to its ``top`` best (``_cut``), so a cut is paid once per ``top``
    new hits, not once per shard. ``floors[q]``: what a new hit must beat, 0 until the row's first cut, then the
    worst of its top at that cut (a later hit that ties with it comes later in the collection and loses)."""

    def __init__(self, count: int, top: int, dtype):
        self.top = top
        self.scores = np.zeros((count, 2 * top), dtype=dtype)
        self.ties = np.full((count, 2 * top), _EMPTY, dtype=np.int64)
        self.filled = np.zeros(count, dtype=np.int64)
        self.floors = np.zeros(count, dtype=dtype)

    def add(self, query: np.ndarray, ties: np.ndarray, scores: np.ndarray) -> None:
        """Hits of a later shard than those held, grouped by query, each above its query's floor."""
        counts = np.bincount(query, minlength=len(self.filled))
        slot = np.arange(len(query)) - (np.cumsum(counts) - counts)[query]  # its place among its query's new hits
        over = self.filled + counts > self.scores.shape[1]
        fits = ~over[query]
        self.scores[query[fits], self.filled[query[fits]] + slot[fits]] = scores[fits]
        self.ties[query[fits], self.filled[query[fits]] + slot[fits]] = ties[fits]
        self.filled[~over] += counts[~over]
        full = np.flatnonzero(over)
        if len(full):
            line = (np.cumsum(over) - 1)[query[~fits]]
            more_scores, more_ties = _padded(line, slot[~fits], ties[~fits], scores[~fits], len(full))
            kept_scores, kept_ties = _cut(np.hstack([self.scores[full], more_scores]),
                                          np.hstack([self.ties[full], more_ties]), self.top)
            self.scores[full], self.ties[full] = 0, _EMPTY
            self.scores[full, :self.top], self.ties[full, :self.top] = kept_scores, kept_ties
            self.filled[full] = self.top
            self.floors[full] = kept_scores.min(axis=1)

    def hits(self) -> list[Hits]:
        """Each query's ``top`` hits, best first, ties to the earlier row (one sort, at the end)."""
        width = int(self.filled.max(initial=0))  # the slots any row has taken; empty ones (score 0) sort last
        ties, scores = self.ties[:, :width], self.scores[:, :width]
        order = np.lexsort((ties, -scores), axis=1)
        ties, scores = np.take_along_axis(ties, order, 1), np.take_along_axis(scores, order, 1)
        found = np.minimum(self.filled, self.top).tolist()
        return [Hits(t[:n], s[:n]) for t, s, n in zip(ties, scores, found, strict=True)]


def _arrow(values: Sequence):
    """A column as an Arrow array: a stored string column without decoding a row (its bytes and offsets)."""
    import pyarrow as pa

    if isinstance(values, _Strings):
        offsets = np.concatenate([[0], values.ends]).astype(np.int64)
        return pa.LargeStringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(values.blob))
    return pa.array(list(values))


def _excluded(shard: CollectionShard, exclude_by: Sequence[str],
              groups: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(queries, rows): every shard row sharing an ``exclude_by`` column value with the query (its own sample,
    ...). The rows are matched to the queries' values by Arrow (``index_in``), not by a Python loop over every
    row of every shard: a query shard searches them all."""
    import pyarrow as pa
    import pyarrow.compute as pc

    queries, rows = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    if not groups or not shard.matrix.shape[0]:  # nothing to match (a shard without rows has untyped columns)
        return queries[0], rows[0]
    for c, name in enumerate(exclude_by):
        index = {value: i for i, value in enumerate(dict.fromkeys(group[c] for group in groups))}
        wanted, of_query = list(index), np.array([index[group[c]] for group in groups])
        values = shard.columns[name]
        at = pc.fill_null(pc.index_in(_arrow(values), value_set=pa.array(wanted)), -1).to_numpy()
        hit = np.flatnonzero(at >= 0)
        order = np.argsort(of_query, kind="stable")  # queries grouped by the value they exclude
        first = np.searchsorted(of_query[order], at[hit], side="left")
        counts = np.searchsorted(of_query[order], at[hit], side="right") - first
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        queries.append(order[np.repeat(first, counts) + within])
        rows.append(np.repeat(hit, counts))
    return np.concatenate(queries).astype(np.int64), np.concatenate(rows).astype(np.int64)


def beating(scores, floors: np.ndarray, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, row, score) of the entries of a block of queries' scores against a shard (CSR, queries x rows,
    grouped by query) above their query's floor and not ``excluded`` (query * rows + row)."""
    hit = np.flatnonzero(scores.data > np.repeat(floors, np.diff(scores.indptr)))
    query = np.searchsorted(scores.indptr, hit, side="right") - 1
    row = scores.indices[hit].astype(np.int64)
    if len(excluded) and len(hit):
        mask = np.zeros(scores.shape[0] * scores.shape[1], dtype=bool)
        mask[excluded] = True
        keep = ~mask[query * scores.shape[1] + row]
        hit, query, row = hit[keep], query[keep], row[keep]
    return query, row, scores.data[hit]


def search(queries, shards: Iterable[CollectionShard], top: int, exclude_by: Sequence[str] = (),
           groups: Sequence[Sequence[str]] = (), block_entries: int = BLOCK_ENTRIES) -> list[Hits]:
    """Per query row (CSR, in the collection's TF-IDF space), its ``top`` rows of the collection by cosine
    (> 0), best first, ties to the earlier row; rows sharing an ``exclude_by`` column value with ``groups[q]``
    never come back: the same hits as one search over all the rows.

    Each shard is read once (one in memory at a time when ``shards`` loads lazily) and scored against all the
    queries by sparse products with its transposed matrix (its inverted index: term -> rows, so only rows sharing
    a term are scored), in blocks of at most ``block_entries`` scores. Only the hits above their query's running
    floor go on (``RunningTop``); the tops are sorted once, at the end."""
    if top < 1:
        raise ValueError(f"search: top must be at least 1, got {top}")
    count = queries.shape[0]
    running = RunningTop(count, top, queries.dtype)
    for position, shard in enumerate(shards):
        inverted = shard.matrix.T.tocsr()  # term -> rows
        width = inverted.shape[1]
        skip_query, skip_row = _excluded(shard, exclude_by, groups) if exclude_by else (np.zeros(0, np.int64),) * 2
        step = max(1, block_entries // max(1, width))
        for start in range(0, count, step):
            stop = min(count, start + step)
            inside = (skip_query >= start) & (skip_query < stop)
            query, row, scores = beating(queries[start:stop] @ inverted, running.floors[start:stop],
                                          (skip_query[inside] - start) * width + skip_row[inside])
            running.add(query + start, (position << ROW_BITS) | row, scores)
    return running.hits()


@dataclass
class Gathered:
    """What ``gather`` read for a set of hits: their tie keys (sorted), and aligned with them their rows'
    identities (``columns``)."""

    ties: np.ndarray
    columns: dict[str, list]

    def at(self, ties: np.ndarray) -> np.ndarray:
        """Positions of ``ties`` (all gathered) in the arrays."""
        return np.searchsorted(self.ties, ties)

    @cached_property
    def identities(self) -> list[dict]:
        """One dict per gathered row, shared by the hits that name it."""
        return [dict(zip(self.columns, row, strict=True)) for row in zip(*self.columns.values(), strict=True)]

    def rows(self, ties: np.ndarray) -> list[dict]:
        """The identities of ``ties``."""
        return list(map(self.identities.__getitem__, self.at(ties).tolist()))

    def column(self, name: str, ties: np.ndarray) -> list:
        """One field of the rows of ``ties`` (for a caller that needs no more: no dict per row)."""
        return list(map(self.columns[name].__getitem__, self.at(ties).tolist()))


def distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values: a sort and a neighbour test (numpy 2's ``np.unique`` hashes first, measured 50x
    slower on 300k tie keys)."""
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])] if len(values) else values


def gather(found: Iterable[Hits], load: Callable[[int], CollectionShard]) -> Gathered:
    """The identities of every hit's row, loading each shard that holds one once, in turn."""
    ties = distinct(np.concatenate([np.zeros(0, np.int64), *(hits.ties for hits in found)]))
    shards, rows = ties >> ROW_BITS, ties & ((1 << ROW_BITS) - 1)
    names, out = None, {}
    for position in distinct(shards).tolist():
        first, last = np.searchsorted(shards, [position, position + 1])  # the ties are sorted: so are their shards
        shard, these = load(position), rows[first:last].tolist()
        names = names or list(shard.columns)
        for name in names:
            out.setdefault(name, []).extend(map(shard.columns[name].__getitem__, these))
    return Gathered(ties, out)


def row_dots(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Each row's dot product with its query (``rows[i] . queries[i]``; UNIMO App. A's rerank cosines, of
    L2-normalised vectors), summed in float64 and rounded once: the same float32 however the rows are batched
    (a rerank streams a query's candidates a collection shard at a time)."""
    return np.einsum("ij,ij->i", rows, queries, dtype=np.float64).astype(np.float32)


class ShardsInMemory:
    """A collection whose shards are all held (tests, benchmarks, the service): the interface of
    ``pipelines.tfidf_collections.Collection`` (``each_shard``, ``load``) without files."""

    def __init__(self, shards: Sequence[CollectionShard]):
        self.shards = list(shards)

    def each_shard(self) -> Iterator[CollectionShard]:
        return iter(self.shards)

    def load(self, position: int) -> CollectionShard:
        return self.shards[position]
