"""The corpus trigram model that ranks scene-graph rewrites by fluency: a proper distribution, combinable
counts, fluent text scoring above scrambled text, and the array model's probabilities the formulas' floats
computed one at a time (``_Reference``: the dict model it replaced)."""

import math
import pickle
from collections import Counter, defaultdict

import pytest

from benchmarks.rewrite import make_captions
from pipelines.annotators.ngram_lm import BOS, EOS, UNK, NgramCombiner, NgramLM, tokenize, train, trigrams

CAPTIONS = [
    "A dog sitting on a red couch.",
    "A black dog sitting on the grass.",
    "A cat sitting on a red couch.",
    "Two dogs playing with a ball in the park.",
    "A man riding a horse on the beach.",
    "A woman holding an umbrella in the rain.",
    "A red car parked on the street.",
    "A dog playing with a ball on the grass.",
]


def test_tokens_are_lowercased_words_without_punctuation():
    assert tokenize("A Dog's ball, on the grass!") == ["a", "dog's", "ball", "on", "the", "grass"]


def test_probabilities_match_kneser_ney_by_hand():
    lm = train(["a b"])
    # vocabulary {a, b, </s>, <unk>}; 3 bigram types; every count 1; discount 0.75
    p1 = 0.25 / 3 + 0.75 * 3 / 3 / 4
    p2 = 0.25 + 0.75 * p1
    assert lm.prob("b", BOS, "a") == pytest.approx(0.25 + 0.75 * p2)
    assert lm.prob("zebra", "a", "b") == pytest.approx(0.75 * 3 / 3 / 4 * 0.75 * 0.75)


@pytest.mark.parametrize("context", [(BOS, BOS), ("sitting", "on"), ("unseen", "on"), ("never", "seen")])
def test_probabilities_sum_to_one_over_the_vocabulary(context):
    lm = train(CAPTIONS)
    assert {EOS, UNK} <= set(lm.vocabulary) and BOS not in lm.vocabulary
    assert sum(lm.prob(w, *context) for w in lm.vocabulary) == pytest.approx(1.0, abs=1e-9)


def test_unseen_words_get_a_small_positive_probability():
    lm = train(CAPTIONS)
    unseen = lm.prob("zebra", "a", "red")
    assert 0 < unseen < lm.prob("couch", "a", "red")
    assert unseen == lm.prob(UNK, "a", "red")


def test_a_known_sentence_scores_higher_than_its_shuffle():
    lm = train(CAPTIONS)
    known = lm.score("A dog sitting on a red couch.")
    assert known > lm.score("couch red a on sitting dog a")
    assert known > lm.score("A dog sitting on a red zebra.")
    assert math.isclose(lm.score_many(["A dog sitting on a red couch."])[0], known)


def test_counts_combine_to_the_same_model_in_any_merge_order():
    combiner = NgramCombiner()
    parts = []
    for chunk in (CAPTIONS[:3], CAPTIONS[3:5], CAPTIONS[5:]):
        accumulator = combiner.create_accumulator()
        for text in chunk:
            accumulator = combiner.add_input(accumulator, text)
        parts.append(accumulator)
    forward = combiner.extract_output(combiner.merge_accumulators(parts))
    backward = combiner.extract_output(combiner.merge_accumulators(
        [combiner.merge_accumulators([parts[2], parts[1]]), parts[0]]))
    whole = train(CAPTIONS)
    assert forward.counts() == backward.counts() == whole.counts()
    assert forward.vocabulary == whole.vocabulary
    text = "A cat playing with a ball."
    assert forward.score(text) == backward.score(text) == whole.score(text)


def test_discount_must_be_between_zero_and_one():
    with pytest.raises(ValueError, match="discount"):
        train(CAPTIONS, discount=1.0)


