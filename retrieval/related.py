"""Related images and related texts (UNIMO §2.1, App. A "Data Augmentations"): positives for cross-modal
contrastive learning that come from other samples of the collections.

- Related images: a TF-IDF vector over the object labels of each image's regions; cosine; the top N
  (100) other images.
- Related texts: an inverted index over caption and sentence terms filters the candidates; TF-IDF keeps
  the top M (1000); a sentence-embedding cosine reranks them; the top N (100) stay.

The collection is a sharded TF-IDF collection (``retrieval.tfidf``; ``shards``: anything with
``each_shard()`` and ``load(position)``, e.g. ``pipelines.tfidf_collections.Collection``), searched one
shard at a time; a query's own sample (its ``key``) is never related to it. Each function gives, per query,
its hits and the identities (and vectors) of the rows they name.
"""

from __future__ import annotations

import numpy as np

from retrieval.tfidf import Hits, gather, rerank, search


def related_images(vectorizer, shards, queries: list[dict], keys: list[str], top_n: int = 100) -> list[list[
        tuple[dict, float]]]:
    """UNIMO App. A: the ``top_n`` images most similar by the TF-IDF cosine of their region labels (the
    documents of ``queries`` as the collection's vectorizer reads them), per query image: (row, cosine)."""
    found = search(vectorizer.transform(queries), shards.each_shard(), top_n, ("key",), [(key,) for key in keys])
    return _identified(found, shards)


def related_texts(vectorizer, shards, queries: list[dict], query_vectors: np.ndarray, keys: list[str],
                  candidates: int = 1000, top_n: int = 100) -> list[list[tuple[dict, float]]]:
    """UNIMO App. A: inverted index + TF-IDF top ``candidates``, reranked by the embedding cosine (the
    collection keeps each text's L2-normalised sentence embedding); the ``top_n`` best with their embedding
    cosine, per query: (row, cosine)."""
    filtered = search(vectorizer.transform(queries), shards.each_shard(), candidates, ("key",),
                      [(key,) for key in keys])
    gathered = gather(filtered, shards.load, columns=False, vectors=True)
    reranked = []
    for hits, query in zip(filtered, query_vectors, strict=True):
        vectors = gathered.vectors[gathered.at(hits.ties)] if len(hits.ties) else np.zeros((0, len(query)), np.float32)
        reranked.append(rerank(hits, vectors, query, top_n))
    return _identified(reranked, shards)


def _identified(found: list[Hits], shards) -> list[list[tuple[dict, float]]]:
    """Each hit as (its row's identity, its score)."""
    gathered = gather(found, shards.load)
    return [list(zip(gathered.rows(hits.ties), hits.scores.tolist(), strict=True)) for hits in found]
