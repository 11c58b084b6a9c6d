"""The corpus' trigram counts for the fluency model of ``ngram_lm`` (UNIMO App. A), counted in buckets
that are merged and turned into model arrays apart, so no worker holds the corpus' counts.

A word is its 64-bit hash (blake2b, the same in every process) and its id the hash's rank among the
corpus' words, so a bucket (the top ``bits`` bits of a hash) is a range of ids. A trigram (u v w) is
counted in the bucket of its middle word v: every count interpolated Kneser-Ney needs of a context pair
(u v) or a continuation bigram (v w) is then in one bucket. Only the continuation counts of single words,
N1+(. w), span buckets: each bucket gives its share, and the shares are summed (a number a word).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
PENDING = 1 << 20  # trigrams a bucket takes unsummed before folding them into its arrays
BITS = 6  # 64 buckets: a merging worker holds ~1/64 of the trigrams (more for a bucket of a frequent word)


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens; punctuation is not a token (fluency is about the words)."""
    return _WORD.findall(text.lower())


def padded(text: str) -> list[str]:
    """The text's tokens between two ``<s>`` and one ``</s>``: what its trigrams run over."""
    return [BOS, BOS, *tokenize(text), EOS]


def trigrams(text: str) -> Iterable[tuple[str, str, str]]:
    tokens = padded(text)
    return zip(tokens, tokens[1:], tokens[2:], strict=False)


@lru_cache(maxsize=1 << 16)
def word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")


def buckets_of(hashes: np.ndarray, bits: int) -> np.ndarray:
    """The bucket of each word hash: its top ``bits`` bits."""
    if not bits:
        return np.zeros(len(hashes), dtype=np.int64)
    return (np.asarray(hashes, dtype=np.uint64) >> np.uint64(64 - bits)).astype(np.int64)


@dataclass
class BucketCounts:
    """One bucket's share of the counts: its words (hash -> word) and the trigrams whose middle word is in
    it, each distinct trigram a row of three word hashes (``keys``, sorted) with its count: about 32 bytes a
    trigram. ``unfolded``: (keys, counts) parts taken since the last fold. A hash shared by two words is an
    error, never a merged count."""

    words: dict[int, str] = field(default_factory=dict)
    keys: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.uint64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    unfolded: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def add(self, keys: np.ndarray, counts: np.ndarray, words: dict[int, str]) -> BucketCounts:
        for value, word in words.items():
            if self.words.setdefault(value, word) != word:
                raise ValueError(f"trigram counts: {word!r} and {self.words[value]!r} share a 64-bit hash")
        self.unfolded.append((keys, counts))
        if sum(len(part) for part, _ in self.unfolded) >= PENDING:
            self.fold()
        return self

    def absorb(self, other: BucketCounts) -> BucketCounts:
        self.add(other.keys, other.counts, other.words)
        for keys, counts in other.unfolded:
            self.add(keys, counts, {})
        return self

    def word_hashes(self) -> np.ndarray:
        return np.fromiter(self.words, dtype=np.uint64, count=len(self.words))

    def fold(self) -> BucketCounts:
        """Every unfolded part summed into the arrays."""
        keys = np.concatenate([self.keys] + [keys for keys, _ in self.unfolded])
        counts = np.concatenate([self.counts] + [counts for _, counts in self.unfolded])
        order = np.lexsort(keys.T[::-1])
        keys, counts = keys[order], counts[order]
        starts = np.flatnonzero(np.concatenate([[True], (keys[1:] != keys[:-1]).any(axis=1)])) if len(keys) else \
            np.zeros(0, dtype=np.int64)
        self.keys, self.counts = keys[starts], np.add.reduceat(counts, starts) if len(counts) else counts
        self.unfolded = []
        return self


def count_texts(texts: Iterable[str], bits: int = BITS) -> dict[int, BucketCounts]:
    """The trigram counts of ``texts`` (with ``<s>`` padding), by bucket; a bucket without words is absent."""
    whole, hashes, pending = BucketCounts(), {}, []
    for text in texts:
        hashed = [hashes[w] if w in hashes else hashes.setdefault(w, word_hash(w)) for w in padded(text)]
        pending.extend(zip(hashed, hashed[1:], hashed[2:], strict=False))
        if len(pending) >= PENDING:
            whole.add(np.array(pending, dtype=np.uint64), np.ones(len(pending), dtype=np.int64), {})
            pending = []
    whole.add(np.array(pending, dtype=np.uint64).reshape(-1, 3), np.ones(len(pending), dtype=np.int64), {}).fold()
    words = {value: word for word, value in hashes.items()}
    word_buckets = buckets_of(np.array(list(words), dtype=np.uint64), bits).tolist()
    trigram_buckets = buckets_of(whole.keys[:, 1], bits)
    found: dict[int, BucketCounts] = {}
    for (value, word), bucket in zip(words.items(), word_buckets, strict=True):
        found.setdefault(bucket, BucketCounts()).words[value] = word
    for bucket, counts in found.items():
        mine = trigram_buckets == bucket
        counts.keys, counts.counts = whole.keys[mine], whole.counts[mine]
    return found


class BucketCombiner:
    """CombineFn semantics (a ``beam.CombinePerKey`` by bucket) over ``BucketCounts``: their sum."""

    def create_accumulator(self) -> BucketCounts:
        return BucketCounts()

    def add_input(self, accumulator: BucketCounts, counts: BucketCounts) -> BucketCounts:
        return accumulator.absorb(counts)

    def merge_accumulators(self, accumulators: Iterable[BucketCounts]) -> BucketCounts:
        merged = BucketCounts()
        for accumulator in accumulators:
            merged.absorb(accumulator)
        return merged

    def extract_output(self, accumulator: BucketCounts) -> BucketCounts:
        return accumulator.fold()


