"""The corpus' trigram counts for the fluency model of ``ngram_lm`` (UNIMO App. A), counted in buckets
that are merged and turned into model arrays apart, so that no worker holds the corpus' counts.

A word is its 64-bit hash (blake2b, the same in every process) and its id the hash's rank among the corpus'
words. Two keyed passes, each bucket merged by one worker:

1. Trigrams (u v w) by the bucket of their context pair's hash (``pair_hashes``; a bucket is the top ``bits``
   bits): every count of a pair, c(u v w), c(u v .) and N1+(u v .), is in one bucket, and a bucket holds at most
   its pairs' distinct followers, so even the most frequent pair adds no more than the vocabulary. A bucket gives
   its pairs' arrays, sorted by pair key (``pair_keys``: the bucket, then the two word ids, so the buckets'
   arrays, in bucket order, are sorted, and two pairs never share a key, whatever their hashes), and its share
   of the continuation bigrams (v w): N1+(. v w) counts the distinct u before them, and a pair is in one
   bucket, so the shares add up.
2. Continuation bigrams by the bucket of v: summed, N1+(. v w), then N1+(. v .) and N1+(v .); a bucket holds at
   most the vocabulary per middle word. Only N1+(. w) spans buckets: summed at the end, a number a word.
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
BITS = 6  # buckets of each pass, at least (``bits_for``): a merging worker holds about 1/64 of the trigrams


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


def bits_for(shards: int) -> int:
    """Bucket bits for a corpus of ``shards`` raw shards: a bucket per 16 shards (a few hundred thousand
    trigrams), at least ``BITS``, so that a merging worker's share stays flat as the corpus grows."""
    return max(BITS, (max(shards, 1) // 16).bit_length())


def buckets_of(hashes: np.ndarray, bits: int) -> np.ndarray:
    """The bucket of each word hash: its top ``bits`` bits."""
    if not bits:
        return np.zeros(len(hashes), dtype=np.int64)
    return (np.asarray(hashes, dtype=np.uint64) >> np.uint64(64 - bits)).astype(np.int64)


_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def pair_hashes(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each (first, second) pair of word hashes (splitmix64's finaliser over a mix of the
    two): what orders and buckets the context pairs."""
    with np.errstate(over="ignore"):
        x = np.asarray(first, dtype=np.uint64) * _MIX[0] ^ np.asarray(second, dtype=np.uint64)
        x = (x ^ (x >> np.uint64(30))) * _MIX[1]
        x = (x ^ (x >> np.uint64(27))) * _MIX[2]
    return x ^ (x >> np.uint64(31))


def pair_keys(first: np.ndarray, second: np.ndarray, first_ids: np.ndarray, second_ids: np.ndarray, size: int,
              bits: int) -> np.ndarray:
    """Each (first, second) context pair's key in the model: its bucket (``pair_hashes``' top ``bits`` bits) in
    the top bits, the pair of word ids (``first_ids * size + second_ids``, ``size`` words) below. Exact: a
    collision of the 64-bit pair hashes only puts two pairs in one bucket."""
    if size * size > 1 << (64 - bits):
        raise ValueError(f"trigram counts: {size:,} words do not fit a pair key beside {bits} bucket bits "
                         f"(at most {int(2 ** ((64 - bits) / 2)):,} words)")
    ids = np.asarray(first_ids, dtype=np.uint64) * np.uint64(size) + np.asarray(second_ids, dtype=np.uint64)
    if not bits:
        return ids
    buckets = buckets_of(pair_hashes(first, second), bits).astype(np.uint64)
    return (buckets << np.uint64(64 - bits)) | ids


@dataclass
class BucketCounts:
    """One bucket's share of the counts: its words (hash -> word) and the trigrams whose context pair is in
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

    def finish(self) -> BucketCounts:
        return self.fold()

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
    """The trigram counts of ``texts`` (with ``<s>`` padding), by bucket: a trigram in its pair's, a word in
    its own."""
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
    trigram_buckets = buckets_of(pair_hashes(whole.keys[:, 0], whole.keys[:, 1]), bits)
    found: dict[int, BucketCounts] = {}
    for (value, word), bucket in zip(words.items(), word_buckets, strict=True):
        found.setdefault(bucket, BucketCounts()).words[value] = word
    for bucket in np.unique(trigram_buckets).tolist():
        mine = trigram_buckets == bucket
        counts = found.setdefault(bucket, BucketCounts())
        counts.keys, counts.counts = whole.keys[mine], whole.counts[mine]
    return found


def vocabulary_of(word_hashes: Iterable[np.ndarray]) -> np.ndarray:
    """Every word's hash (each bucket's ``word_hashes``), sorted, with ``<s>``, ``</s>`` and ``<unk>``: a
    word's id is its position."""
    specials = np.array([word_hash(w) for w in (BOS, EOS, UNK)], dtype=np.uint64)
    return np.unique(np.concatenate([specials, *word_hashes]))


@dataclass
class TrigramPart:
    """One pair bucket's model arrays: its context pairs (u v) as pair keys (``pair_keys``), sorted, each with
    c(u v .) and N1+(u v .), and its trigrams as ``pair * size + w`` (``pair`` an index into ``pairs``; ``size`` words),
    sorted, with their counts."""

    pairs: np.ndarray  # uint64
    context3: np.ndarray
    followers3: np.ndarray
    trigram_keys: np.ndarray
    trigram_counts: np.ndarray

    SECTIONS = ("pairs", "context3", "followers3", "trigram_keys", "trigram_counts")


@dataclass
class BigramShare:
    """Continuation bigrams (v w), as ``v * size + w``, with a count of distinct u before each: one pair
    bucket's share of a middle-word bucket, or their sum (``trigram_buckets``: the pair buckets summed)."""

    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    trigram_buckets: set[int] = field(default_factory=set)
    unfolded: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)

    def absorb(self, other: BigramShare) -> BigramShare:
        """Taken as is: summed once, by ``finish`` (not re-sorted for every share a worker receives)."""
        self.unfolded += [(other.keys, other.counts), *other.unfolded]
        self.trigram_buckets |= other.trigram_buckets
        return self

    def finish(self) -> BigramShare:
        parts = [(self.keys, self.counts), *self.unfolded]
        self.keys, self.counts = _runs_of(np.concatenate([keys for keys, _ in parts]),
                                          np.concatenate([counts for _, counts in parts]))
        self.unfolded = []
        return self


@dataclass
class BigramPart:
    """One middle-word bucket's model arrays: its continuation bigrams, sorted, with N1+(. v w); N1+(. v .) and
    N1+(v .) of the bucket's id range (``first``, ``first + len``); its share of N1+(. w)."""

    first: int
    bigrams: np.ndarray
    bigram_cont: np.ndarray
    context2: np.ndarray
    followers2: np.ndarray
    unigram_ids: np.ndarray
    unigram_cont: np.ndarray

    SECTIONS = ("bigrams", "bigram_cont", "context2", "followers2")


def trigram_part(counts: BucketCounts, vocabulary: np.ndarray, bucket: int, bits: int
                 ) -> tuple[TrigramPart, dict[int, BigramShare]]:
    """Pass 1 (Chen & Goodman's counts of a pair, as ``ngram_lm`` reads them): a merged pair bucket's
    arrays, and its shares of the continuation bigrams by the middle word's bucket."""
    size = len(vocabulary)
    u, v, w = (np.searchsorted(vocabulary, counts.keys[:, i]).astype(np.int64) for i in range(3))
    pair = pair_keys(counts.keys[:, 0], counts.keys[:, 1], u, v, size, bits)
    order = np.lexsort((w, pair))
    pair, v, w, count = pair[order], v[order], w[order], counts.counts[order]
    pairs, starts = _runs(pair)
    followers3 = np.diff(np.append(starts, len(pair)))
    part = TrigramPart(pairs, np.add.reduceat(count, starts) if len(count) else count, followers3,
                       np.repeat(np.arange(len(pairs)), followers3) * size + w, count)
    bigrams, bigram_cont = np.unique(v * size + w, return_counts=True)  # each row a distinct (u v w)
    middle_buckets = buckets_of(vocabulary[bigrams // size], bits)
    shares = {}
    for middle in np.unique(middle_buckets).tolist():
        mine = middle_buckets == middle
        shares[middle] = BigramShare(bigrams[mine], bigram_cont[mine], {bucket})
    return part, shares


def bigram_part(share: BigramShare, vocabulary: np.ndarray, bucket: int, bits: int) -> BigramPart:
    """Pass 2: a middle-word bucket's summed shares as its arrays."""
    size = len(vocabulary)
    vocabulary_buckets = buckets_of(vocabulary, bits)
    first, end = np.searchsorted(vocabulary_buckets, bucket), np.searchsorted(vocabulary_buckets, bucket, "right")
    middle, last = share.keys // size - first, share.keys % size
    unigram_ids, unigram_cont = np.unique(last, return_counts=True)
    return BigramPart(int(first), share.keys, share.counts,
                      np.bincount(middle, weights=share.counts, minlength=end - first).astype(np.int64),
                      np.bincount(middle, minlength=end - first), unigram_ids, unigram_cont)


def _runs_of(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``keys``, sorted, with their ``counts`` summed."""
    order = np.argsort(keys, kind="stable")
    distinct, starts = _runs(keys[order])
    return distinct, np.add.reduceat(counts[order], starts) if len(starts) else counts[:0]


def _runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of sorted ``keys`` and where each run starts."""
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(keys) else np.zeros(0, np.int64)
    return keys[starts], starts


@dataclass
class UnigramTotals:
    """The buckets seen so far (middle-word buckets; ``trigram_buckets``: the pair buckets before them) and
    their summed shares of N1+(. w), by word id (grown as ids come)."""

    buckets: set[int] = field(default_factory=set)
    cont: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    trigram_buckets: set[int] = field(default_factory=set)

    def add(self, bucket: int, ids: np.ndarray, cont: np.ndarray, trigram_buckets: set[int]) -> UnigramTotals:
        self.buckets.add(bucket)
        self.trigram_buckets |= trigram_buckets
        if len(ids) and ids[-1] >= len(self.cont):  # ids are sorted
            self.cont = np.pad(self.cont, (0, int(ids[-1]) + 1 - len(self.cont)))
        self.cont[ids] += cont
        return self

    def absorb(self, other: UnigramTotals) -> UnigramTotals:
        self.buckets |= other.buckets
        self.trigram_buckets |= other.trigram_buckets
        size = max(len(self.cont), len(other.cont))
        self.cont = np.pad(self.cont, (0, size - len(self.cont))) + np.pad(other.cont, (0, size - len(other.cont)))
        return self

    def finish(self) -> UnigramTotals:
        return self

    def dense(self, size: int) -> np.ndarray:
        """N1+(. w) of each of ``size`` word ids."""
        return np.pad(self.cont, (0, size - len(self.cont)))


class Summing:
    """CombineFn semantics (``beam.CombinePerKey`` / ``CombineGlobally``) over values that are their own
    accumulators (``BucketCounts``, ``BigramShare``, ``UnigramTotals``: ``absorb`` another, ``finish``): their sum."""

    def __init__(self, kind: type):
        self.kind = kind

    def create_accumulator(self):
        return self.kind()

    def add_input(self, accumulator, value):
        return accumulator.absorb(value)

    def merge_accumulators(self, accumulators: Iterable):
        merged = self.kind()
        for accumulator in accumulators:
            merged.absorb(accumulator)
        return merged

    def extract_output(self, accumulator):
        return accumulator.finish()
