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

from retrieval.tfidf import Hits, rerank


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
    gathered = index.gather(filtered, [], vectors=True)
    reranked = []
    for hits, query in zip(filtered, query_vectors, strict=True):
        vectors = gathered.vectors[gathered.at(hits.ties)] if len(hits.ties) else np.zeros((0, len(query)), np.float32)
        reranked.append(rerank(hits, vectors, query, top_n))
    return _identified(reranked, index)


def _identified(found: list[Hits], index) -> list[list[tuple[dict, float]]]:
    """Each hit as (its row's identity, its score)."""
    gathered = index.gather(found)
    return [list(zip(gathered.rows(hits.ties), hits.scores.tolist(), strict=True)) for hits in found]
