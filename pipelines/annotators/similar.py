"""Similar replacements for scene-graph nodes (UNIMO App. A: each object, attribute or relation is
replaced by "other similar" ones of its vocabulary): embedding neighbours of the same kind, computed
once per vocabulary, never per caption.

``encode(texts) -> (n, dim) array`` is any sentence encoder (``retrieval.embed.Embedder(path).encode``
in the stage; a hand-made table in tests). Similarities are computed in row blocks, so a vocabulary of
100k entries never needs an all-pairs matrix in memory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Encode = Callable[[list[str]], np.ndarray]

_SINGULAR = {"men": "man", "women": "woman", "people": "person", "children": "child", "feet": "foot",
             "teeth": "tooth", "mice": "mouse", "geese": "goose", "knives": "knife", "leaves": "leaf",
             "wolves": "wolf", "shelves": "shelf", "buses": "bus", "skis": "ski"}


def singular(word: str) -> str:
    """The singular of an English noun by the usual rules (enough for caption nouns); words that do not
    look plural come back unchanged."""
    if word in _SINGULAR:
        return _SINGULAR[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def variant_key(phrase: str) -> str:
    """Phrases with the same key are inflections of each other ("dog" / "dogs", "red ball" / "red balls")."""
    words = phrase.lower().split()
    return " ".join(words[:-1] + [singular(words[-1])]) if words else ""


def nearest_entries(entries: list[str], counts: list[int], encode: Encode, k: int, min_count: int = 1,
                    block: int = 1024) -> dict[str, list[str]]:
    """For each entry, its ``k`` most similar other entries by cosine, best first (ties: vocabulary
    order), leaving out itself, its inflections, and entries seen fewer than ``min_count`` times."""
    usable = np.array([i for i, count in enumerate(counts) if count >= min_count], dtype=np.int64)
    if not entries or not len(usable):
        return {entry: [] for entry in entries}
    vectors = np.asarray(encode(entries), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    keys = [variant_key(entry) for entry in entries]
    candidates = vectors[usable]
    width = min(len(usable), k + 4)  # a few spare for the entries left out
    result: dict[str, list[str]] = {}
    for first in range(0, len(entries), block):
        sims = vectors[first:first + block] @ candidates.T
        for row, sim in enumerate(sims):
            i = first + row
            found = _top(sim, usable, keys, i, k, width)
            if len(found) < k and width < len(usable):
                found = _top(sim, usable, keys, i, k, len(usable))
            result[entries[i]] = [entries[j] for j in found]
    return result


def _top(sim: np.ndarray, usable: np.ndarray, keys: list[str], i: int, k: int, width: int) -> list[int]:
    """The best ``k`` candidates among the ``width`` most similar, in (similarity desc, index) order."""
    if width < len(sim):
        threshold = np.partition(sim, len(sim) - width)[len(sim) - width]
        picked = np.flatnonzero(sim >= threshold)  # every tie at the cut, so ties stay in index order
        picked = picked[np.lexsort((picked, -sim[picked]))]
    else:
        picked = np.lexsort((np.arange(len(sim)), -sim))
    found = []
    for j in usable[picked]:
        if keys[j] != keys[i]:
            found.append(int(j))
            if len(found) == k:
                break
    return found
