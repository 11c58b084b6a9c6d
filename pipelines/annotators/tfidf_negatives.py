"""Sentence-level hard negatives: for each caption, the most similar captions of OTHER images by TF-IDF
cosine (UNIMO §2.1, App. A "Data Augmentations").

Document frequencies are corpus statistics: ``DocumentFrequencyCombiner`` has the four CombineFn methods
without importing Beam (the stage wraps it), so they are counted where the captions are. Similarities
are sparse products of a block of query rows with the transposed corpus matrix (its inverted index:
term -> captions), a block being at most ``block_entries`` scores; only the top ``n`` of each row are
kept, so no all-pairs matrix is ever formed.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")


def terms(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass
class DocumentFrequencies:
    documents: int
    counts: Counter  # term -> number of captions containing it


class DocumentFrequencyCombiner:
    """CombineFn semantics over caption texts; the output is the same whatever order workers merged in."""

    def create_accumulator(self) -> DocumentFrequencies:
        return DocumentFrequencies(0, Counter())

    def add_input(self, accumulator: DocumentFrequencies, text: str) -> DocumentFrequencies:
        accumulator.documents += 1
        accumulator.counts.update(set(terms(text)))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[DocumentFrequencies]) -> DocumentFrequencies:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged.documents += accumulator.documents
            merged.counts.update(accumulator.counts)
        return merged

    def extract_output(self, accumulator: DocumentFrequencies) -> DocumentFrequencies:
        return accumulator


class TfidfVectorizer:
    """Raw term counts times smoothed idf (``log((1 + N) / (1 + df)) + 1``), rows L2-normalised. Terms in
    more than ``max_df`` of the captions carry no weight: they are stop words for this corpus, and they
    would make every product dense."""

    def __init__(self, frequencies: DocumentFrequencies, max_df: float = 1.0):
        limit = max_df * frequencies.documents
        kept = sorted(t for t, df in frequencies.counts.items() if df <= limit)
        self.columns = {t: i for i, t in enumerate(kept)}
        n = frequencies.documents
        self.idf = np.array([math.log((1 + n) / (1 + frequencies.counts[t])) + 1 for t in kept], dtype=np.float32)

    def transform(self, texts: Sequence[str]):
        """A CSR matrix (len(texts), vocabulary); a text with no known term is an all-zero row."""
        from scipy import sparse

        indptr, indices, values = [0], [], []
        for text in texts:
            counts = Counter(self.columns[t] for t in terms(text) if t in self.columns)
            indices += counts.keys()
            values += counts.values()
            indptr.append(len(indices))
        matrix = sparse.csr_matrix((np.array(values, dtype=np.float32), np.array(indices, dtype=np.int64),
                                    np.array(indptr, dtype=np.int64)), shape=(len(texts), len(self.columns)))
        matrix = matrix @ sparse.diags(self.idf)
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        return sparse.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ matrix


def top_similar(queries, query_groups: np.ndarray, corpus, corpus_groups: np.ndarray, top_n: int,
                block_entries: int = 1 << 22) -> list[list[tuple[int, float]]]:
    """For each query row, up to ``top_n`` (corpus row, cosine) with cosine > 0, best first (ties: lower
    corpus row first). Groups are (rows, g) integer ids: a corpus row that shares any column's id with
    the query is excluded (column 0: the image key, so captions of the same image are never negatives)."""
    inverted = corpus.T.tocsr()  # term -> corpus rows
    rows_per_block = max(1, block_entries // max(1, corpus.shape[0]))
    found: list[list[tuple[int, float]]] = []
    for start in range(0, queries.shape[0], rows_per_block):
        scores = (queries[start:start + rows_per_block] @ inverted).toarray()  # <= block_entries scores
        groups = query_groups[start:start + rows_per_block]
        for column in range(groups.shape[1]):
            scores[groups[:, column, None] == corpus_groups[None, :, column]] = 0
        found += _best_of_rows(scores, top_n)
    return found


def _best_of_rows(scores: np.ndarray, top_n: int) -> list[list[tuple[int, float]]]:
    """Per row, the ``top_n`` positive entries by (score desc, column): a partition finds each row's
    n-th best score, then only the entries at or above it are sorted."""
    k = min(top_n, scores.shape[1])
    if k == 0:
        return [[] for _ in range(scores.shape[0])]
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    row, col = np.nonzero((scores >= kth[:, None]) & (scores > 0))
    score = scores[row, col]
    order = np.lexsort((col, -score, row))
    row, col, score = row[order], col[order], score[order]
    first = np.searchsorted(row, np.arange(scores.shape[0]))
    keep = np.arange(len(row)) - first[row] < k
    row, col, score = row[keep], col[keep], score[keep]
    bounds = np.searchsorted(row, np.arange(scores.shape[0] + 1))
    return [list(zip(col[a:b].tolist(), score[a:b].tolist(), strict=True)) for a, b in pairwise(bounds)]


class CaptionIndex:
    """The corpus captions as a TF-IDF matrix with their identities: what every shard's queries search."""

    def __init__(self, vectorizer: TfidfVectorizer, captions: Sequence[tuple[str, str, int, str]]):
        self.vectorizer = vectorizer
        self.captions = list(captions)  # (key, source, text_index, text)
        self.matrix = vectorizer.transform([c[3] for c in self.captions])
        self._keys: dict = {}
        self._texts: dict = {}
        self.groups = self._groups([c[0] for c in self.captions], [c[3] for c in self.captions])

    def _groups(self, keys: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """Column 0: image key; column 1: the text's terms (a caption of another image with the same words
        is no negative). Ids are shared between the corpus and later queries."""
        return np.array(
            [
                [
                    self._keys.setdefault(k, len(self._keys)),
                    self._texts.setdefault(" ".join(terms(t)), len(self._texts)),
                ]
                for k, t in zip(keys, texts, strict=True)
            ],
            dtype=np.int64,
        ).reshape(len(keys), 2)

    def negatives(self, keys: Sequence[str], texts: Sequence[str], top_n: int,
                  block_entries: int = 1 << 22) -> list[list[tuple[tuple[str, str, int, str], float]]]:
        """For each (key, text): up to ``top_n`` (corpus caption, cosine) of other images, best first."""
        found = top_similar(self.vectorizer.transform(texts), self._groups(keys, texts), self.matrix, self.groups,
                            top_n, block_entries)
        return [[(self.captions[i], score) for i, score in hits] for hits in found]
