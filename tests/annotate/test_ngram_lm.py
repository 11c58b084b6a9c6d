"""The corpus trigram model that ranks scene-graph rewrites by fluency: a proper distribution, combinable
counts, and fluent text scoring above scrambled text."""

import math

import pytest

from pipelines.annotators.ngram_lm import BOS, EOS, UNK, NgramCombiner, tokenize, train

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
    assert forward.trigrams == backward.trigrams == whole.trigrams
    assert forward.vocabulary == whole.vocabulary
    text = "A cat playing with a ball."
    assert forward.score(text) == backward.score(text) == whole.score(text)


def test_discount_must_be_between_zero_and_one():
    with pytest.raises(ValueError, match="discount"):
        train(CAPTIONS, discount=1.0)