def vocabulary_of(word_hashes: Iterable[np.ndarray]) -> np.ndarray:
    """Every word's hash (each bucket's ``word_hashes``), sorted, with ``<s>``, ``</s>`` and ``<unk>``: a
    word's id is its position."""
    specials = np.array([word_hash(w) for w in (BOS, EOS, UNK)], dtype=np.uint64)
    return np.unique(np.concatenate([specials, *word_hashes]))


@dataclass
class Part:
    """One bucket's model arrays, over global word ids (``size`` words). Keys sort like the numbers
    ``v * size + u`` (context pairs), ``pair * size + w`` (trigrams: ``pair`` indexes this part's
    ``pairs``) and ``v * size + w`` (bigrams); ``context2`` and ``followers2`` hold the bucket's id range
    (``first``, ``first + len``). ``unigram_ids``/``unigram_cont``: this bucket's share of N1+(. w)."""

    first: int
    pairs: np.ndarray  # context pairs (u v) seen, as v * size + u
    context3: np.ndarray  # c(u v .)
    followers3: np.ndarray  # N1+(u v .)
    trigram_keys: np.ndarray
    trigram_counts: np.ndarray
    bigrams: np.ndarray  # continuation bigrams (v w), as v * size + w
    bigram_cont: np.ndarray  # N1+(. v w)
    context2: np.ndarray  # N1+(. v .)
    followers2: np.ndarray  # N1+(v .) among continuation bigrams
    unigram_ids: np.ndarray
    unigram_cont: np.ndarray

    SECTIONS = ("pairs", "context3", "followers3", "trigram_keys", "trigram_counts", "bigrams", "bigram_cont",
                "context2", "followers2")


def model_part(counts: BucketCounts, vocabulary: np.ndarray, bucket: int, bits: int) -> Part:
    """The model arrays of one merged bucket (Chen & Goodman's counts, as ``ngram_lm`` reads them)."""
    size = len(vocabulary)
    ids = np.searchsorted(vocabulary, counts.keys).astype(np.int64).reshape(-1, 3)
    u, v, w, count = ids[:, 0], ids[:, 1], ids[:, 2], counts.counts
    vocabulary_buckets = buckets_of(vocabulary, bits)
    first, end = np.searchsorted(vocabulary_buckets, bucket), np.searchsorted(vocabulary_buckets, bucket, "right")
    pair = v * size + u
    order = np.lexsort((w, pair))
    pair, w, count = pair[order], w[order], count[order]
    pairs, starts = _runs(pair)
    followers3 = np.diff(np.append(starts, len(pair)))
    bigrams, bigram_starts = _runs(np.sort(pair // size * size + w))  # (v w) of each distinct trigram
    bigram_cont = np.diff(np.append(bigram_starts, len(pair)))
    middle, last = bigrams // size - first, bigrams % size
    unigram_ids, unigram_cont = np.unique(last, return_counts=True)
    return Part(
        first=int(first), pairs=pairs, context3=np.add.reduceat(count, starts) if len(count) else count,
        followers3=followers3, trigram_keys=np.repeat(np.arange(len(pairs)), followers3) * size + w,
        trigram_counts=count, bigrams=bigrams, bigram_cont=bigram_cont,
        context2=np.bincount(middle, weights=bigram_cont, minlength=end - first).astype(np.int64),
        followers2=np.bincount(middle, minlength=end - first), unigram_ids=unigram_ids, unigram_cont=unigram_cont)


def _runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of sorted ``keys`` and where each run starts."""
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(keys) else np.zeros(0, np.int64)
    return keys[starts], starts


@dataclass
class UnigramTotals:
    """The buckets seen so far and their summed shares of N1+(. w), by word id (grown as ids come)."""

    buckets: set[int] = field(default_factory=set)
    cont: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def add(self, bucket: int, ids: np.ndarray, cont: np.ndarray) -> UnigramTotals:
        self.buckets.add(bucket)
        if len(ids) and ids[-1] >= len(self.cont):  # ids are sorted
            self.cont = np.pad(self.cont, (0, int(ids[-1]) + 1 - len(self.cont)))
        self.cont[ids] += cont
        return self

    def absorb(self, other: UnigramTotals) -> UnigramTotals:
        self.buckets |= other.buckets
        size = max(len(self.cont), len(other.cont))
        self.cont = np.pad(self.cont, (0, size - len(self.cont))) + np.pad(other.cont, (0, size - len(other.cont)))
        return self

    def dense(self, size: int) -> np.ndarray:
        """N1+(. w) of each of ``size`` word ids."""
        return np.pad(self.cont, (0, size - len(self.cont)))


class UnigramCombiner:
    """CombineFn semantics over (bucket, a part's ``unigram_ids``, its ``unigram_cont``): ``UnigramTotals``."""

    def create_accumulator(self) -> UnigramTotals:
        return UnigramTotals()

    def add_input(self, accumulator: UnigramTotals, share: tuple[int, np.ndarray, np.ndarray]) -> UnigramTotals:
        return accumulator.add(*share)

    def merge_accumulators(self, accumulators: Iterable[UnigramTotals]) -> UnigramTotals:
        merged = UnigramTotals()
        for accumulator in accumulators:
            merged.absorb(accumulator)
        return merged

    def extract_output(self, accumulator: UnigramTotals) -> UnigramTotals:
        return accumulator
