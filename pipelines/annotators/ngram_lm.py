"""A trigram language model of the corpus captions, to rank rewrites by fluency (UNIMO App. A "Data
Augmentations": rewritten captions are ranked by linguistic fluency, the top 100 kept).

Interpolated Kneser-Ney (Chen & Goodman 1998, fixed discount) over lowercased word tokens. Training is a
count of trigrams, so it combines like any Beam CombineFn: ``NgramCombiner`` has the four CombineFn
methods but does not import Beam (the stage mixes it into a ``beam.CombineFn``); the model is built from
the merged counts, so it is the same whatever order workers merged in.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens; punctuation is not a token (fluency is about the words)."""
    return _WORD.findall(text.lower())


def padded(text: str) -> list[str]:
    """The text's tokens between two ``<s>`` and one ``</s>``: what its trigrams run over."""
    return [BOS, BOS, *tokenize(text), EOS]


def trigrams(text: str) -> Iterable[tuple[str, str, str]]:
    tokens = padded(text)
    return zip(tokens, tokens[1:], tokens[2:], strict=False)


PENDING = 1 << 20  # trigrams an accumulator takes as tuples before folding them into its arrays


@dataclass
class TrigramCounts:
    """Trigram counts as a combine holds them: each word once (``hashes``: word -> a 64-bit hash of it, the
    same in every process), each distinct trigram as a row of three word hashes (``keys``, sorted) with its
    count: about 32 bytes a trigram, where a Counter of string tuples takes several times that in the one
    worker that merges every part of the corpus. ``pending``: trigrams added since the last fold."""

    hashes: dict[str, int] = field(default_factory=dict)
    keys: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.uint64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pending: list[tuple[int, int, int]] = field(default_factory=list)

    def add(self, text: str) -> None:
        hashed = [self.hashes[w] if w in self.hashes else self._hash(w) for w in padded(text)]  # once a token
        self.pending.extend(zip(hashed, hashed[1:], hashed[2:], strict=False))
        if len(self.pending) >= PENDING:
            self.fold()

    def _hash(self, word: str) -> int:
        self.hashes[word] = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        return self.hashes[word]

    def fold(self, *others: TrigramCounts) -> TrigramCounts:
        """These counts with ``others``' (and every pending trigram) summed into the arrays."""
        parts = [self, *others]
        for other in others:
            for word, value in other.hashes.items():
                if self.hashes.setdefault(word, value) != value:
                    raise ValueError(f"trigram counts: {word!r} hashed two ways")  # only by a changed hash
        keys = np.concatenate([np.array(p.pending, dtype=np.uint64).reshape(-1, 3) for p in parts]
                              + [p.keys for p in parts])
        counts = np.concatenate([np.ones(len(p.pending), dtype=np.int64) for p in parts] + [p.counts for p in parts])
        order = np.lexsort(keys.T[::-1])
        keys, counts = keys[order], counts[order]
        starts = np.flatnonzero(np.concatenate([[True], (keys[1:] != keys[:-1]).any(axis=1)])) if len(keys) else \
            np.zeros(0, dtype=np.int64)
        self.keys, self.counts = keys[starts], np.add.reduceat(counts, starts) if len(counts) else counts
        self.pending = []
        return self


class NgramCombiner:
    """CombineFn semantics over texts: the accumulator is the texts' trigram counts (with ``<s>`` padding) as
    ``TrigramCounts``; the model is built from the merged counts."""

    def __init__(self, discount: float = 0.75):
        self.discount = discount

    def create_accumulator(self) -> TrigramCounts:
        return TrigramCounts()

    def add_input(self, accumulator: TrigramCounts, text: str) -> TrigramCounts:
        accumulator.add(text)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[TrigramCounts]) -> TrigramCounts:
        return TrigramCounts().fold(*accumulators)

    def extract_output(self, accumulator: TrigramCounts) -> NgramLM:
        counted = accumulator.fold()
        unique_words = set(counted.hashes.values())
        if len(unique_words) != len(counted.hashes):
            raise ValueError("trigram counts: two words share a 64-bit hash; count them apart")
        words = sorted(counted.hashes.keys() | {BOS, EOS, UNK})
        hashes = np.array([counted.hashes.get(word, 0) for word in words], dtype=np.uint64)
        order = np.argsort(hashes, kind="stable")
        ids = order[np.searchsorted(hashes[order], counted.keys)].astype(np.int64).reshape(-1, 3)
        return NgramLM.from_ids(words, ids[:, 0], ids[:, 1], ids[:, 2], counted.counts, self.discount)


