"""Masking functions on hand-built inputs with fixed seeds, and their proportions over many draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from schemas.batch import IGNORE_INDEX
from training import masking

MASK, VOCAB = 103, 30522


def within(count: int, trials: int, share: float, sigmas: float = 4.0) -> bool:
    return abs(count - trials * share) < sigmas * math.sqrt(trials * share * (1 - share))


def test_80_10_10_proportions_and_labels():
    rng = np.random.default_rng(0)
    ids = rng.integers(2000, 3000, size=200_000)
    selected = np.ones(len(ids), dtype=bool)
    selected[::2] = False
    inputs, labels = masking.apply_80_10_10(ids, selected, rng, MASK, VOCAB)
    assert (labels[selected] == ids[selected]).all()
    assert (labels[~selected] == IGNORE_INDEX).all()
    assert (inputs[~selected] == ids[~selected]).all()
    chosen, original = inputs[selected], ids[selected]
    n = len(chosen)
    masked = chosen == MASK
    kept = chosen == original
    randomised = ~masked & ~kept
    assert within(int(masked.sum()), n, 0.8)
    # a random draw can hit the original token (1 in ~29.5k): "unchanged" is 10% plus that sliver
    assert within(int(kept.sum()), n, 0.1 + 0.1 / (VOCAB - 999))
    assert within(int(randomised.sum()), n, 0.1 - 0.1 / (VOCAB - 999))
    assert chosen[randomised].min() >= 999 and chosen[randomised].max() < VOCAB


def test_token_selection_rate_and_at_least_one():
    rng = np.random.default_rng(1)
    candidates = np.ones(100_000, dtype=bool)
    candidates[:10] = False
    selected = masking.token_selection(candidates, rng, 0.15)
    assert not selected[:10].any()
    assert within(int(selected.sum()), 99_990, 0.15)
    short = np.array([False, True, True, False])
    for seed in range(50):
        assert masking.token_selection(short, np.random.default_rng(seed), 0.15).sum() >= 1


def test_span_lengths_follow_a_clipped_geometric_distribution():
    """With a one-token budget the first span alone fills it: its length is min(Geo(0.2), 10)."""
    candidates = np.ones(100_000, dtype=bool)
    lengths = np.array([masking.span_selection(candidates, np.random.default_rng(seed), budget=1e-5).sum()
                        for seed in range(4000)])
    assert lengths.min() >= 1 and lengths.max() <= 10
    assert within(int((lengths == 1).sum()), 4000, 0.2)
    assert within(int((lengths == 10).sum()), 4000, 0.8 ** 9)
    assert abs(lengths.mean() - (1 - 0.8 ** 10) / 0.2) < 0.15


def test_spans_reach_the_budget_and_never_cross_specials():
    candidates = np.ones(200, dtype=bool)
    candidates[[0, 50, 199]] = False
    for seed in range(20):
        selected = masking.span_selection(candidates, np.random.default_rng(seed), 0.15)
        assert selected.sum() >= round(0.15 * 197)
        assert not selected[[0, 50, 199]].any()


def test_phrases_are_masked_whole_and_topped_up_to_the_budget():
    candidates = np.ones(42, dtype=bool)
    candidates[[0, 41]] = False
    spans = [(2, 5), (10, 12), (20, 24)]
    for seed in range(30):
        selected = masking.phrase_selection(candidates, spans, np.random.default_rng(seed), 0.15)
        for start, stop in spans:
            assert selected[start:stop].all() or not selected[start:stop].any()
        assert selected.sum() >= round(0.15 * 40)
        outside = selected.copy()
        for start, stop in spans:
            outside[start:stop] = False
        assert outside.sum() == 0, "phrases alone exceed the 6-token budget: no single tokens added"
    few = masking.phrase_selection(candidates, [(3, 4)], np.random.default_rng(0), 0.15)
    assert few[3] and few.sum() == round(0.15 * 40), "one 1-token phrase, topped up with single tokens"


def test_seq2seq_fragments_spend_exactly_the_budget_with_uniform_lengths():
    firsts = []
    for seed in range(3000):
        fragments = masking.seq2seq_fragments(402, np.random.default_rng(seed), 0.25, 4, 32)
        covered = np.zeros(402, dtype=bool)
        for start, stop in fragments:
            assert 1 <= start < stop <= 401
            assert not covered[start:stop].any(), "fragments never overlap"
            covered[start:stop] = True
        assert covered.sum() == 100
        firsts.append(fragments)
    lengths = [stop - start for fragments in firsts for start, stop in fragments]
    assert min(lengths) >= 1 and max(lengths) <= 32
    # the first draw of every run is a plain U(4, 32) (it is never cut: 32 < 100)
    draws = [masking.seq2seq_fragments(402, np.random.default_rng(seed), 0.25, 4, 32) for seed in range(3000)]
    assert all(len(d) >= 4 for d in draws)
    short = masking.seq2seq_fragments(12, np.random.default_rng(0), 0.25, 4, 32)
    assert sum(b - a for a, b in short) == math.ceil(0.25 * 10)
    assert masking.seq2seq_fragments(3, np.random.default_rng(0)) == []


def test_first_fragment_length_is_uniform_4_to_32():
    """Draw the generator as the function does: its first length is rng.integers(4, 33)."""
    counts = np.zeros(33, dtype=int)
    for seed in range(6000):
        rng = np.random.default_rng(seed)
        expected = int(np.random.default_rng(seed).integers(4, 33))
        fragments = masking.seq2seq_fragments(402, rng, 0.25, 4, 32)
        assert expected in [b - a for a, b in fragments]
        counts[expected] += 1
    assert counts[:4].sum() == 0
    for length in range(4, 33):
        assert within(int(counts[length]), 6000, 1 / 29)


def test_box_iou_by_hand():
    boxes = np.array([[0, 0, 0.5, 0.5], [0.25, 0, 0.75, 0.5], [0.6, 0.6, 1, 1]])
    iou = masking.box_iou(boxes)
    assert iou[0, 1] == pytest.approx(0.125 / 0.375)
    assert iou[0, 2] == 0 and iou[1, 1] == pytest.approx(1.0)


def test_region_masking_takes_neighbours_over_the_iou_threshold_only():
    # region 1 overlaps region 0 with IoU 1/3 (> 0.3); region 2 overlaps region 0 with IoU 0.2 (< 0.3)
    boxes = np.array([[0, 0, 0.4, 0.4], [0.2, 0, 0.6, 0.4], [0.0, 0.0, 0.4, 0.08], [0.7, 0.7, 0.9, 0.9]])
    assert masking.box_iou(boxes)[0, 1] > 0.3 and masking.box_iou(boxes)[0, 2] == pytest.approx(0.2)
    seen = 0
    for seed in range(300):
        masked, anchors = masking.region_selection(boxes, np.random.default_rng(seed), 0.15, 0.3)
        assert (masked >= anchors).all()
        if anchors[0] and anchors.sum() == 1:
            seen += 1
            assert masked.tolist() == [True, True, False, False]
    assert seen > 0


def test_region_anchor_rate_over_many_draws():
    boxes = np.array([[i / 1000, 0, (i + 1) / 1000, 0.001] for i in range(1000)])  # disjoint
    total = sum(masking.region_selection(boxes, np.random.default_rng(s), 0.15)[0].sum() for s in range(40))
    assert within(int(total), 40_000, 0.15)


def test_linked_selection_is_proportional_to_the_link_score():
    scores = [0.1, 0.2, 0.7]
    counts = np.zeros(3, dtype=int)
    for seed in range(8000):
        chosen = masking.linked_selection(scores, np.random.default_rng(seed), 0.15)
        assert len(chosen) == 1  # max(1, round(0.15 * 3))
        counts[chosen[0]] += 1
    for index, share in enumerate(scores):
        assert within(int(counts[index]), 8000, share)
    assert len(masking.linked_selection([1.0] * 20, np.random.default_rng(0), 0.15)) == 3
    assert len(masking.linked_selection([], np.random.default_rng(0))) == 0


def test_itm_pairing_swaps_half_never_recreating_a_true_pair():
    images = ["a", "a", "b", "c", "d", "e", "f", "g"]  # samples 0 and 1 share an image (two captions)
    texts = ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"]
    negatives = image_swaps = 0
    for seed in range(3000):
        image_from, text_from, labels = masking.itm_pairing(images, texts, np.random.default_rng(seed))
        for i in range(8):
            swapped = image_from[i] != i or text_from[i] != i
            assert labels[i] == (0 if swapped else 1)
            assert not (image_from[i] != i and text_from[i] != i), "one side swapped at a time"
            if swapped:
                assert images[image_from[i]] != images[i] or texts[text_from[i]] != texts[i]
                if image_from[i] != i:
                    assert images[image_from[i]] != images[i]
                    image_swaps += 1
                negatives += 1
    assert within(negatives, 24_000, 0.5)
    assert within(image_swaps, negatives, 0.5)


def test_patchify_order_and_image_pixels():
    from PIL import Image

    pixels = np.arange(3 * 32 * 48, dtype=np.float32).reshape(3, 32, 48)
    patches = masking.patchify(pixels, 16)
    assert patches.shape == (6, 3 * 16 * 16)
    assert (patches[0] == pixels[:, :16, :16].reshape(-1)).all()
    assert (patches[1] == pixels[:, :16, 16:32].reshape(-1)).all()
    assert (patches[3] == pixels[:, 16:, :16].reshape(-1)).all()
    with pytest.raises(ValueError, match="not a multiple"):
        masking.patchify(pixels[:, :30], 16)
    grey = masking.image_pixels(Image.new("RGB", (50, 30), (128, 128, 128)), 224)
    assert grey.shape == (3, 224, 224)
    assert np.allclose(grey[:, 0, 0], (128 / 255 - masking.IMAGE_MEAN) / masking.IMAGE_STD, atol=1e-5)
