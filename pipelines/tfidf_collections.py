"""Sharded TF-IDF collections (``retrieval.tfidf``), built once with Beam and searched shard by shard.

A collection is the documents of some sidecar or raw shards (rewrite's captions, retrieve's region labels
and texts), kept in a folder named by a digest of what it was built from:

    <folder>/frequencies.pkl            the document frequencies: a Beam combine over every document
    <folder>/<source>/NNNNN.npz         one CSR matrix + row identities (+ vectors) per input shard

or, for a collection searched through its postings (``postings=True``: the related items, ``retrieval.postings``),
the matrix alone in the ``.npz`` and beside it

    <folder>/<source>/NNNNN.arrow       the row store: the shard's identities (+ vectors), by record batch
    <folder>/postings/SSSSS-BBBBB.npy   the term-partitioned postings (+ ``.offsets.npy``): a segment of shards'
                                        entries for a bucket of terms each
    <folder>/postings/plan.npz          the buckets' first terms and the segments, written last

Up to three pipelines, each skipped when its files exist (every file is written under a temporary name, then
renamed, so a killed build resumes where it stopped and gives the same files). A worker then loads the
frequencies (the vocabulary, not the documents) and one shard file at a time, or the postings of its queries'
terms and the rows of its hits: its memory does not grow with the collection.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import apache_beam as beam

from pipelines import storage
from schemas.keys import shard_name

FREQUENCIES = "frequencies.pkl"


class AsCombineFn(beam.CombineFn):
    """Any (picklable) object with the four CombineFn methods, as a Beam CombineFn (the combiners themselves
    import no Beam: a test calls them without a pipeline)."""

    def __init__(self, combiner):
        self.combiner = combiner

    def create_accumulator(self):
        return self.combiner.create_accumulator()

    def add_input(self, accumulator, element):
        return self.combiner.add_input(accumulator, element)

    def merge_accumulators(self, accumulators):
        return self.combiner.merge_accumulators(accumulators)

    def extract_output(self, accumulator):
        return self.combiner.extract_output(accumulator)


@dataclass(frozen=True)
class Collection:
    """What a collection is made of and how its documents are vectorised. ``read(source, shard)`` gives the
    shard's documents (dicts) in collection order; ``terms`` is the field the analyzer reads, ``columns``
    the fields kept as each row's identity, ``vector`` the field of a vector kept for a rerank."""

    folder: str
    shards: tuple[tuple[str, int], ...]
    read: Callable[[str, int], list[dict]]
    analyzer: Callable
    terms: str
    columns: tuple[str, ...]
    vector: str | None = None
    max_df: float = 1.0
    dtype: str = "float64"
    sorted_terms: bool = True
    postings: bool = False  # searched through term-partitioned postings and a row store (``retrieval.postings``)
    cap: int | None = None  # with postings: the entries kept per term, its heaviest (None: all, exact)

    def analyze(self, document: dict) -> Sequence[str]:
        return self.analyzer(document[self.terms])

    def shard_path(self, source: str, shard: int) -> str:
        return storage.join(self.folder, source, f"{shard_name(shard)}.npz")

    def rows_path(self, source: str, shard: int) -> str:
        return storage.join(self.folder, source, f"{shard_name(shard)}.arrow")

    def index(self):
        """The collection's ``retrieval.postings.PostingsIndex`` (built with ``postings=True``)."""
        from retrieval.postings import PostingsIndex

        return PostingsIndex(lambda name: storage.open_read(storage.join(self.folder, name)),
                             lambda position: _open_rows(self.rows_path(*self.shards[position])))

    def vectorizer(self):
        """The collection's vectorizer (documents: dicts, as ``read`` gives them); needs the frequencies."""
        from retrieval.tfidf import TfidfVectorizer

        return TfidfVectorizer(_frequencies(storage.join(self.folder, FREQUENCIES)), self.analyze, self.max_df,
                               self.dtype, self.sorted_terms)

    def load(self, position: int):
        """The ``position``-th shard of the collection (``retrieval.tfidf.CollectionShard``)."""
        from retrieval.tfidf import shard_from_bytes

        return shard_from_bytes(storage.read_bytes(self.shard_path(*self.shards[position])))

    def each_shard(self) -> Iterator:
        """Every shard in collection order, one loaded at a time."""
        return (self.load(position) for position in range(len(self.shards)))


def _open_rows(path: str):
    """A local row store file memory-mapped (a gather then reads the pages of its rows, not whole record
    batches), any other through the storage layer."""
    if "://" in path:
        return storage.open_read(path)
    import pyarrow as pa

    return pa.memory_map(path)


@lru_cache(maxsize=4)
def _frequencies(path: str):
    return pickle.loads(storage.read_bytes(path))


def _write_frequencies(frequencies, collection: Collection) -> None:
    storage.write_whole(storage.join(collection.folder, FREQUENCIES),
                        pickle.dumps(frequencies, protocol=pickle.HIGHEST_PROTOCOL))


