"""Related images and related texts (UNIMO §2.1, App. A "Data Augmentations"): positives for cross-modal
contrastive learning that come from other samples of the collections.

- Related images: a TF-IDF vector over the object labels of each image's regions; cosine; the top N
  (100) other images.
- Related texts: an inverted index over caption and sentence terms filters the candidates; TF-IDF keeps
  the top M (1000); a sentence-embedding cosine reranks them; the top N (100) stay.

The collection is a ``retrieval.postings.PostingsIndex`` (term-partitioned postings and a row store, built
once; a query shard reads the postings of its own terms and the rows of its hits); a query's own sample (its
``key``) is never related to it. Each function gives, per query, its hits as (row identity, score).
"""

from __future__ import annotations

import numpy as np

from retrieval.tfidf import Hits, best, distinct, row_dots


def related_images(vectorizer, index, queries: list[dict], keys: list[str], top_n: int = 100) -> list[list[
        tuple[dict, float]]]:
    """UNIMO App. A: the ``top_n`` images most similar by the TF-IDF cosine of their region labels (the
    documents of ``queries`` as the collection's vectorizer reads them), per query image: (row, cosine)."""
    return _identified(index.search(vectorizer.transform(queries), top_n, {"key": keys}), index)


def related_texts(vectorizer, index, queries: list[dict], query_vectors: np.ndarray, keys: list[str],
                  candidates: int = 1000, top_n: int = 100) -> list[list[tuple[dict, float]]]:
    """UNIMO App. A: inverted index + TF-IDF top ``candidates``, reranked by the embedding cosine (the
    collection keeps each text's L2-normalised sentence embedding); the ``top_n`` best with their embedding
    cosine, per query: (row, cosine)."""
    filtered = index.search(vectorizer.transform(queries), candidates, {"key": keys})
    reranked = []
    for hits, cosines in zip(filtered, _cosines(index, filtered, query_vectors), strict=True):
        pick = best(hits.ties, cosines, top_n)
        reranked.append(Hits(hits.ties[pick], cosines[pick]))
    return _identified(reranked, index)


PAIRS_AT_ONCE = 4096  # (query, candidate) cosines computed together: ~20 MB of their vectors, float64 included


def _cosines(index, found: list[Hits], query_vectors: np.ndarray) -> list[np.ndarray]:
    """Each hit's embedding cosine with its query, its vector read with its collection shard's others: a
    worker holds one shard's hits' vectors at a time, not every candidate's (a query shard's queries x M of
    them: 1.5 GB a thousand queries at the papers' size, where candidates no longer repeat)."""
    lengths = [len(hits.ties) for hits in found]
    ties = np.concatenate([np.zeros(0, np.int64), *(hits.ties for hits in found)])
    query = np.repeat(np.arange(len(found)), lengths)
    order = np.argsort(ties, kind="stable")
    in_order, cosines, start = ties[order], np.zeros(len(ties), dtype=np.float32), 0
    for shard_ties, _, vectors in index.each_shard(distinct(ties), (), True):
        stop = int(np.searchsorted(in_order, shard_ties[-1], "right"))  # the pairs of this shard's hits
        pairs = order[start:stop]
        at = np.searchsorted(shard_ties, ties[pairs])
        for first in range(0, len(pairs), PAIRS_AT_ONCE):
            these = pairs[first:first + PAIRS_AT_ONCE]
            cosines[these] = row_dots(vectors[at[first:first + PAIRS_AT_ONCE]], query_vectors[query[these]])
        start = stop
    return np.split(cosines, np.cumsum(lengths)[:-1]) if found else []


def _identified(found: list[Hits], index) -> list[list[tuple[dict, float]]]:
    """Each hit as (its row's identity, its score)."""
    gathered = index.gather(found)
    return [list(zip(gathered.rows(hits.ties), hits.scores.tolist(), strict=True)) for hits in found]
