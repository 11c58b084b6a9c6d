"""Tokenizer, decoding and collation on hand-built samples with fixed seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from schemas import packed
from schemas.batch import IGNORE_INDEX
from tests.training.packed_fixture import REGION_CLASSES, REGION_DIM, make_sample
from training.collate import (
    BadSample,
    Sample,
    collate,
    decode_sample,
    mask_text,
    sample_units,
    seq2seq_attention,
    seq2seq_text,
)
from training.data import BatchKind, DataConfig
from training.tokenizer import (
    char_span_to_tokens,
    encode,
    encode_plain,
    load_tokenizer,
    phrase_token_spans,
    special_ids,
)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(None)


@pytest.fixture(scope="module")
def special(tok):
    return special_ids(tok)


def cfg(**overrides) -> DataConfig:
    return DataConfig(region_dim=REGION_DIM, region_classes=REGION_CLASSES, **overrides)


def pair(tok, key: str, text: str, boxes, phrases=(), image=b"img", feats=None) -> Sample:
    enc = encode(tok, text, 64)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    feats = (
        feats if feats is not None else np.arange(len(boxes) * REGION_DIM, dtype=np.float32).reshape(-1, REGION_DIM) + 1
    )
    probs = np.full((len(boxes), REGION_CLASSES), 1 / REGION_CLASSES, dtype=np.float32)
    meta = {"sample_key": f"raw-{key}", "modality": "pair", "phrases": list(phrases)}
    return Sample(key=key, task=packed.PAIRS, meta=meta, ids=enc.ids, offsets=enc.offsets,
                  phrase_spans=phrase_token_spans(enc.offsets, phrases), image=image, boxes=boxes,
                  feats=feats.astype(np.float16), probs=probs.astype(np.float16))


BOXES = [[0, 0, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9], [0.1, 0.6, 0.3, 0.9]]


def test_wordpiece_from_the_local_folder(tok, special):
    enc = encode(tok, "A dog runs on the beach.", 16)
    assert enc.ids == [101, 1037, 3899, 3216, 2006, 1996, 3509, 1012, 102]
    assert (special.pad, special.cls, special.sep, special.mask, special.vocab_size) == (0, 101, 102, 103, 30522)
    assert char_span_to_tokens(enc.offsets, 2, 10) == (2, 4)  # "dog runs"
    assert char_span_to_tokens(enc.offsets, 100, 110) is None
    assert phrase_token_spans(enc.offsets, [{"start": 14, "end": 23}, {"start": 90, "end": 95}]) == [(5, 7)]
    assert encode_plain(tok, "the beach", 8) == [1996, 3509]
    truncated = encode(tok, "A dog runs on the beach.", 4)
    assert truncated.ids == [101, 1037, 3899, 102]
    assert char_span_to_tokens(truncated.offsets, 2, 10) == (2, 3), "a phrase cut by truncation keeps its tokens"
    with pytest.raises(FileNotFoundError, match="no vocab.txt"):
        load_tokenizer("/nonexistent")


@pytest.mark.parametrize("mode", ["token", "span", "phrase"])
def test_mask_text_targets_only_masked_non_special_positions(tok, special, mode):
    enc = encode(tok, "a man rides a red bike near the old house on a sunny day with his small dog", 64)
    spans = [(2, 4), (5, 7)]
    inputs, labels = mask_text(enc.ids, spans, mode, cfg(), special, np.random.default_rng(5))
    again = mask_text(enc.ids, spans, mode, cfg(), special, np.random.default_rng(5))
    assert (inputs == again[0]).all() and (labels == again[1]).all(), "same seed, same masking"
    ids = np.asarray(enc.ids)
    target = labels != IGNORE_INDEX
    assert target.sum() >= 1 and not target[0] and not target[-1]
    assert (labels[target] == ids[target]).all()
    assert (inputs[~target] == ids[~target]).all()
    if mode == "phrase":
        assert target[2:4].all() or target[5:7].all()


def test_seq2seq_moves_fragments_behind_the_source(special):
    ids = [101, 11, 12, 13, 14, 15, 16, 102]
    out, labels, source_len = seq2seq_text(ids, [(2, 4), (6, 7)], special)
    assert out.tolist() == [101, 11, 14, 15, 102, 101, 12, 13, 102, 101, 16, 102]
    assert source_len == 5
    # the target AT each generated position (the objective shifts: output at t - 1 predicts t)
    assert labels.tolist() == [IGNORE_INDEX] * 5 + [IGNORE_INDEX, 12, 13, 102, IGNORE_INDEX, 16, 102]
    pattern = seq2seq_attention([(source_len, [], len(out))], text_len=13, visual_len=2)
    assert pattern.shape == (1, 15, 15)
    p = pattern[0]
    assert p[0, :5].all() and not p[0, 5:13].any() and p[0, 13:].all(), "source: source + visual"
    assert p[13, :5].all() and not p[13, 5:13].any(), "visual: source + visual"
    assert p[7, :8].all() and not p[7, 8:13].any() and p[7, 13:].all(), "target: causal over the target"
    assert not p[:, 12].any(), "the padding position is seen by nobody"


def test_itm_rows_carry_the_swapped_text_or_image(tok):
    samples = [pair(tok, f"s{i}", f"caption number {i} about a {w}", BOXES[: 1 + i % 3],
                    feats=np.full((1 + i % 3, REGION_DIM), i + 1, dtype=np.float32))
               for i, w in enumerate(["dog", "cat", "bus", "tree", "boat", "horse"])]
    batch = collate(samples, BatchKind(packed.PAIRS, ["itm", "wra"]), cfg(), tok, np.random.default_rng(2))
    assert batch.keys == [s.key for s in samples]
    labels = batch.itm_labels.tolist()
    assert 0 in labels and 1 in labels
    image_from, text_from = batch.extra["itm_image_from"].tolist(), batch.extra["itm_text_from"].tolist()
    for i in range(len(samples)):
        ids = samples[text_from[i]].ids
        assert batch.input_ids[i, :len(ids)].tolist() == ids
        assert batch.region_feats[i, 0, 0].item() == image_from[i] + 1
        assert labels[i] == int(image_from[i] == i and text_from[i] == i)
    assert batch.mlm_labels is None and batch.region_masked is None
    assert batch.image_keys == [f"raw-s{j}" for j in image_from]


def test_conditional_masking_masks_one_modality_per_sample(tok):
    samples = [pair(tok, f"s{i}", "a small red bike leans on a green wall near the old house", BOXES)
               for i in range(40)]
    batch = collate(samples, BatchKind(packed.PAIRS, ["mlm", "mrfr", "mrc"]), cfg(), tok, np.random.default_rng(0))
    text_masked = (batch.mlm_labels != IGNORE_INDEX).any(1)
    region_masked = batch.region_masked.any(1)
    assert not (text_masked & region_masked).any()
    assert (text_masked | region_masked).all()
    assert 10 < int(text_masked.sum()) < 30
    rows = region_masked.nonzero().flatten()
    assert (batch.region_feats[batch.region_masked] == 0).all()
    assert (batch.region_feat_targets[rows][batch.region_masked[rows]] != 0).all()
    assert torch.equal(batch.region_feats[~batch.region_masked], batch.region_feat_targets[~batch.region_masked])
    assert batch.region_class_targets.shape == (40, 3, REGION_CLASSES)
    assert batch.region_loc.shape == (40, 3, 7)
    assert batch.region_loc[0, 0].tolist() == pytest.approx([0, 0, 0.4, 0.4, 0.4, 0.4, 0.16])


def test_p_mrtc_masks_linked_regions_with_their_phrase_tokens(tok):
    text = "a red bike near the old house"
    links = [{"start": 0, "end": 10, "phrase": "a red bike", "region": 1, "score": 0.9},
             {"start": 16, "end": 29, "phrase": "the old house", "region": 2, "score": 0.4}]
    samples = []
    for i in range(30):
        s = pair(tok, f"w{i}", text, BOXES)
        s.task = packed.WEAK_PAIRS
        s.meta.update(phrase_regions=links, score=0.5)
        samples.append(s)
    batch = collate(samples, BatchKind(packed.WEAK_PAIRS, ["mlm", "p_mrtc"]), cfg(), tok, np.random.default_rng(3))
    region_rows = batch.region_masked.any(1)
    text_rows = (batch.mlm_labels != IGNORE_INDEX).any(1)
    assert not (region_rows & text_rows).any() and region_rows.any() and text_rows.any()
    assert not batch.region_masked[:, 0].any(), "only linked regions are masked"
    for i in region_rows.nonzero().flatten().tolist():
        for region, phrase in ((1, "a red bike"), (2, "the old house")):
            targets = batch.region_token_targets[i, region]
            if batch.region_masked[i, region]:
                expected = encode_plain(tok, phrase, 8)
                assert targets[:len(expected)].tolist() == expected
                assert (targets[len(expected):] == IGNORE_INDEX).all()
            else:
                assert (targets == IGNORE_INDEX).all()
    assert batch.extra["retrieval_scores"].tolist() == [0.5] * 30


def test_cmcl_sub_batches_name_their_anchor(tok):
    rng = np.random.default_rng(0)
    config = cfg()
    samples = []
    for i in range(3):
        raw = make_sample(packed.CMCL, f"c{i}", rng)
        samples.append(decode_sample(raw, packed.CMCL, config, tok))
    batch = collate(samples, BatchKind(packed.CMCL, ["cmcl"]), config, tok, np.random.default_rng(0))
    # per anchor: 1 back-translation + 1 related text + 1 related image; 2 rewrites
    assert batch.positives.owner.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert batch.negatives.owner.tolist() == [0, 0, 1, 1, 2, 2]
    assert batch.positives.text_mask[2].sum() == 0 and batch.positives.region_mask[2].sum() > 0
    assert batch.positives.text_mask[0].sum() > 0 and batch.positives.region_mask[0].sum() == 0
    assert batch.negatives.mlm_labels is None
    meta = json.loads(make_sample(packed.CMCL, "c0", np.random.default_rng(0))["json"])
    assert batch.negatives.input_ids[0, :3].tolist()[0] == 101 and meta["negatives"][0]["method"] == "scene_graph"


def test_patches_mode_gives_pixels_and_image_mask(tok):
    rng = np.random.default_rng(0)
    config = cfg(visual="patches", kinds=[BatchKind(packed.PAIRS, ["mlm"])])
    samples = [decode_sample(make_sample(packed.PAIRS, f"p{i}", rng), packed.PAIRS, config, tok) for i in range(2)]
    samples.append(decode_sample(make_sample(packed.TEXTS, "t0", rng), packed.TEXTS, config, tok))
    assert samples[0].feats is None, "patch models never load region arrays"
    assert sample_units(samples[0], config) == (len(samples[0].ids), 196)
    assert sample_units(samples[2], config) == (len(samples[2].ids), 0)
    batch = collate(samples, BatchKind(packed.PAIRS, ["mlm"]), config, tok, np.random.default_rng(0))
    assert batch.pixels.shape == (3, 3, 224, 224)
    assert batch.image_mask.tolist() == [True, True, False]
    assert (batch.pixels[2] == 0).all() and batch.pixels[0].std() > 0
    assert batch.region_feats is None
    assert batch.num_units() == int(batch.text_mask.sum()) + 2 * 196


def test_bad_samples_name_their_reason(tok):
    rng = np.random.default_rng(0)
    config = cfg()
    raw = make_sample(packed.PAIRS, "x", rng)
    with pytest.raises(BadSample, match="region_shape"):
        decode_sample(raw, packed.PAIRS, DataConfig(region_dim=REGION_DIM + 1, region_classes=REGION_CLASSES), tok)
    broken = dict(raw, json=b"{not json")
    with pytest.raises(BadSample) as info:
        decode_sample(broken, packed.PAIRS, config, tok)
    assert info.value.reason == "bad_json"
    with pytest.raises(BadSample, match="bad_image"):  # patch models decode the image when the sample is read
        decode_sample(dict(raw, jpg=raw["jpg"][:40]), packed.PAIRS, cfg(visual="patches", kinds=[]), tok)
    no_image = {k: v for k, v in raw.items() if k != "jpg"}
    with pytest.raises(BadSample, match="no_image"):
        decode_sample(no_image, packed.PAIRS, config, tok)
    bad_npy = dict(raw, **{packed.REGION_FEATS: b"garbage"})
    with pytest.raises(BadSample, match="bad_npy"):
        decode_sample(bad_npy, packed.PAIRS, config, tok)
    with pytest.raises(BadSample, match="missing_fields"):
        decode_sample(raw, packed.WEAK_PAIRS, config, tok)
    meta = json.loads(raw["json"])
    meta["regions"]["boxes"][0] = [0.9, 0.1, 0.2, 0.5]
    with pytest.raises(BadSample, match="bad_boxes"):
        decode_sample(dict(raw, json=json.dumps(meta).encode()), packed.PAIRS, config, tok)


def test_read_npy_matches_numpy_and_refuses_what_numpy_refuses():
    import io

    from training.collate import read_npy

    arrays = [np.arange(55 * 8, dtype=np.float16).reshape(55, 8), np.arange(6, dtype=">i4"),
              np.asfortranarray(np.arange(12.0).reshape(3, 4)), np.float32(3.5).reshape(()), np.zeros((0, 5))]
    for array in arrays:
        out = io.BytesIO()
        np.save(out, array)
        got = read_npy(out.getvalue())
        assert got.dtype == array.dtype and got.shape == array.shape and (got == array).all()
    out = io.BytesIO()
    np.save(out, np.zeros((10, 8), dtype=np.float16))
    with pytest.raises(ValueError, match="truncated"):
        read_npy(out.getvalue()[:-20])
    out = io.BytesIO()
    np.save(out, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        read_npy(out.getvalue())


def test_vector_locations_equal_the_scalar_encodings():
    from schemas.regions import locations, muvla_location, uniter_location

    boxes = np.array(BOXES + [[0.0, 0.0, 1.0, 1.0]])
    assert np.allclose(locations(boxes, "uniter"), [uniter_location(b) for b in boxes.tolist()])
    assert np.allclose(locations(boxes, "muvla"), [muvla_location(b) for b in boxes.tolist()])
    with pytest.raises(ValueError, match="normalised"):
        locations([[0.5, 0, 0.2, 1]])
