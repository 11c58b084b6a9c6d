"""Sharded TF-IDF collections (``retrieval.tfidf``), built once with Beam and searched shard by shard.

A collection is the documents of some sidecar or raw shards (rewrite's captions, retrieve's region labels
and texts), kept in a folder named by a digest of what it was built from:

    <folder>/frequencies.pkl            the document frequencies: a Beam combine over every document
    <folder>/<source>/NNNNN.npz         one CSR matrix + row identities per input shard

or, for a collection searched through its postings (``postings=True``: the related items, ``retrieval.postings``),
the matrix alone in the ``.npz`` and beside it

    <folder>/<source>/NNNNN.arrow       the row store: the shard's identities, by record batch
    <folder>/postings/SSSSS-BBBBB.npy   the term-partitioned postings (+ ``.offsets.npy``): a segment of shards'
                                        entries for a bucket of terms each
    <folder>/postings/plan.npz          the buckets' first terms and the segments, written last

and, for a collection with vectors (related texts' rerank), the vectors as FAISS codes (``retrieval.codes``):

    <folder>/codes/codec.faiss          the codec, trained first on vectors spread over the collection
    <folder>/<source>/NNNNN.codes       one shard's codes, written with its row store
    <folder>/codes/rows.bin, starts.npy the parts appended in collection order, then codes.json; parts removed

Up to three pipelines, each skipped when its files exist (every file is written under a temporary name, then
renamed, so a killed build resumes where it stopped and gives the same files). A worker then loads the
frequencies (the vocabulary, not the documents) and one shard file at a time, or the postings of its queries'
terms and the rows of its hits: its memory does not grow with the collection.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import apache_beam as beam

from pipelines import storage
from schemas.keys import shard_name

FREQUENCIES = "frequencies.pkl"
CODES = "codes"
TRAIN_SHARDS = 64  # shards the rerank codec's training sample is spread over (retrieval.codes.TRAIN_SAMPLE in all)


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
    the fields kept as each row's identity, ``vector`` the field of a vector kept for a rerank, as ``codec``
    codes (a FAISS factory string, ``retrieval.codes``; with ``postings``)."""

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
    codec: str = "Flat"

    def __post_init__(self):
        if self.vector is not None and not self.postings:
            raise ValueError(f"collection {self.folder}: a rerank vector ({self.vector!r}) is kept as codes beside "
                             "postings: set postings=True")

    def analyze(self, document: dict) -> Sequence[str]:
        return self.analyzer(document[self.terms])

    def shard_path(self, source: str, shard: int) -> str:
        return storage.join(self.folder, source, f"{shard_name(shard)}.npz")

    def rows_path(self, source: str, shard: int) -> str:
        return storage.join(self.folder, source, f"{shard_name(shard)}.arrow")

    def code_part(self, source: str, shard: int) -> str:
        return storage.join(self.folder, source, f"{shard_name(shard)}.codes")

    def codes_folder(self) -> str:
        return storage.join(self.folder, CODES)

    def codes(self):
        """The collection's vectors as codes (``retrieval.codes.Codes``; built with ``postings`` and ``vector``)."""
        from retrieval.codes import Codes

        return Codes.load(self.codes_folder())

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


@lru_cache(maxsize=4)
def _read_once(path: str) -> bytes:
    """A file a worker reads for every shard (the rerank codec, ~1 MB with OPQ32,PQ32), once per process."""
    return storage.read_bytes(path)


def _write_frequencies(frequencies, collection: Collection) -> None:
    storage.write_whole(storage.join(collection.folder, FREQUENCIES),
                        pickle.dumps(frequencies, protocol=pickle.HIGHEST_PROTOCOL))


def _vectors(documents: list[dict], name: str):
    """The documents' ``name`` vectors (n, dim); (0, 0) for none: numpy cannot reshape nothing to (0, -1)."""
    import numpy as np

    if not documents:
        return np.zeros((0, 0), dtype=np.float32)
    return np.array([d[name] for d in documents], dtype=np.float32).reshape(len(documents), -1)


def _train_codec(collection: Collection) -> None:
    """The rerank codec, trained on ``retrieval.codes.TRAIN_SAMPLE`` vectors from up to ``TRAIN_SHARDS`` shards
    with rows, taken in a spread order (golden-ratio steps: the first few already span the collection, every
    source of it), each read and thinned by one of ``storage.READ_THREADS`` threads; none is written when the
    collection has no vector at all."""
    import numpy as np

    from retrieval.codes import CODEC, TRAIN_SAMPLE, make_codec, sample_rows

    def sampled(position: int):
        return position, sample_rows(_vectors(collection.read(*collection.shards[position]), collection.vector), each)

    count = len(collection.shards)
    spread = np.argsort((np.arange(count) * 0.6180339887498949) % 1.0, kind="stable").tolist()
    each, sample = TRAIN_SAMPLE // max(1, min(count, TRAIN_SHARDS)), []
    for first in range(0, count, TRAIN_SHARDS):  # read side by side; further on only where shards were empty
        sample += [found for found in storage.read_all(sampled, spread[first:first + TRAIN_SHARDS]) if len(found[1])]
        if len(sample) >= TRAIN_SHARDS:
            break
    sample = sample[:TRAIN_SHARDS]
    dimensions = {vectors.shape[1]: position for position, vectors in sample}
    if len(dimensions) > 1:  # sources embedded by different models
        found = ", ".join(f"{d}-d in {'/'.join(map(str, collection.shards[p]))}" for d, p in sorted(dimensions.items()))
        raise ValueError(f"the related-texts collection's vectors differ in dimension ({found}): embed every source "
                         "with one model (`unicorpus embed`)")
    if sample:
        storage.write_whole(storage.join(collection.codes_folder(), CODEC),
                            make_codec(collection.codec, np.concatenate([vectors for _, vectors in sample])))