class _Reference:
    """The model as dicts of string tuples, one probability at a time (the representation before the arrays)."""

    def __init__(self, counts: Counter, d: float = 0.75):
        self.d, self.trigrams = d, dict(counts)
        self.context3, self.followers3, middles = Counter(), Counter(), defaultdict(set)
        for (u, v, w), count in self.trigrams.items():
            self.context3[u, v] += count
            self.followers3[u, v] += 1
            middles[v, w].add(u)
        self.bigram_cont = {vw: len(us) for vw, us in middles.items()}
        self.context2, self.followers2, self.unigram_cont = Counter(), Counter(), Counter()
        for (v, w), count in self.bigram_cont.items():
            self.context2[v] += count
            self.followers2[v] += 1
            self.unigram_cont[w] += 1
        self.vocabulary = sorted(self.unigram_cont.keys() | {EOS, UNK})

    def p1(self, w):
        if not self.bigram_cont:
            return 1.0 / len(self.vocabulary)
        total = len(self.bigram_cont)
        seen = max(self.unigram_cont.get(w, 0) - self.d, 0.0) / total
        return seen + self.d * len(self.unigram_cont) / total / len(self.vocabulary)

    def p2(self, w, v):
        total = self.context2.get(v, 0)
        if not total:
            return self.p1(w)
        seen = max(self.bigram_cont.get((v, w), 0) - self.d, 0.0) / total
        return seen + self.d * self.followers2[v] / total * self.p1(w)

    def prob(self, w, u, v):
        w = w if w in self.unigram_cont or w == EOS else UNK
        total = self.context3.get((u, v), 0)
        if not total:
            return self.p2(w, v)
        seen = max(self.trigrams.get((u, v, w), 0) - self.d, 0.0) / total
        return seen + self.d * self.followers3[u, v] / total * self.p2(w, v)

    def score(self, text):
        grams = list(trigrams(text))
        return sum(math.log(self.prob(w, u, v)) for u, v, w in grams) / len(grams)

    def score_many(self, texts):
        return [self.score(text) for text in texts]


def test_the_array_model_gives_the_formulas_floats_bit_for_bit():
    texts = [c[3] for c in make_captions(3000, vocabulary=2000)] + CAPTIONS
    counts = Counter(gram for text in texts for gram in trigrams(text))
    model, reference = NgramLM(counts), _Reference(counts)
    assert model.vocabulary == reference.vocabulary
    asked = [c[3] for c in make_captions(300, seed=9, vocabulary=2400)] + CAPTIONS + ["", "zebra zebra", "a a a a"]
    grams = [gram for text in asked for gram in trigrams(text)]
    assert model.probs([g[2] for g in grams], [g[0] for g in grams], [g[1] for g in grams]).tolist() == \
        [reference.prob(w, u, v) for u, v, w in grams]  # seen, backed off, unseen words and contexts
    assert model.score_many(asked) == [reference.score(text) for text in asked]
    assert model.counts() == counts


def test_counts_folded_in_small_parts_give_the_model_of_the_counter(monkeypatch):
    """The combine's compact counts (word hashes, folded every few trigrams, merged across parts) give the
    model built from a Counter of the same texts' trigrams, bit for bit."""
    from pipelines.annotators import ngram_lm

    monkeypatch.setattr(ngram_lm, "PENDING", 7)
    texts = [c[3] for c in make_captions(400, vocabulary=300)] + CAPTIONS + [""]
    combiner = NgramCombiner()
    parts = [combiner.create_accumulator() for _ in range(3)]
    for i, text in enumerate(texts):
        combiner.add_input(parts[i % 3], text)
    model = combiner.extract_output(combiner.merge_accumulators([parts[0], combiner.merge_accumulators(parts[1:])]))
    counts = Counter(gram for text in texts for gram in trigrams(text))
    assert model.counts() == counts and model.words == NgramLM(counts).words
    assert model.score_many(texts) == _Reference(counts).score_many(texts)


def test_a_model_pickled_as_dicts_loads_as_the_same_model():
    """A statistic written before the arrays (``ngram-<digest>.pkl`` holding the dicts) keeps working."""
    counts = Counter(gram for text in CAPTIONS for gram in trigrams(text))
    old = NgramLM.__new__(NgramLM)
    old.__setstate__({"discount": 0.75, "trigrams": dict(counts), "context3": {}, "vocabulary": []})
    new = pickle.loads(pickle.dumps(NgramLM(counts)))
    assert old.vocabulary == new.vocabulary and old.counts() == new.counts() == counts
    assert old.score_many(CAPTIONS) == new.score_many(CAPTIONS)


def test_an_empty_corpus_gives_the_uniform_model():
    model = NgramLM(Counter())
    assert model.vocabulary == [EOS, UNK]
    assert model.prob("a", BOS, BOS) == model.prob(EOS, "x", "y") == 0.5
