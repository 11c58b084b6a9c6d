"""The corpus trigram model that ranks scene-graph rewrites by fluency: a proper distribution, counts that
combine in buckets in any order, fluent text scoring above scrambled text, the model's probabilities the
formulas' floats computed one at a time (``_Reference``: the dict model the arrays replaced) however the
counts were bucketed, and the parts written apart and memory-mapped giving the same model."""

import math
import os
from collections import Counter, defaultdict

import fsspec
import numpy as np
import pytest

from benchmarks.rewrite import make_captions
from pipelines.annotators import ngram_counts
from pipelines.annotators.ngram_counts import (
    BOS,
    EOS,
    UNK,
    BigramShare,
    BucketCounts,
    Summing,
    UnigramTotals,
    bigram_part,
    count_texts,
    tokenize,
    trigram_part,
    trigrams,
    vocabulary_of,
)
from pipelines.annotators.ngram_lm import SECTIONS, NgramLM, model_of, train, write_model, write_part

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
    vocabulary = {word for text in CAPTIONS for word in tokenize(text)} | {EOS, UNK}  # <s> is never predicted
    assert lm.vocabulary_size == len(vocabulary)
    assert sum(lm.prob(w, *context) for w in vocabulary) == pytest.approx(1.0, abs=1e-9)


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


def _merged(parts: list[dict[int, BucketCounts]], order: list[int]) -> dict[int, BucketCounts]:
    """Each bucket's counts merged as a CombinePerKey would, the parts taken in ``order``."""
    combiner = Summing(BucketCounts)
    merged = {}
    for bucket in {b for part in parts for b in part}:
        accumulators = []
        for i in order:
            if bucket in parts[i]:
                accumulators.append(combiner.add_input(combiner.create_accumulator(), parts[i][bucket]))
        merged[bucket] = combiner.extract_output(combiner.merge_accumulators(accumulators))
    return merged


def _grams(texts: list[str]) -> tuple[list[str], list[str], list[str]]:
    grams = [gram for text in texts for gram in trigrams(text)]
    return [g[2] for g in grams], [g[0] for g in grams], [g[1] for g in grams]


ASKED = CAPTIONS + ["A cat playing with a ball.", "zebra zebra", "", "a a a a"]


def test_counts_combine_to_the_same_model_in_any_merge_order():
    parts = [count_texts(chunk, bits=3) for chunk in (CAPTIONS[:3], CAPTIONS[3:5], CAPTIONS[5:])]
    forward, backward = (model_of(_merged(parts, order), bits=3) for order in ([0, 1, 2], [2, 1, 0]))
    whole = train(CAPTIONS, bits=3)
    assert forward.vocabulary_size == backward.vocabulary_size == whole.vocabulary_size
    assert forward.probs(*_grams(ASKED)).tolist() == backward.probs(*_grams(ASKED)).tolist() == \
        whole.probs(*_grams(ASKED)).tolist()


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


@pytest.mark.parametrize("bits", [0, 3, 6])
def test_the_model_gives_the_formulas_floats_bit_for_bit_however_bucketed(bits):
    texts = [c[3] for c in make_captions(3000, vocabulary=2000)] + CAPTIONS
    counts = Counter(gram for text in texts for gram in trigrams(text))
    model, reference = train(texts, bits=bits), _Reference(counts)
    assert model.vocabulary_size == len(reference.vocabulary)
    asked = [c[3] for c in make_captions(300, seed=9, vocabulary=2400)] + ASKED
    w, u, v = _grams(asked)
    assert model.probs(w, u, v).tolist() == [reference.prob(*gram) for gram in zip(w, u, v, strict=True)]
    assert model.score_many(asked) == [reference.score(text) for text in asked]  # seen, backed off, unseen


def test_counts_folded_in_small_parts_give_the_model_of_the_counter(monkeypatch):
    """Counts folded every few trigrams and merged across parts give the model of a Counter of the same
    texts' trigrams, bit for bit."""
    monkeypatch.setattr(ngram_counts, "PENDING", 7)
    texts = [c[3] for c in make_captions(400, vocabulary=300)] + CAPTIONS + [""]
    parts = [count_texts(texts[i::3], bits=2) for i in range(3)]
    model = model_of(_merged(parts, [1, 0, 2]), bits=2)
    reference = _Reference(Counter(gram for text in texts for gram in trigrams(text)))
    assert model.score_many(texts + ASKED) == reference.score_many(texts + ASKED)


def test_two_words_sharing_a_hash_is_an_error_not_a_merged_count():
    counts = BucketCounts(words={7: "cat"})
    with pytest.raises(ValueError, match="share a 64-bit hash"):
        counts.add(np.zeros((0, 3), dtype=np.uint64), np.zeros(0, dtype=np.int64), {7: "dog"})