def _write_codes(collection: Collection) -> None:
    """The shards' code parts appended in collection order into one file (``storage.READ_THREADS`` parts read
    at once: ~5 MB with PQ32 at the papers' shard size), the shards' first rows, then ``codes.json`` (last: a
    reader trusts the files it finds with it); then the parts are removed (also those a build killed after
    ``codes.json`` left)."""
    import json

    from retrieval.codes import CODEC, META, ROWS, STARTS, meta_bytes, starts_of
    from retrieval.postings import npy_bytes

    folder = collection.codes_folder()
    if not storage.exists(storage.join(folder, META)):
        codec = storage.read_bytes(storage.join(folder, CODEC)) if storage.exists(storage.join(folder, CODEC)) \
            else None
        meta = meta_bytes(collection.codec, codec)
        code_size, lengths = json.loads(meta)["code_size"], []
        target = storage.join(folder, ROWS)
        tmp = f"{target}.tmp-{uuid.uuid4().hex}"
        parts = [collection.code_part(*shard) for shard in collection.shards]
        with storage.create(tmp) as stream:
            for first in range(0, len(parts), storage.READ_THREADS):  # read side by side, written in order
                for data in storage.read_all(storage.read_bytes, parts[first:first + storage.READ_THREADS]):
                    lengths.append(len(data) // code_size if code_size else 0)
                    stream.write(data)
        storage.rename(tmp, target)
        storage.write_whole(storage.join(folder, STARTS), npy_bytes(starts_of(lengths)))
        storage.write_whole(storage.join(folder, META), meta)
    storage.delete(storage.glob(storage.join(collection.folder, "*", "*.codes")))


def _write_shard(shard: tuple[str, int], collection: Collection) -> None:
    """One shard file: the shard's documents vectorised with the collection's frequencies."""
    from retrieval.tfidf import CollectionShard, shard_bytes

    documents = collection.read(*shard)
    columns = {name: [d[name] for d in documents] for name in collection.columns}
    matrix = collection.vectorizer().transform(documents)
    if collection.postings:  # identities in the row store, vectors as codes, first: the .npz marks the shard done
        from retrieval.codes import CODEC, encode
        from retrieval.rowstore import rows_bytes

        storage.write_whole(collection.rows_path(*shard), rows_bytes(columns))
        if collection.vector:
            vectors = _vectors(documents, collection.vector)
            codec = _read_once(storage.join(collection.codes_folder(), CODEC)) if len(vectors) else b""
            storage.write_whole(collection.code_part(*shard), encode(codec, vectors, f"{shard[0]}/{shard[1]:05d}"))
        columns = {}
    storage.write_whole(collection.shard_path(*shard), shard_bytes(CollectionShard(matrix, columns)))


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
    """(``postings`` with a ``vector``) the rerank codec, then the frequencies, then every missing shard file,
    then (``postings``) the postings and the codes unless complete (``runner``: a
    ``pipelines.runner.RunnerConfig``); nothing runs when all exist. Temporaries of a killed build are removed
    first. The shard files that exist: one listing per source folder (``storage.names_in``), not an ``exists``
    per shard."""
    from pipelines.runner import pipeline_options
    from retrieval.tfidf import DocumentFrequencyCombiner

    storage.delete(storage.glob(storage.join(collection.folder, "*.tmp-*"))
                   + storage.glob(storage.join(collection.folder, "*", "*.tmp-*")))
    with_codes = collection.vector is not None
    if with_codes:  # first: a codec that is none, or cannot be trained, stops the build before a pass over the texts
        from retrieval.codes import CODEC, META

        if not any(storage.exists(storage.join(collection.codes_folder(), name)) for name in (CODEC, META)):
            _train_codec(collection)
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
    if with_codes:
        _write_codes(collection)


def remove_others(stats: str, keep: str | None = None) -> None:
    """The collections under ``stats`` (``tfidf-*/``) but ``keep``: those of an earlier state. Their files (a
    glob lists no folder, and an object store has none), then, on local disk, their folders."""
    files = storage.glob(storage.join(stats, "tfidf-*", "*")) + storage.glob(storage.join(stats, "tfidf-*", "*", "*"))
    stale = [path for path in files if keep is None or not path.startswith(keep.rstrip("/") + "/")]
    storage.delete(stale)
    prefix = stats.rstrip("/") + "/"
    storage.remove_empty_folders(sorted({prefix + path[len(prefix):].split("/", 1)[0] for path in stale}))