def train(texts: Iterable[str], discount: float = 0.75) -> NgramLM:
    """The model of ``texts`` without Beam (tests, notebooks, small corpora)."""
    combiner = NgramCombiner(discount)
    accumulator = combiner.create_accumulator()
    for text in texts:
        combiner.add_input(accumulator, text)
    return combiner.extract_output(accumulator)


class NgramLM:
    """Interpolated Kneser-Ney trigram model. The vocabulary is every word seen, ``</s>`` and ``<unk>``;
    for any context, ``prob`` sums to 1 over it. The lowest order interpolates the continuation
    distribution with the uniform one, so an unseen word gets a small, non-zero probability.

    Held as sorted numpy arrays of word ids (trigrams by context pair, context pairs, continuation bigrams,
    per-word totals) looked up by binary search: about 40 bytes per trigram, where dicts of string tuples
    took about 220 (docs/BENCHMARKS.md): every rewrite worker loads it, and it grows with the corpus.
    Pickled without the word -> id map (rebuilt from ``words`` on load). The
    probabilities are the same floats as the formulas computed one at a time (the same operations in the
    same order), so scores and rankings do not depend on the representation."""

    def __init__(self, counts: Counter, discount: float = 0.75):
        grams = list(counts)
        words = sorted({w for gram in grams for w in gram} | {BOS, EOS, UNK})
        ids = {word: i for i, word in enumerate(words)}
        u, v, w = (np.array([ids[gram[i]] for gram in grams], dtype=np.int64).reshape(-1) for i in range(3))
        self._build(words, u, v, w, np.array([counts[gram] for gram in grams], dtype=np.int64), discount)

    @classmethod
    def from_ids(cls, words: list[str], u: np.ndarray, v: np.ndarray, w: np.ndarray, count: np.ndarray,
                 discount: float = 0.75) -> NgramLM:
        """The model of distinct trigrams given as ids into ``words`` (sorted, with ``<s>``, ``</s>``,
        ``<unk>``) and their counts."""
        model = cls.__new__(cls)
        model._build(words, u, v, w, count, discount)
        return model

    def _build(self, words: list[str], u: np.ndarray, v: np.ndarray, w: np.ndarray, count: np.ndarray,
               discount: float) -> None:
        if not 0 < discount < 1:
            raise ValueError(f"discount: expected 0 < d < 1, got {discount}")
        self.discount, self.words = discount, words
        self.ids = {word: i for i, word in enumerate(words)}
        size = len(words)
        pair = u * size + v
        order = np.lexsort((w, pair))
        pair, w, count = pair[order], w[order], count[order]
        self.pairs, starts = _runs(pair)  # context pairs (u v), sorted
        self.context3 = np.add.reduceat(count, starts) if len(count) else count  # c(u v .)
        self.followers3 = np.diff(np.append(starts, len(pair)))  # N1+(u v .)
        self.trigram_keys = np.repeat(np.arange(len(self.pairs)), self.followers3) * size + w  # (pair, w), sorted
        self.trigram_counts = count
        bigrams = np.sort(pair % size * size + w)  # (v w) of each distinct trigram
        self.bigrams, bigram_starts = _runs(bigrams)
        self.bigram_cont = np.diff(np.append(bigram_starts, len(bigrams)))  # N1+(. v w)
        first, second = self.bigrams // size, self.bigrams % size
        self.context2 = np.bincount(first, weights=self.bigram_cont, minlength=size).astype(np.int64)  # N1+(. v .)
        self.followers2 = np.bincount(first, minlength=size)  # N1+(v .) among continuation bigrams
        self.unigram_cont = np.bincount(second, minlength=size)  # N1+(. w)
        self.bigram_types = len(self.bigrams)
        self.vocabulary = sorted({self.words[i] for i in np.flatnonzero(self.unigram_cont).tolist()} | {EOS, UNK})

    def __getstate__(self) -> dict:
        return {name: value for name, value in self.__dict__.items() if name != "ids"}

    def __setstate__(self, state: dict) -> None:
        """A model pickled before the arrays (its counts in ``trigrams``, a dict) is rebuilt from its counts."""
        if "trigrams" in state:
            self.__init__(Counter(state["trigrams"]), state["discount"])
        else:
            self.__dict__.update(state)
            self.ids = {word: i for i, word in enumerate(self.words)}

    def _id(self, words: list[str]) -> np.ndarray:
        return np.array([self.ids.get(word, -1) for word in words], dtype=np.int64)

    def _p1(self, w: np.ndarray) -> np.ndarray:
        if not self.bigram_types:
            return np.full(len(w), 1.0 / len(self.vocabulary))
        d, total = self.discount, self.bigram_types
        seen = np.maximum(self.unigram_cont[w] - d, 0.0) / total
        return seen + d * int(np.count_nonzero(self.unigram_cont)) / total / len(self.vocabulary)

    def _p2(self, w: np.ndarray, v: np.ndarray) -> np.ndarray:
        known = v >= 0
        total = np.where(known, self.context2[np.maximum(v, 0)], 0)
        d, lower = self.discount, self._p1(w)
        size = len(self.words)
        seen = np.maximum(_found(self.bigrams, np.where(known, v * size + w, -1), self.bigram_cont) - d, 0.0) / \
            np.maximum(total, 1)
        interpolated = seen + d * self.followers2[np.maximum(v, 0)] / np.maximum(total, 1) * lower
        return np.where(total > 0, interpolated, lower)

    def probs(self, w: list[str], u: list[str], v: list[str]) -> np.ndarray:
        """P(w[i] | u[i] v[i]) for each i; words outside the vocabulary are ``<unk>``."""
        size = len(self.words)
        w_id = self._id(w)
        w_id = np.where((w_id >= 0) & ((self.unigram_cont[np.maximum(w_id, 0)] > 0) | (w_id == self.ids[EOS])),
                        w_id, self.ids[UNK])
        u_id, v_id = self._id(u), self._id(v)
        at = _position(self.pairs, np.where((u_id >= 0) & (v_id >= 0), u_id * size + v_id, -1))
        total = _take(self.context3, at)
        d, lower = self.discount, self._p2(w_id, v_id)
        seen = np.maximum(_found(self.trigram_keys, np.where(at >= 0, at * size + w_id, -1),
                                 self.trigram_counts) - d, 0.0) / np.maximum(total, 1)
        interpolated = seen + d * _take(self.followers3, at) / np.maximum(total, 1) * lower
        return np.where(total > 0, interpolated, lower)

    def prob(self, w: str, u: str, v: str) -> float:
        """P(w | u v); words outside the vocabulary are ``<unk>``."""
        return float(self.probs([w], [u], [v])[0])

    def score(self, text: str) -> float:
        """Average natural-log probability per token (words and ``</s>``): comparable across lengths."""
        return self.score_many([text])[0]

    def score_many(self, texts: list[str]) -> list[float]:
        """``score`` of each text, their trigrams' probabilities looked up together."""
        grams = [list(trigrams(text)) for text in texts]
        flat = [gram for each in grams for gram in each]
        probs = self.probs([g[2] for g in flat], [g[0] for g in flat], [g[1] for g in flat]).tolist()
        out, start = [], 0
        for each in grams:
            out.append(sum(math.log(p) for p in probs[start:start + len(each)]) / len(each))
            start += len(each)
        return out

    def counts(self) -> Counter:
        """The trigram counts the model was built from (tests, merging checks)."""
        size = len(self.words)
        pair, w = self.pairs[self.trigram_keys // size], self.trigram_keys % size
        return Counter({(self.words[p // size], self.words[p % size], self.words[x]): int(c) for p, x, c in
                        zip(pair.tolist(), w.tolist(), self.trigram_counts.tolist(), strict=True)})


def _runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of sorted ``keys`` and where each run starts."""
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(keys) else np.zeros(0, np.int64)
    return keys[starts], starts


def _position(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index of each ``wanted`` in sorted ``keys``, -1 where absent."""
    at = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
    return np.where((len(keys) > 0) & (keys[at] == wanted) if len(keys) else np.zeros(len(wanted), bool), at, -1)


def _take(values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``values[at]``, 0 where ``at`` is -1."""
    return np.where(at >= 0, values[np.maximum(at, 0)] if len(values) else 0, 0)


def _found(keys: np.ndarray, wanted: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` at each ``wanted`` key of sorted ``keys``, 0 where absent."""
    return _take(values, _position(keys, wanted))
