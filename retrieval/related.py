"""Related images and related texts (UNIMO §2.1, App. A "Data Augmentations"): positives for cross-modal
contrastive learning that come from other samples of the collections.

- Related images: a TF-IDF vector over the object labels of each image's regions; cosine; the top N
  (100) other images.
- Related texts: an inverted index over caption and sentence terms filters the candidates; TF-IDF keeps
  the top M (1000); a sentence-embedding cosine reranks them (the candidates' vectors from the collection's
  codes, ``retrieval.codes``); the top N (100) stay.

The collection is a ``retrieval.postings.PostingsIndex`` (term-partitioned postings and a row store, built
once; a query shard reads the postings of its own terms and the rows of its hits); a query's own sample (its
``key``) is never related to it. Each function gives, per query, its hits as (row identity, score).
"""

from __future__ import annotations

import numpy as np

from retrieval.tfidf import Hits, best


def related_images(vectorizer, index, queries: list[dict], keys: list[str], top_n: int = 100) -> list[list[
        tuple[dict, float]]]:
    """UNIMO App. A: the ``top_n`` images most similar by the TF-IDF cosine of their region labels (the
    documents of ``queries`` as the collection's vectorizer reads them), per query image: (row, cosine)."""
    return _identified(index.search(vectorizer.transform(queries), top_n, {"key": keys}), index)


def related_texts(vectorizer, index, codes, queries: list[dict], query_vectors: np.ndarray, keys: list[str],
                  candidates: int = 1000, top_n: int = 100) -> list[list[tuple[dict, float]]]:
    """UNIMO App. A: inverted index + TF-IDF top ``candidates``, reranked by the embedding cosine with each
    candidate's L2-normalised sentence embedding (``codes``: ``retrieval.codes.Codes``, the collection's
    vectors, exact or compressed); the ``top_n`` best with their embedding cosine, per query: (row, cosine)."""
    filtered = index.search(vectorizer.transform(queries), candidates, {"key": keys})
    lengths = [len(hits.ties) for hits in filtered]
    ties = np.concatenate([np.zeros(0, np.int64), *(hits.ties for hits in filtered)])
    cosines = codes.cosines(ties, np.repeat(np.arange(len(filtered)), lengths), query_vectors)
    reranked = []
    for hits, these in zip(filtered, np.split(cosines, np.cumsum(lengths)[:-1]) if filtered else [], strict=True):
        pick = best(hits.ties, these, top_n)
        reranked.append(Hits(hits.ties[pick], these[pick]))
    return _identified(reranked, index)


def _identified(found: list[Hits], index) -> list[list[tuple[dict, float]]]:
    """Each hit as (its row's identity, its score)."""
    gathered = index.gather(found)
    return [list(zip(gathered.rows(hits.ties), hits.scores.tolist(), strict=True)) for hits in found]
