"""Related images and related texts (UNIMO §2.1, App. A "Data Augmentations"): positives for cross-modal
contrastive learning that come from other samples of the collections.

- Related images: a TF-IDF vector over the object labels of each image's regions; cosine; the top N
  (100) other images.
- Related texts: an inverted index over caption and sentence terms filters the candidates; TF-IDF keeps
  the top M (1000); a sentence-embedding cosine reranks them; the top N (100) stay.

Everything is sparse (scipy): the term -> documents matrix is the inverted index, and a query's scores
are accumulated only over the documents in the postings of its terms, never a dense all-pairs matrix.
Pure numpy/scipy: the retrieve stage, the service and notebooks call it alike.
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")


@cache
def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def text_terms(text: str) -> list[str]:
    """Lower-cased words of a caption or sentence, stop words out (they would put every text in every
    posting list and defeat the inverted index)."""
    stop = _stop_words()
    return [word for word in _WORD.findall(text.lower()) if word not in stop]


def label_terms(labels: list[str]) -> list[str]:
    """Region labels as terms, one per region (a label of several words, ``traffic light``, is one term):
    an image's term frequencies count its regions of each class."""
    return [term for term in (" ".join(label.lower().split()) for label in labels) if term]


class TfidfIndex:
    """TF-IDF (raw counts x smooth idf, rows L2-normalised) over a collection of term lists."""

    def __init__(self, documents: list[list[str]]):
        from scipy import sparse

        self.vocabulary: dict[str, int] = {}
        counts = self._counts(documents, grow=True)
        self.size = len(documents)
        df = np.bincount(counts.indices, minlength=len(self.vocabulary))
        self.idf = np.log((1 + self.size) / (1 + df)) + 1.0
        # term -> documents with their weights: the inverted index.
        self.postings = sparse.csr_matrix(self._weigh(counts).T)

    def _counts(self, documents: list[list[str]], grow: bool = False):
        """Documents x terms counts (CSR); without ``grow``, terms outside the vocabulary are dropped."""
        from scipy import sparse

        indptr, indices = [0], []
        for terms in documents:
            for term in terms:
                if grow:
                    indices.append(self.vocabulary.setdefault(term, len(self.vocabulary)))
                elif term in self.vocabulary:
                    indices.append(self.vocabulary[term])
            indptr.append(len(indices))
        data = np.ones(len(indices), dtype=np.float64)
        counts = sparse.csr_matrix((data, np.array(indices, dtype=np.int64), np.array(indptr, dtype=np.int64)),
                                   shape=(len(documents), len(self.vocabulary)))
        counts.sum_duplicates()
        return counts

    def _weigh(self, counts):
        from scipy import sparse

        weighted = sparse.csr_matrix(counts.multiply(self.idf[np.newaxis, :]))
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sparse.csr_matrix(sparse.diags(1.0 / norms) @ weighted)

    def vectorize(self, documents: list[list[str]]):
        """Queries in the collection's TF-IDF space (CSR, rows L2-normalised; unknown terms dropped)."""
        return self._weigh(self._counts(documents))

    def search(self, documents: list[list[str]], top: int, exclude: list[set[int]] | None = None,
               batch: int = 256) -> list[list[tuple[int, float]]]:
        """Per query, up to ``top`` (document, cosine) with cosine > 0, best first (ties: lower document
        first); documents in ``exclude[i]`` are never returned for query i."""
        out: list[list[tuple[int, float]]] = []
        for start in range(0, len(documents), batch):
            scores = self.vectorize(documents[start:start + batch]) @ self.postings  # only shared-term docs
            for row in range(scores.shape[0]):
                ids = scores.indices[scores.indptr[row]:scores.indptr[row + 1]]
                values = scores.data[scores.indptr[row]:scores.indptr[row + 1]]
                skip = exclude[start + row] if exclude else ()
                if skip:
                    keep = np.array([i not in skip for i in ids], dtype=bool)
                    ids, values = ids[keep], values[keep]
                out.append(_best(ids, values, top))
        return out


def _best(ids: np.ndarray, scores: np.ndarray, top: int) -> list[tuple[int, float]]:
    """The ``top`` best by score, ties to the lower id: a linear-time cut first, then a sort of the rest."""
    if len(scores) > top:
        threshold = -np.partition(-scores, top - 1)[top - 1]
        keep = scores >= threshold  # every tie at the threshold stays, so the order below decides
        ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))[:top]
    return list(zip(ids[order].tolist(), scores[order].tolist(), strict=True))


def key_positions(collection_keys: list[str]) -> dict[str, set[int]]:
    """key -> the collection positions holding that sample; build once per collection, not per query shard."""
    positions: dict[str, set[int]] = {}
    for i, key in enumerate(collection_keys):
        positions.setdefault(key, set()).add(i)
    return positions


def same_key(collection_keys: list[str] | dict[str, set[int]], query_keys: list[str]) -> list[set[int]]:
    """For each query, the collection positions holding its own sample: what ``exclude`` leaves out
    (``collection_keys``: the keys, or their ``key_positions``)."""
    positions = collection_keys if isinstance(collection_keys, dict) else key_positions(collection_keys)
    return [positions.get(key, set()) for key in query_keys]


def related_images(index: TfidfIndex, query_labels: list[list[str]], top_n: int = 100,
                   exclude: list[set[int]] | None = None) -> list[list[tuple[int, float]]]:
    """UNIMO App. A: the ``top_n`` images of ``index`` (built over ``label_terms``) most similar by the
    TF-IDF cosine of their region labels, per query image."""
    return index.search([label_terms(labels) for labels in query_labels], top_n, exclude)


def related_texts(index: TfidfIndex, vectors: np.ndarray, query_texts: list[str], query_vectors: np.ndarray,
                  candidates: int = 1000, top_n: int = 100,
                  exclude: list[set[int]] | None = None) -> list[list[tuple[int, float]]]:
    """UNIMO App. A: inverted index + TF-IDF top ``candidates``, reranked by the embedding cosine
    (``vectors``: the collection's L2-normalised sentence embeddings, row i = document i); the
    ``top_n`` best with their embedding cosine, per query."""
    filtered = index.search([text_terms(text) for text in query_texts], candidates, exclude)
    out = []
    for query, hits in zip(query_vectors, filtered, strict=True):
        ids = np.array([doc for doc, _ in hits], dtype=np.int64)
        scores = vectors[ids] @ query if len(ids) else np.zeros(0, dtype=np.float32)
        out.append(_best(ids, scores, top_n))
    return out