def _write_shard(shard: tuple[str, int], collection: Collection) -> None:
    """One shard file: the shard's documents vectorised with the collection's frequencies."""
    import numpy as np

    from retrieval.tfidf import CollectionShard, shard_bytes

    documents = collection.read(*shard)
    vectors = None
    if collection.vector:  # (0, 0) for a table without rows: numpy cannot reshape nothing to (0, -1)
        vectors = np.array([d[collection.vector] for d in documents], dtype=np.float32).reshape(len(documents), -1) \
            if documents else np.zeros((0, 0), dtype=np.float32)
    columns = {name: [d[name] for d in documents] for name in collection.columns}
    matrix = collection.vectorizer().transform(documents)
    if collection.postings:  # identities and vectors in the row store, written first: the .npz marks the shard done
        from retrieval.rowstore import rows_bytes

        storage.write_whole(collection.rows_path(*shard), rows_bytes(columns, vectors))
        columns, vectors = {}, None
    storage.write_whole(collection.shard_path(*shard), shard_bytes(CollectionShard(matrix, columns, vectors)))


def _shard_entries(position: int, collection: Collection, plan) -> list:
    from retrieval.postings import shard_entries

    return list(shard_entries(collection.load(position).matrix, position, plan))


def _write_part(item: tuple, collection: Collection, plan, vocabulary: int) -> None:
    from retrieval.postings import bucket_files

    for name, data in bucket_files(item[0], plan, vocabulary, item[1]).items():
        storage.write_whole(storage.join(collection.folder, name), data)


def _build_postings(collection: Collection, runner) -> None:
    """The postings: each shard's entries by (segment, bucket), each part's (capped) lists combined, then the
    plan. What an earlier, killed build left is removed first (the combine writes every part again)."""
    from pipelines.runner import pipeline_options
    from retrieval.postings import PLAN, TopPostings, parts, plan_postings

    storage.delete(storage.glob(storage.join(collection.folder, "postings", "*")))
    vectorizer = collection.vectorizer()
    plan = plan_postings(vectorizer.document_counts, collection.cap, len(collection.shards))
    vocabulary, combiner = len(vectorizer.vocabulary), TopPostings(collection.cap)
    with beam.Pipeline(options=pipeline_options(runner)) as pipeline:
        (pipeline
         | "Shards" >> beam.Create(list(range(len(collection.shards))))
         | "Spread" >> beam.Reshuffle()
         | "Entries" >> beam.FlatMap(_shard_entries, collection, plan)
         | "Lists" >> beam.CombinePerKey(AsCombineFn(combiner))
         | "Write" >> beam.Map(_write_part, collection, plan, vocabulary))
    written = set(storage.glob(storage.join(collection.folder, "postings", "*.npy")))
    for part in parts(plan):  # a part no shard had an entry for
        if storage.join(collection.folder, plan.name(*part)) not in written:
            _write_part((part, combiner.extract_output([])), collection, plan, vocabulary)
    storage.write_whole(storage.join(collection.folder, PLAN), plan.to_bytes())


def build(collection: Collection, runner) -> None:
    """The frequencies, then every missing shard file, then (``postings``) the postings unless complete
    (``runner``: a ``pipelines.runner.RunnerConfig``); nothing runs when all exist. Temporaries of a killed
    build are removed first. The shard files that exist: one listing per source folder (``storage.names_in``),
    not an ``exists`` per shard."""
    from pipelines.runner import pipeline_options
    from retrieval.tfidf import DocumentFrequencyCombiner

    storage.delete(storage.glob(storage.join(collection.folder, "*.tmp-*"))
                   + storage.glob(storage.join(collection.folder, "*", "*.tmp-*")))
    if not storage.exists(storage.join(collection.folder, FREQUENCIES)):
        with beam.Pipeline(options=pipeline_options(runner)) as pipeline:
            (pipeline
             | "Shards" >> beam.Create(list(collection.shards))
             | "Spread" >> beam.Reshuffle()
             | "Documents" >> beam.FlatMapTuple(collection.read)
             | "Frequencies" >> beam.CombineGlobally(AsCombineFn(DocumentFrequencyCombiner(collection.analyze)))
             | "Write" >> beam.Map(_write_frequencies, collection))
    names = storage.names_in(storage.join(collection.folder, source) for source, _ in collection.shards)
    missing = [shard for shard in collection.shards if not storage.listed(names, collection.shard_path(*shard))]
    if missing:
        with beam.Pipeline(options=pipeline_options(runner)) as pipeline:
            (pipeline
             | "Shards" >> beam.Create(missing)
             | "Spread" >> beam.Reshuffle()
             | "Matrices" >> beam.Map(_write_shard, collection))
    if collection.postings:
        from retrieval.postings import PLAN

        if not storage.exists(storage.join(collection.folder, PLAN)):
            _build_postings(collection, runner)


def remove_others(stats: str, keep: str | None = None) -> None:
    """The files of the collections under ``stats`` (``tfidf-*/``) but ``keep``: those of an earlier state.
    (Files, not folders: a glob lists no folder, and an object store has none.)"""
    files = storage.glob(storage.join(stats, "tfidf-*", "*")) + storage.glob(storage.join(stats, "tfidf-*", "*", "*"))
    storage.delete([path for path in files if keep is None or not path.startswith(keep.rstrip("/") + "/")])
