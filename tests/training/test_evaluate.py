"""Zero-shot retrieval: recall@k against brute force, ITC and ITM heads, batching and shared images."""

from __future__ import annotations

import pytest
import torch

from tests.training.tiny import pairs_batch, tiny_model
from training.evaluate import recall_at_k, zero_shot_retrieval
from training.model.inputs import select
from training.objectives import build_objectives, run_objectives


def brute_recall(scores, text_image, k):
    images, texts = scores.shape
    i2t = t2i = 0
    for i in range(images):
        ranked = sorted(range(texts), key=lambda t: -float(scores[i, t]))[:k]
        i2t += any(int(text_image[t]) == i for t in ranked)
    for t in range(texts):
        ranked = sorted(range(images), key=lambda i: -float(scores[i, t]))[:k]
        t2i += int(text_image[t]) in ranked
    return i2t / images, t2i / texts


def test_recall_matches_brute_force_with_shared_images():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(7, 15, generator=g)
    text_image = torch.randint(0, 7, (15,), generator=g)
    text_image[:7] = torch.arange(7)  # every image has a text
    metrics = recall_at_k(scores, text_image, ks=(1, 3, 5))
    for k in (1, 3, 5):
        i2t, t2i = brute_recall(scores, text_image, k)
        assert metrics[f"i2t_r{k}"] == pytest.approx(i2t) and metrics[f"t2i_r{k}"] == pytest.approx(t2i)


def test_itc_recall_is_computed_from_the_dual_encoder():
    model = tiny_model()
    batch = pairs_batch(b=6)
    got = zero_shot_retrieval(model, [batch], head="itc")
    with torch.no_grad():
        scores = model.embed_image(batch) @ model.embed_text(batch).t()
    assert got == recall_at_k(scores, torch.arange(6))
    assert set(got) == {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"}
    assert got["i2t_r10"] == 1.0  # only 6 candidates


def test_a_model_trained_on_the_pairs_retrieves_them():
    model = tiny_model()
    batch = pairs_batch(b=4)
    before = zero_shot_retrieval(model, [batch])
    objectives = build_objectives(["itc"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(40):
        loss, _ = run_objectives(model, objectives, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = zero_shot_retrieval(model, [batch])
    assert after["i2t_r1"] == after["t2i_r1"] == 1.0
    assert before["i2t_r1"] < 1.0 or before["t2i_r1"] < 1.0
    assert model.training  # restored after evaluation


def test_itm_head_over_batches_equals_one_batch_and_candidates():
    model = tiny_model()
    batch = pairs_batch(b=6)
    whole = zero_shot_retrieval(model, [batch], head="itm", ks=(1, 2))
    split = zero_shot_retrieval(model, [select(batch, torch.arange(3)), select(batch, torch.arange(3, 6))],
                                head="itm", ks=(1, 2))
    assert whole == split
    # reranking every candidate is scoring every pair
    assert zero_shot_retrieval(model, [batch], head="itm", ks=(1, 2), itm_candidates=6) == whole
    # the scores are the ITM head's matched probabilities
    from training.model.inputs import pair
    with torch.no_grad():
        probs = model.itm_logits(model(pair(batch, torch.arange(6).repeat(6), batch,
                                            torch.arange(6).repeat_interleave(6)))).softmax(-1)[:, 1]
    assert whole == recall_at_k(probs.view(6, 6), torch.arange(6), ks=(1, 2))


def test_texts_of_one_image_count_it_once():
    model = tiny_model()
    batch = pairs_batch(b=4)
    batch.image_keys = ["a", "a", "b", "c"]
    got = zero_shot_retrieval(model, [batch], ks=(1,))
    with torch.no_grad():
        images = model.embed_image(batch)[[0, 2, 3]]
        scores = images @ model.embed_text(batch).t()
    assert got == recall_at_k(scores, torch.tensor([0, 0, 1, 2]), ks=(1,))
    with pytest.raises(ValueError, match="head"):
        zero_shot_retrieval(model, [batch], head="cos")
