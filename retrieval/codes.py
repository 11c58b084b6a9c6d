"""The related-texts collection's vectors as FAISS codes, for UNIMO App. A's embedding rerank.

The rerank scores each query's M TF-IDF candidates (M = 1000) by the cosine of their sentence embeddings.
The candidates of a query shard touch nearly every collection shard, so a query shard reading their vectors
from the collection's files reads ~all of them: 0.8 TB of 384-d float32 vectors at the papers' size, once per
query shard. Instead every vector is kept as a code in one array, row after row in collection order, which a
worker memory-maps (the processes of a machine share its pages) and reads by position. The codec is a FAISS
standalone codec (``sa_encode`` / ``sa_decode``) named by its factory string: ``Flat`` keeps the float32 vectors
(the exact cosines; 1,536 bytes a 384-d vector), ``SQfp16`` / ``SQ8`` two / one byte a dimension, ``PQ32``
32 bytes (533M texts: 17 GB). A candidate's vector is decoded from its code; the query's stays exact.

    <folder>/codec.faiss    the codec, trained on a sample of the collection's vectors (none: no vector at all)
    <folder>/rows.bin       the codes, one ``code_size`` row per collection row, in collection order
    <folder>/starts.npy     each collection shard's first row, and the number of rows last
    <folder>/codes.json     factory, dimension, code size: written last, the proof the folder is whole
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from retrieval.tfidf import ROW_BITS, row_dots

CODEC, ROWS, STARTS, META = "codec.faiss", "rows.bin", "starts.npy", "codes.json"
FILES = (CODEC, ROWS, STARTS, META)  # the proof last (``retrieval.files.local_copy``)
TRAIN_SAMPLE = 65_536  # vectors a codec is trained on at most: 256 per centroid of an 8-bit PQ
PAIRS_AT_ONCE = 4096  # (query, candidate) cosines computed together: ~20 MB of decoded vectors, float64 included


def make_codec(factory: str, sample: np.ndarray) -> bytes:
    """The codec ``factory`` for vectors like ``sample`` (n, dim), trained on it when it needs training."""
    import faiss

    try:
        codec = faiss.index_factory(sample.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        codec.sa_code_size()
    except RuntimeError as error:
        raise ValueError(f"rerank codec {factory!r}: not a FAISS codec with sa_encode/sa_decode for "
                         f"{sample.shape[1]}-d vectors (e.g. Flat, SQfp16, SQ8, PQ32, OPQ32,PQ32): "
                         f"{str(error).strip().splitlines()[-1]}") from None
    if not codec.is_trained:
        try:
            codec.train(np.ascontiguousarray(sample, dtype=np.float32))
        except RuntimeError as error:
            raise ValueError(f"rerank codec {factory!r} could not be trained on the collection's {len(sample)} "
                             f"sampled vectors (a small collection: use Flat or SQ8): "
                             f"{str(error).strip().splitlines()[-1]}") from None
    return faiss.serialize_index(codec).tobytes()


def _codec(data: bytes):
    import faiss

    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def encode(codec: bytes, vectors: np.ndarray, where: str = "vectors") -> bytes:
    """The codes of ``vectors`` (n, dim), row after row; vectors of another dimension than the codec's (texts
    embedded by another model) are a ValueError naming ``where``."""
    if not len(vectors):
        return b""
    instance = _codec(codec)
    _same_dimension(vectors, instance.d, where)
    return instance.sa_encode(np.ascontiguousarray(vectors, dtype=np.float32)).tobytes()


def _same_dimension(vectors: np.ndarray, dimension: int, where: str) -> None:
    if vectors.shape[1] != dimension:
        raise ValueError(f"{where}: {vectors.shape[1]}-d vectors, the related-texts collection's codes are "
                         f"{dimension}-d: embed the query and collection sources with one model (`unicorpus embed`)")


def meta_bytes(factory: str, codec: bytes | None) -> bytes:
    """The proof file: what a reader needs to interpret ``rows.bin``."""
    instance = None if codec is None else _codec(codec)
    return json.dumps({"factory": factory, "dimension": 0 if instance is None else instance.d,
                       "code_size": 0 if instance is None else instance.sa_code_size()}).encode()


def starts_of(lengths: Sequence[int]) -> np.ndarray:
    """Each shard's first row (and the total last), of the shards' row counts in collection order."""
    return np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))]).astype(np.int64)


class Codes:
    """The codes of a collection's vectors, read by tie key (``tfidf.ROW_BITS``: shard position, row)."""

    def __init__(self, meta: dict, codec: bytes | None, rows: np.ndarray, starts: np.ndarray):
        self.meta, self.starts = meta, starts
        self.whole = None if codec is None else _codec(codec)  # owns the parts _rotated hands out
        self.codec, self.rotations = _rotated(self.whole) if codec is not None else (None, [])
        self.rows = rows.reshape(-1, max(meta["code_size"], 1))

    @classmethod
    def load(cls, folder: str, cache: str | None = None) -> Codes:
        """The codes a build wrote to ``folder`` (local or a URL: a remote one is copied once into ``cache``,
        as an index is), ``rows.bin`` memory-mapped."""
        from retrieval import files

        proof = files.read_proof(folder, META, "the rerank codes are built with the related-texts collection by "
                                               "`unicorpus retrieve`")
        meta = json.loads(proof)
        names = [name for name in FILES if name != CODEC or meta["dimension"]]
        local = files.local_copy(folder, names, cache, proof)
        codec = None
        if meta["dimension"]:
            with open(os.path.join(local, CODEC), "rb") as f:
                codec = f.read()
        return cls(meta, codec, files.mapped(os.path.join(local, ROWS), np.uint8),
                   np.load(os.path.join(local, STARTS)))

    @classmethod
    def of(cls, factory: str, shards: Sequence[np.ndarray]) -> Codes:
        """The codes of every shard's vectors (n_i, dim), in collection order, in memory: the steps of the
        Beam build (``pipelines.tfidf_collections``) in one process (tests, benchmarks)."""
        stacked = np.concatenate([s for s in shards if len(s)]) if any(len(s) for s in shards) else None
        codec = None if stacked is None else make_codec(factory, sample_rows(stacked, TRAIN_SAMPLE))
        rows = b"".join(encode(codec, s) for s in shards if len(s))
        return cls(json.loads(meta_bytes(factory, codec)), codec, np.frombuffer(rows, dtype=np.uint8),
                   starts_of([len(s) for s in shards]))

    def vectors(self, ties: np.ndarray) -> np.ndarray:
        """The decoded vectors of the rows of ``ties`` (in the space the codes' rotations lead to: ``rotate``)."""
        rows = self.rows[self.starts[ties >> ROW_BITS] + (ties & ((1 << ROW_BITS) - 1))]
        return self.codec.sa_decode(np.ascontiguousarray(rows))

    def rotate(self, queries: np.ndarray) -> np.ndarray:
        """``queries`` in the space of the decoded vectors: OPQ's rotation R applied to each query once, as
        q . (R^T y) = (R q) . y, rather than its transpose to each of its 1,000 candidates."""
        out = np.ascontiguousarray(queries, dtype=np.float32)
        for rotation in self.rotations:
            out = rotation.apply(out)
        return out

    def cosines(self, ties: np.ndarray, query_of: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """Each pair's embedding cosine: the row of ``ties[i]`` decoded, with the (L2-normalised) query vector
        ``queries[query_of[i]]``; pairs read in row order (neighbouring codes share pages), ``PAIRS_AT_ONCE``
        at a time (a query shard's pairs' vectors are never all held: 1.5 GB a thousand queries)."""
        out = np.zeros(len(ties), dtype=np.float32)
        if not len(ties):
            return out
        _same_dimension(queries, self.meta["dimension"], "the queries")
        order, queries = np.argsort(ties, kind="stable"), self.rotate(queries)
        for first in range(0, len(order), PAIRS_AT_ONCE):
            these = order[first:first + PAIRS_AT_ONCE]
            out[these] = row_dots(self.vectors(ties[these]), queries[query_of[these]])
        return out


def _rotated(codec) -> tuple:
    """(the codec that decodes, the rotations before it): a chain of orthonormal linear maps without bias
    (OPQ) is split off, its inverse never applied (``Codes.rotate``); any other codec decodes whole."""
    import faiss

    if isinstance(codec, faiss.IndexPreTransform):
        chain = [faiss.downcast_VectorTransform(codec.chain.at(i)) for i in range(codec.chain.size())]
        if all(isinstance(t, faiss.LinearTransform) and t.is_orthonormal and not t.have_bias for t in chain):
            return faiss.downcast_index(codec.index), chain
    return codec, []


def sample_rows(vectors: np.ndarray, most: int) -> np.ndarray:
    """At most ``most`` of ``vectors``' rows, evenly spaced (deterministic)."""
    if len(vectors) <= most:
        return vectors
    return vectors[np.linspace(0, len(vectors) - 1, most).astype(np.int64)]