def test_no_bucket_holds_a_frequent_words_trigrams_whole():
    """Buckets by context pair: a word in the middle of most trigrams spreads over every bucket (by middle word,
    one bucket would hold them all), and buckets grow in number with the corpus."""
    rng = np.random.default_rng(2)
    texts = [" a ".join(f"w{i}" for i in rng.integers(0, 500, 6)) for _ in range(3000)]
    buckets = count_texts(texts, bits=6)
    sizes = [len(counts.counts) for counts in buckets.values()]
    middle_a = sum(int((counts.keys[:, 1] == ngram_counts.word_hash("a")).sum()) for counts in buckets.values())
    assert middle_a > sum(sizes) / 3  # what one bucket by middle word would hold
    assert len(sizes) == 64 and max(sizes) < sum(sizes) / 10  # a bucket: ~1/64, plus a pair's <= 500 followers
    assert [ngram_counts.bits_for(n) for n in (1, 8, 1024, 33000)] == [6, 6, 7, 12]


@pytest.mark.parametrize("bits", [0, 3])
def test_context_pairs_sharing_a_hash_keep_their_own_counts(monkeypatch, bits):
    """The 64-bit pair hash only buckets the context pairs, the model keys them by word ids: with every pair
    hashing alike (one bucket, every hash a collision) the model is still the Counter's, bit for bit."""
    monkeypatch.setattr(ngram_counts, "pair_hashes", lambda first, second: np.zeros(len(first), dtype=np.uint64))
    texts = [c[3] for c in make_captions(200, vocabulary=150)] + CAPTIONS
    reference = _Reference(Counter(gram for text in texts for gram in trigrams(text)))
    assert train(texts, bits=bits).score_many(texts + ASKED) == reference.score_many(texts + ASKED)


def test_a_vocabulary_too_large_for_the_pair_keys_is_a_clear_error():
    first = np.zeros(1, dtype=np.uint64)
    assert ngram_counts.pair_keys(first, first, [3], [4], 1 << 29, 6).tolist() == [(3 << 29) + 4]
    with pytest.raises(ValueError, match="do not fit a pair key beside 6 bucket bits"):
        ngram_counts.pair_keys(first, first, [3], [4], (1 << 29) + 1, 6)


def _write(folder: str, texts: list[str], bits: int) -> None:
    """The model as the stage writes it: each pair bucket's part, each middle-word bucket's part from their
    shares, then the model's arrays appended from the parts."""
    combiner, shares, buckets = Summing(BigramShare), {}, count_texts(texts, bits)
    vocabulary = vocabulary_of(counts.word_hashes() for counts in buckets.values())
    for bucket, counts in buckets.items():
        part, mine = trigram_part(counts.finish(), vocabulary, bucket, bits)
        write_part(folder, bucket, part)
        for middle, share in mine.items():
            combiner.add_input(shares.setdefault(middle, combiner.create_accumulator()), share)
    totals = UnigramTotals()
    for middle, share in shares.items():
        part = bigram_part(combiner.extract_output(share), vocabulary, middle, bits)
        write_part(folder, middle, part)
        totals.add(middle, part.unigram_ids, part.unigram_cont, share.trigram_buckets)
    write_model(folder, vocabulary, totals, 0.75, bits)


def test_a_model_written_in_parts_is_mapped_not_read_and_gives_the_same_floats(tmp_path):
    texts = [c[3] for c in make_captions(2000, vocabulary=1500)] + CAPTIONS
    _write(str(tmp_path / "ngram"), texts, bits=4)
    assert not os.listdir(tmp_path / "ngram" / "parts")  # appended to the model's arrays, then removed
    loaded, memory = NgramLM.load(str(tmp_path / "ngram")), train(texts, bits=4)
    assert all(isinstance(getattr(loaded, name).base, np.memmap) for name in SECTIONS)
    assert all(getattr(loaded, name).tolist() == getattr(memory, name).tolist() for name in SECTIONS)
    asked = [c[3] for c in make_captions(200, seed=3, vocabulary=1800)] + ASKED
    assert loaded.score_many(asked) == memory.score_many(asked)


def test_a_remote_model_is_copied_once_then_mapped(tmp_path):
    texts = [c[3] for c in make_captions(500, vocabulary=400)] + CAPTIONS
    _write(str(tmp_path / "ngram"), texts, bits=2)
    remote = fsspec.filesystem("memory")
    remote.put(str(tmp_path / "ngram"), "/ngram-model", recursive=True)
    loaded = NgramLM.load("memory:///ngram-model", cache=str(tmp_path / "cache"))
    assert loaded.pairs.base.filename.startswith(str(tmp_path / "cache"))
    assert loaded.score_many(ASKED) == train(texts, bits=2).score_many(ASKED)


def test_a_folder_without_a_finished_model_is_a_clear_error(tmp_path):
    (tmp_path / "parts").mkdir()  # a build killed before its model file
    (tmp_path / "model.json").write_text('{"discount": 0.75, "bits": 6}')  # a model keying its pairs by hash (v1)
    with pytest.raises(ValueError, match=r"no model\.v2\.json; the n-gram model is built by `unicorpus annotate "):
        NgramLM.load(str(tmp_path))


def test_an_empty_corpus_gives_the_uniform_model():
    model = train([])
    assert model.vocabulary_size == 2  # </s> and <unk>
    assert model.prob("a", BOS, BOS) == model.prob(EOS, "x", "y") == 0.5
