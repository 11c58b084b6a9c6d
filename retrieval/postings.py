"""Term-partitioned postings of a sharded TF-IDF collection: a related-items search whose reads per query shard
follow its own queries' terms, not the size of the collection, and whose memory is one segment's lists (UNIMO
App. A related images and texts, and UNIMO §2.1's TF-IDF hard negatives, at the papers' size; docs/SCALE.md).

``tfidf.search`` scans every collection shard for every query shard, so a whole related-items job grows as
N^2 (docs/BENCHMARKS.md). Here the collection's inverted index is written once (``pipelines.tfidf_collections``
builds it with Beam), beside the row store (``retrieval.rowstore``), in *segments* of consecutive collection
shards holding about ``SEGMENT_ENTRIES`` entries (a capped collection is one segment, its lists being short):

- ``postings/SSSSS-BBBBB.npy``: the entries (row tie key, weight) of segment S's rows for a bucket B of
  consecutive terms, each term's heaviest first (impact order: weight, then collection order) and, with a
  ``cap``, only its ``cap`` heaviest; ``postings/SSSSS-BBBBB.offsets.npy`` where each term's entries start.
  Buckets hold about ``BUCKET_ENTRIES`` entries per segment (planned from the document frequencies;
  ``postings/plan.npz``: the buckets' first terms and the segments, written last: the index is complete when
  it exists).

A query shard reads, segment by segment (in collection order, as the scan goes shard by shard), the byte
ranges of its own terms' entries, scores the rows they name by one sparse product per block of queries into
one running top per query, then reads its hits' keys (and any other column a query excludes by), drops the
rows sharing the query's (its own sample; for rewrite's negatives also its caption's words) and searches
again, with more slack, the queries whose slack was too small. An exact search still scores every pair of a
query and a row sharing a term (N^2 for a job); what a worker holds is one segment's part of its terms' lists,
whatever the collection's size.
With no cap the hits are ``tfidf.search``'s bit for bit (the same products summed in the same order, the same
tie keys); with a cap, a row is missed where it is not among the ``cap`` heaviest of any term it shares with
the query, and its score lacks the terms where it is not (recall measured in docs/BENCHMARKS.md).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

import numpy as np

from retrieval.rowstore import RowStore, rows_bytes
from retrieval.tfidf import BLOCK_ENTRIES, ROW_BITS, Gathered, Hits, RunningTop, beating, distinct

BUCKET_ENTRIES = 1 << 20  # entries a bucket holds per segment, about (one term may hold more)
SEGMENT_ENTRIES = 1 << 23  # entries a segment of an exact collection holds, about (a query shard holds one's share
# of its terms' lists at a time: at most 8M entries of 16 bytes, whatever the collection's size)
READ_GAP = 4096  # entries skipped rather than a new read between two wanted terms of a bucket
CHUNK_ENTRIES = 1 << 13  # postings entries scored per chunk of consecutive rows (see ``PostingsIndex.scored``)
SLACK = 8  # hits kept beyond the top k, for the rows of the query's own sample (doubled where too few)
PLAN = "postings/plan.npz"


def entry_dtype(weights) -> np.dtype:
    return np.dtype([("tie", "<i8"), ("weight", np.dtype(weights).newbyteorder("<"))])


def plan_buckets(lengths: np.ndarray, cap: int | None, entries: int | None = None) -> np.ndarray:
    """The first term of each bucket: consecutive terms whose lists (``lengths``: each term's document count,
    cut at ``cap``) add up to at most ``entries`` (``BUCKET_ENTRIES``), a term longer than that alone."""
    entries = entries or BUCKET_ENTRIES
    sizes = np.asarray(lengths, dtype=np.int64) if cap is None else np.minimum(lengths, cap).astype(np.int64)
    first, total = [], 0
    for term, size in enumerate(sizes.tolist()):
        if not first or total + size > entries:
            first.append(term)
            total = 0
        total += size
    return np.array(first, dtype=np.int64)


@dataclass(frozen=True)
class Plan:
    """How a collection's postings are cut: buckets of terms (``first_terms``) and segments of
    ``segment_shards`` consecutive collection shards."""

    first_terms: np.ndarray
    segments: int
    segment_shards: int

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        np.savez(out, first_terms=self.first_terms, segments=self.segments, segment_shards=self.segment_shards)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Plan:
        with np.load(io.BytesIO(data), allow_pickle=False) as plan:
            return cls(plan["first_terms"], int(plan["segments"]), int(plan["segment_shards"]))

    def name(self, segment: int, bucket: int) -> str:
        return f"postings/{segment:05d}-{bucket:05d}.npy"


def plan_postings(lengths: np.ndarray, cap: int | None, shards: int, segment_entries: int | None = None) -> Plan:
    """The plan of a collection of ``shards`` shards whose terms have ``lengths`` documents: an exact one in
    segments of as many shards as hold ``segment_entries`` (``SEGMENT_ENTRIES``) entries on average, a capped
    one in one segment (its lists hold ``cap`` entries at most whatever the collection's size); buckets of
    about ``BUCKET_ENTRIES`` entries per segment."""
    entries = int(np.sum(lengths))
    segment_shards = max(1, shards) if cap is not None else \
        max(1, (segment_entries or SEGMENT_ENTRIES) * shards // max(1, entries))
    segments = max(1, -(-shards // segment_shards))
    return Plan(plan_buckets(lengths, cap, BUCKET_ENTRIES * segments), segments, segment_shards)


def bucket_of(first_terms: np.ndarray, terms: np.ndarray) -> np.ndarray:
    return np.searchsorted(first_terms, terms, side="right") - 1


def shard_entries(matrix, position: int, plan: Plan) -> Iterator[tuple[tuple[int, int], tuple]]:
    """A collection shard's entries (term, tie key, weight) by part: ((segment, bucket), (terms, ties, weights))."""
    coo = matrix.tocoo()
    terms, weights = coo.col.astype(np.int64), coo.data
    ties = (np.int64(position) << ROW_BITS) | coo.row.astype(np.int64)
    buckets = bucket_of(plan.first_terms, terms)
    order = np.argsort(buckets, kind="stable")
    bounds = np.flatnonzero(np.diff(buckets[order])) + 1
    for part in np.split(order, bounds) if len(order) else []:
        yield (position // plan.segment_shards, int(buckets[part[0]])), (terms[part], ties[part], weights[part])


def impact_order(terms: np.ndarray, ties: np.ndarray, weights: np.ndarray,
                 cap: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries by term, each term's heaviest first (then the earlier row), its first ``cap`` only."""
    order = np.lexsort((ties, -weights, terms))
    terms, ties, weights = terms[order], ties[order], weights[order]
    if cap is not None:
        keep = np.arange(len(terms)) - np.searchsorted(terms, terms, side="left") < cap
        terms, ties, weights = terms[keep], ties[keep], weights[keep]
    return terms, ties, weights


class TopPostings:
    """CombineFn semantics (no Beam import) over one bucket's entries from every shard: each term's ``cap``
    heaviest. An accumulator is a list of entry arrays, put in impact order and cut whenever it holds more than
    ``hold`` entries, so a worker holds about twice a bucket's (capped) entries whatever the collection's size.
    The output does not depend on the order workers merged in (an entry of the final top of its term is in the
    top of every part that holds it)."""

    def __init__(self, cap: int | None, hold: int | None = None):
        self.cap, self.hold = cap, hold or 2 * BUCKET_ENTRIES

    def create_accumulator(self) -> list[tuple]:
        return []

    def _held(self, parts: list[tuple]) -> list[tuple]:
        return [self.extract_output(parts)] if sum(len(part[0]) for part in parts) > self.hold else parts

    def add_input(self, accumulator: list[tuple], entries: tuple) -> list[tuple]:
        return self._held([*accumulator, entries])

    def merge_accumulators(self, accumulators) -> list[tuple]:
        held: list[tuple] = []
        for accumulator in accumulators:
            held = self._held(held + accumulator)
        return held

    def extract_output(self, accumulator: list[tuple]) -> tuple:
        if not accumulator:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        terms, ties, weights = (np.concatenate(arrays) for arrays in zip(*accumulator, strict=True))
        return impact_order(terms, ties, weights, self.cap)


def bucket_files(part: tuple[int, int], plan: Plan, vocabulary: int, entries: tuple) -> dict[str, bytes]:
    """A part's (segment, bucket) two files from its entries (in impact order): entries and per-term offsets."""
    terms, ties, weights = entries
    segment, bucket = part
    first = plan.first_terms[bucket]
    stop = plan.first_terms[bucket + 1] if bucket + 1 < len(plan.first_terms) else vocabulary
    records = np.empty(len(ties), dtype=entry_dtype(weights.dtype))
    records["tie"], records["weight"] = ties, weights
    offsets = np.searchsorted(terms, np.arange(first, stop + 1), side="left").astype(np.int64)
    name = plan.name(segment, bucket)
    return {name: npy_bytes(records), name.replace(".npy", ".offsets.npy"): npy_bytes(offsets)}


def parts(plan: Plan) -> Iterator[tuple[int, int]]:
    """Every (segment, bucket) of a plan."""
    return ((segment, bucket) for segment in range(plan.segments) for bucket in range(len(plan.first_terms)))


def npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


class Postings:
    """A collection's postings as written: a term's entries (and their offsets) read by their byte ranges."""

    def __init__(self, open_file: Callable[[str], IO[bytes]]):
        self.open_file = open_file
        with open_file(PLAN) as f:
            self.plan = Plan.from_bytes(f.read())

    def lists(self, terms: np.ndarray, segment: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, ties, weights) of ``terms`` (sorted, distinct) in ``segment``: term i's entries at
        indptr[i]:indptr[i + 1]."""
        buckets = bucket_of(self.plan.first_terms, terms)
        parts, lengths = [], []
        for bucket in distinct(buckets).tolist():
            name = self.plan.name(segment, bucket)
            local = terms[buckets == bucket] - self.plan.first_terms[bucket]
            bounds = self._read(name.replace(".npy", ".offsets.npy"), local, local + 2).reshape(-1, 2)
            parts.append(self._read(name, bounds[:, 0], bounds[:, 1]))
            lengths.append(bounds[:, 1] - bounds[:, 0])
        records = np.concatenate(parts) if parts else np.zeros(0, dtype=entry_dtype(np.float64))
        indptr = np.concatenate([[0], np.cumsum(np.concatenate([np.zeros(0, np.int64), *lengths]))]).astype(np.int64)
        return indptr, records["tie"], records["weight"]

    def _read(self, name: str, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
        """Items [starts[i], stops[i]) of the array in ``name`` (an ``.npy``), in order: one read per run of
        ranges less than ``READ_GAP`` items apart."""
        with self.open_file(name) as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            _, _, dtype = read_header(f)
            base = f.tell()
            runs = np.flatnonzero(np.concatenate([[True], starts[1:] - stops[:-1] > READ_GAP]))
            pieces = []
            for first, last in zip(runs.tolist(), [*runs[1:].tolist(), len(starts)], strict=True):
                low, high = int(starts[first]), int(stops[first:last].max())
                f.seek(base + low * dtype.itemsize)
                block = memoryview(f.read((high - low) * dtype.itemsize))
                if len(block) != (high - low) * dtype.itemsize:
                    raise ValueError(f"{name}: truncated postings (items {low}-{high} wanted, "
                                     f"{len(block) // dtype.itemsize} there); rebuild the collection")
                pieces += [block[(a - low) * dtype.itemsize:(b - low) * dtype.itemsize]
                           for a, b in zip(starts[first:last].tolist(), stops[first:last].tolist(), strict=True)]
        return np.frombuffer(b"".join(pieces), dtype=dtype)


def _chunks(columns: np.ndarray, limit: int) -> Iterator[tuple[int, int]]:
    """Ranges of ``columns`` (sorted) of about ``limit`` entries, never splitting a column."""
    start = 0
    while start < len(columns):
        stop = min(len(columns), start + limit)
        stop = int(np.searchsorted(columns, columns[stop - 1], side="right"))  # the whole last column
        yield start, stop
        start = stop


def _blocks(work: np.ndarray, limit: int) -> Iterator[tuple[int, int]]:
    """Consecutive ranges of queries whose ``work`` adds up to at most ``limit`` (one query at least)."""
    total, start = np.cumsum(work), 0
    while start < len(work):
        base = total[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(total, base + limit, side="right")))
        yield start, stop
        start = stop


class PostingsIndex:
    """A collection's postings and rows: ``search`` (its top k per query, its own sample's rows excluded)
    and ``gather`` (the hits' identities)."""

    def __init__(self, open_file: Callable[[str], IO[bytes]], open_rows: Callable[[int], IO[bytes]]):
        """``open_file(name)``: the postings' files (``postings/...``); ``open_rows(position)``: the row store
        file of the collection's ``position``-th shard."""
        self.postings, self.rows = Postings(open_file), RowStore(open_rows)

    def gather(self, found: Sequence[Hits], columns: Sequence[str] | None = None) -> Gathered:
        return self.rows.gather(found, columns)

    def scored(self, queries, top: int, block_entries: int = BLOCK_ENTRIES) -> list[Hits]:
        """Per query row (CSR, in the collection's TF-IDF space), its ``top`` rows by cosine (> 0), best first,
        ties to the earlier row; no row excluded.

        Segment by segment, the rows the queries' lists name are scored in chunks of consecutive rows holding
        about ``CHUNK_ENTRIES`` entries, in collection order, each in blocks of queries scoring about
        ``block_entries`` entries: as the scan goes shard by shard, so that after the first chunks most hits
        fall below their query's floor and never reach its running top."""
        from scipy import sparse

        terms = distinct(queries.indices.astype(np.int64))
        local = sparse.csr_matrix((queries.data, np.searchsorted(terms, queries.indices), queries.indptr),
                                  shape=(queries.shape[0], len(terms)))  # the queries' terms, in their order
        pattern = sparse.csr_matrix((np.ones(local.nnz), local.indices, local.indptr), shape=local.shape)
        running = RunningTop(queries.shape[0], top, queries.dtype)
        for segment in range(self.postings.plan.segments):
            indptr, ties, weights = self.postings.lists(terms, segment)
            candidates = distinct(ties)
            column, term = np.searchsorted(candidates, ties), np.repeat(np.arange(len(terms)), np.diff(indptr))
            order = np.argsort(column, kind="stable")
            for first, last in _chunks(column[order], CHUNK_ENTRIES):
                these = order[first:last][np.argsort(term[order[first:last]], kind="stable")]
                low, high = column[these].min(), column[these].max() + 1
                chunk = sparse.csr_matrix((weights[these], column[these] - low,
                                           np.concatenate([[0], np.cumsum(np.bincount(term[these],
                                                                                      minlength=len(terms)))])),
                                          shape=(len(terms), high - low))
                work = pattern @ np.diff(chunk.indptr)  # the entries each query scores in the chunk
                for start, stop in _blocks(work, block_entries):
                    query, row, scores = beating(local[start:stop] @ chunk, running.floors[start:stop],
                                                 np.zeros(0, np.int64))
                    running.add(query + start, candidates[row + low], scores)
        return running.hits()

    def _excluded(self, found: list[Hits], exclude: Mapping[str, Sequence]) -> np.ndarray:
        """Per hit of ``found`` (concatenated), whether its row shares a value of an ``exclude`` column with its
        query (``exclude[column][q]``)."""
        gathered = self.gather(found, list(exclude))
        ties = np.concatenate([np.zeros(0, np.int64), *(hits.ties for hits in found)])
        query = np.repeat(np.arange(len(found)), [len(hits.ties) for hits in found])
        at, hit = gathered.at(ties), np.zeros(len(ties), dtype=bool)
        for name, values in exclude.items():
            codes = {value: code for code, value in enumerate(dict.fromkeys(values))}  # the queries' values, once
            row_codes = np.array([codes.get(value, -1) for value in gathered.columns[name]], dtype=np.int64)
            hit |= row_codes[at] == np.array([codes[value] for value in values], dtype=np.int64)[query]
        return hit

    def search(self, queries, top: int, exclude: Mapping[str, Sequence],
               block_entries: int = BLOCK_ENTRIES) -> list[Hits]:
        """``scored``, less the rows sharing a value of an ``exclude`` column with their query
        (``exclude[column][q]``: its own sample's key, its caption's words): as ``tfidf.search`` excluding by
        those columns. The top is taken with ``SLACK`` more, the hits' values read, and a query left with fewer
        than ``top`` where more may exist is searched again with four times the slack."""
        if top < 1:
            raise ValueError(f"search: top must be at least 1, got {top}")
        out: list[Hits | None] = [None] * queries.shape[0]
        pending, slack = np.arange(queries.shape[0]), SLACK
        while len(pending):
            found = self.scored(queries[pending], top + slack, block_entries)
            counts = [len(hits.ties) for hits in found]
            excluded = self._excluded(found, {name: [values[q] for q in pending.tolist()]
                                              for name, values in exclude.items()})
            again = []
            for q, hits, out_of in zip(pending.tolist(), found, np.split(excluded, np.cumsum(counts)[:-1]),
                                       strict=True):
                if len(out_of) - out_of.sum() >= top or len(hits.ties) < top + slack:
                    out[q] = Hits(hits.ties[~out_of][:top], hits.scores[~out_of][:top])
                else:
                    again.append(q)
            pending, slack = np.array(again, dtype=np.int64), slack * 4
        return out


def index_files(shards: Sequence, cap: int | None, vocabulary: int,
                segment_entries: int | None = None) -> dict[str, bytes]:
    """Every file of the index of ``shards`` (``tfidf.CollectionShard``s, in collection order) built in one
    process: the steps of the Beam build (``pipelines.tfidf_collections``) in a loop (tests, benchmarks)."""
    lengths = sum((np.bincount(shard.matrix.indices, minlength=vocabulary) for shard in shards),
                  np.zeros(vocabulary, np.int64))  # each term's document count
    plan = plan_postings(lengths, cap, len(shards), segment_entries)
    combiner, held = TopPostings(cap), {}
    for position, shard in enumerate(shards):
        for part, entries in shard_entries(shard.matrix, position, plan):
            held[part] = combiner.add_input(held.get(part, combiner.create_accumulator()), entries)
    files = {name: data for part in parts(plan) for name, data in
             bucket_files(part, plan, vocabulary, combiner.extract_output(held.get(part, []))).items()}
    for position, shard in enumerate(shards):
        files[f"rows/{position:05d}"] = rows_bytes({name: list(values) for name, values in shard.columns.items()})
    return {**files, PLAN: plan.to_bytes()}


def in_memory(files: dict[str, bytes]) -> PostingsIndex:
    """An index on the files ``index_files`` gave."""
    return PostingsIndex(lambda name: io.BytesIO(files[name]),
                         lambda position: io.BytesIO(files[f"rows/{position:05d}"]))
