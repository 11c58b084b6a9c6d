"""A trigram language model of the corpus captions, to rank rewrites by fluency (UNIMO App. A "Data
Augmentations": rewritten captions are ranked by linguistic fluency, the top 100 kept).

Interpolated Kneser-Ney (Chen & Goodman 1998, fixed discount) over lowercased word tokens. Training is a
count of trigrams, so it combines like any Beam CombineFn: ``NgramCombiner`` has the four CombineFn
methods but does not import Beam (the stage mixes it into a ``beam.CombineFn``); the model is built from
the merged counts, so it is the same whatever order workers merged in.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens; punctuation is not a token (fluency is about the words)."""
    return _WORD.findall(text.lower())


def trigrams(text: str) -> Iterable[tuple[str, str, str]]:
    tokens = [BOS, BOS, *tokenize(text), EOS]
    return zip(tokens, tokens[1:], tokens[2:], strict=False)


class NgramCombiner:
    """CombineFn semantics over texts: the accumulator is a Counter of trigrams (with ``<s>`` padding)."""

    def __init__(self, discount: float = 0.75):
        self.discount = discount

    def create_accumulator(self) -> Counter:
        return Counter()

    def add_input(self, accumulator: Counter, text: str) -> Counter:
        accumulator.update(trigrams(text))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[Counter]) -> Counter:
        merged: Counter = Counter()
        for accumulator in accumulators:
            merged.update(accumulator)
        return merged

    def extract_output(self, accumulator: Counter) -> NgramLM:
        return NgramLM(accumulator, self.discount)


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
    distribution with the uniform one, so an unseen word gets a small, non-zero probability."""

    def __init__(self, counts: Counter, discount: float = 0.75):
        if not 0 < discount < 1:
            raise ValueError(f"discount: expected 0 < d < 1, got {discount}")
        self.discount = discount
        self.trigrams = dict(counts)
        context3: Counter = Counter()  # c(u v .)
        followers3: Counter = Counter()  # N1+(u v .)
        middles: dict[tuple[str, str], set[str]] = defaultdict(set)  # (v, w) -> {u}
        for (u, v, w), count in self.trigrams.items():
            context3[u, v] += count
            followers3[u, v] += 1
            middles[v, w].add(u)
        self.context3, self.followers3 = dict(context3), dict(followers3)
        self.bigram_cont = {vw: len(us) for vw, us in middles.items()}  # N1+(. v w)
        context2: Counter = Counter()  # N1+(. v .)
        followers2: Counter = Counter()  # N1+(v .) among continuation bigrams
        unigram_cont: Counter = Counter()  # N1+(. w)
        for (v, w), count in self.bigram_cont.items():
            context2[v] += count
            followers2[v] += 1
            unigram_cont[w] += 1
        self.context2, self.followers2 = dict(context2), dict(followers2)
        self.unigram_cont = dict(unigram_cont)
        self.bigram_types = len(self.bigram_cont)
        self.vocabulary = sorted(self.unigram_cont.keys() | {EOS, UNK})

    def _p1(self, w: str) -> float:
        if not self.bigram_types:
            return 1.0 / len(self.vocabulary)
        d, total = self.discount, self.bigram_types
        seen = max(self.unigram_cont.get(w, 0) - d, 0.0) / total
        return seen + d * len(self.unigram_cont) / total / len(self.vocabulary)

    def _p2(self, w: str, v: str) -> float:
        total = self.context2.get(v, 0)
        if not total:
            return self._p1(w)
        d = self.discount
        seen = max(self.bigram_cont.get((v, w), 0) - d, 0.0) / total
        return seen + d * self.followers2[v] / total * self._p1(w)

    def prob(self, w: str, u: str, v: str) -> float:
        """P(w | u v); words outside the vocabulary are ``<unk>``."""
        w = w if w in self.unigram_cont or w == EOS else UNK
        total = self.context3.get((u, v), 0)
        if not total:
            return self._p2(w, v)
        d = self.discount
        seen = max(self.trigrams.get((u, v, w), 0) - d, 0.0) / total
        return seen + d * self.followers3[u, v] / total * self._p2(w, v)

    def score(self, text: str) -> float:
        """Average natural-log probability per token (words and ``</s>``): comparable across lengths."""
        grams = list(trigrams(text))
        return sum(math.log(self.prob(w, u, v)) for u, v, w in grams) / len(grams)

    def score_many(self, texts: list[str]) -> list[float]:
        return [self.score(text) for text in texts]
