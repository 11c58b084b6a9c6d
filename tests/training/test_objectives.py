"""Every objective against a hand-written dense reference on tiny tensors (loops, no shared code)."""

from __future__ import annotations

import math

import pytest
import torch

from schemas.batch import IGNORE_INDEX, Batch
from tests.training.tiny import pairs_batch, seq2seq_targets, tiny_model, with_targets
from training.model.inputs import select
from training.objectives import OBJECTIVES, build_objectives
from training.objectives.cmcl import cmcl_loss
from training.objectives.grounded_dictionary import grounding_loss
from training.objectives.itm import sample_hard_negatives


def _log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    total = math.log(sum(math.exp(v - top) for v in row)) + top
    return [v - total for v in row]


def _run(name, model, batch, **options):
    objective = build_objectives({name: options})[name]
    outputs = model(batch) if objective.needs_joint else None
    return objective(model, batch, outputs), outputs


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture
def batch():
    return with_targets(pairs_batch())


def test_registry_has_every_contract_name():
    assert sorted(OBJECTIVES) == sorted(["mlm", "seq2seq", "mrfr", "mrc", "mrc_kl", "itm", "wra", "itc", "cmcl",
                                         "p_mrtc", "grounded_dictionary"])
    for cls in OBJECTIVES.values():
        doc = (__import__(cls.__module__, fromlist=["x"]).__doc__ or "")
        assert "§" in doc or "App." in doc, f"{cls.__name__} docstring names no paper section"
    with pytest.raises(ValueError, match="unknown objective 'mlmm'"):
        build_objectives(["mlmm"])
    with pytest.raises(ValueError, match="objectives.wra"):
        build_objectives({"wra": {"nope": 1}})


def test_missing_target_names_the_field(model):
    with pytest.raises(ValueError, match="batch.mlm_labels"):
        _run("mlm", model, pairs_batch())


@pytest.mark.parametrize("weighted", [False, True])
def test_mlm_matches_reference_with_span_targets(model, batch, weighted):
    # span-style targets: a contiguous run in sample 0 plus scattered tokens elsewhere
    batch.mlm_labels[0, 2:5] = batch.input_ids[0, 2:5]
    if weighted:
        batch.sample_weights = torch.tensor([0.2, 1.0, 0.5, 0.0])
    result, out = _run("mlm", model, batch)
    logits = model.vocab_logits(out.text)
    total, count = 0.0, 0
    for b in range(len(batch)):
        w = 1.0 if not weighted else float(batch.sample_weights[b])
        for t in range(batch.input_ids.shape[1]):
            label = int(batch.mlm_labels[b, t])
            if label != IGNORE_INDEX:
                total += -w * _log_softmax(logits[b, t].tolist())[label]
                count += 1
    assert result.loss.item() == pytest.approx(total / count, rel=1e-5)


def test_seq2seq_shifts_and_respects_the_pattern(model):
    batch = seq2seq_targets(pairs_batch())
    result, out = _run("seq2seq", model, batch)
    logits = model.vocab_logits(out.text)
    total, count = 0.0, 0
    for b in range(len(batch)):
        for t in range(1, batch.input_ids.shape[1]):
            label = int(batch.lm_labels[b, t])
            if label != IGNORE_INDEX:
                total += -_log_softmax(logits[b, t - 1].tolist())[label]
                count += 1
    assert result.loss.item() == pytest.approx(total / count, rel=1e-5)
    # a later target token cannot change the prediction of an earlier one
    changed = seq2seq_targets(pairs_batch())
    changed.input_ids[0, -1] = (changed.input_ids[0, -1] + 1) % 50 + 3
    out2 = model(changed)
    assert torch.allclose(out.text[0, :-1], out2.text[0, :-1], atol=1e-5)
    assert not torch.allclose(out.text[0, -1], out2.text[0, -1], atol=1e-5)


def test_seq2seq_without_pattern_is_refused(model):
    batch = seq2seq_targets(pairs_batch())
    batch.attention_pattern = None
    with pytest.raises(ValueError, match="attention_pattern"):
        _run("seq2seq", model, batch)


def test_mrfr_mrc_mrc_kl_match_reference(model, batch):
    out = model(batch)
    feats = model.region_features(out.visual)
    logits = model.region_class_logits(out.visual)
    l2, ce_hard, kl, n = 0.0, 0.0, 0.0, 0
    for b in range(len(batch)):
        for r in range(batch.region_feats.shape[1]):
            if not batch.region_masked[b, r]:
                continue
            n += 1
            l2 += sum(
                (p - q) ** 2
                for p, q in zip(feats[b, r].tolist(), batch.region_feat_targets[b, r].tolist(), strict=True)
            )
            dist = batch.region_class_targets[b, r].tolist()
            logp = _log_softmax(logits[b, r].tolist())
            ce_hard += -logp[max(range(len(dist)), key=dist.__getitem__)]
            kl += sum(p * (math.log(p) - lq) for p, lq in zip(dist, logp, strict=True) if p > 0)
    assert _run("mrfr", model, batch)[0].loss.item() == pytest.approx(l2 / n, rel=1e-5)
    assert _run("mrc", model, batch)[0].loss.item() == pytest.approx(ce_hard / n, rel=1e-5)
    assert _run("mrc_kl", model, batch)[0].loss.item() == pytest.approx(kl / n, rel=1e-4)


def test_mrc_kl_gradient_is_prediction_minus_target(model, batch):
    """d KL / d logits = softmax(logits) - target, so the class head's bias gets the mean of that over
    the masked regions: checks the soft-target math, not just the value."""
    out = model(batch)
    logits = model.region_class_logits(out.visual).detach()
    masked = batch.region_masked
    expected = (logits[masked].softmax(-1) - batch.region_class_targets[masked]).mean(0)
    model.zero_grad()
    _run("mrc_kl", model, batch)[0].loss.backward()
    assert torch.allclose(model.region_class_head.bias.grad, expected, atol=1e-6)
    model.zero_grad()


def test_p_mrtc_matches_reference(model, batch):
    result, out = _run("p_mrtc", model, batch)
    logits = model.vocab_logits(out.visual)
    total, n = 0.0, 0
    for b in range(len(batch)):
        for r in range(batch.region_feats.shape[1]):
            tokens = [int(x) for x in batch.region_token_targets[b, r] if int(x) != IGNORE_INDEX]
            if not batch.region_masked[b, r] or not tokens:
                continue
            logp = _log_softmax(logits[b, r].tolist())
            total += -sum(logp[x] for x in tokens) / len(tokens)
            n += 1
    assert n < int(batch.region_masked.sum())  # the unlinked masked region was left out
    assert result.loss.item() == pytest.approx(total / n, rel=1e-5)


def test_itm_weighted_matches_reference(model, batch):
    batch.sample_weights = torch.tensor([1.0, 0.5, 0.25, 2.0])
    result, out = _run("itm", model, batch)
    logits = model.itm_logits(out)
    expected = sum(-float(batch.sample_weights[b]) * _log_softmax(logits[b].tolist())[int(batch.itm_labels[b])]
                   for b in range(len(batch))) / len(batch)
    assert result.loss.item() == pytest.approx(expected, rel=1e-5)


def test_hard_negatives_follow_itc_similarity():
    sim = torch.tensor([[9.0, 8.0, 0.0, 0.0], [8.0, 9.0, 0.0, 0.0], [0.0, 0.0, 9.0, 8.0], [0.0, 0.0, 8.0, 9.0]])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_hard_negatives(sim, generator=g) for _ in range(300)])
    assert not (draws == torch.arange(4)).any()  # never the pair itself
    partner = torch.tensor([1, 0, 3, 2])
    assert (draws == partner).float().mean() > 0.99  # e^8 vs e^0: the similar one nearly always


def test_hard_negatives_skip_the_own_column_among_every_ranks_pairs():
    sim = torch.zeros(2, 5)  # this rank's 2 pairs are columns 3 and 4 of the 5 gathered ones
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_hard_negatives(sim, torch.tensor([3, 4]), g) for _ in range(500)])
    assert not (draws[:, 0] == 3).any() and not (draws[:, 1] == 4).any()
    assert set(draws[:, 0].tolist()) == {0, 1, 2, 4}  # other ranks' pairs are drawn too
    with pytest.raises(ValueError, match="at least 2 pairs"):
        sample_hard_negatives(torch.zeros(1, 1))


def test_itm_hard_negatives_builds_three_b_samples(model):
    batch = pairs_batch()
    torch.manual_seed(0)
    result, _ = _run("itm", model, batch, hard_negatives=True)
    assert torch.isfinite(result.loss) and 0 <= result.metrics["accuracy"] <= 1
    # label 1 for the B positives and 0 for 2B negatives: a model that says "no" always is right 2/3 of the time
    with torch.no_grad():
        model.itm_head.bias.copy_(torch.tensor([50.0, -50.0]))
    try:
        assert _run("itm", model, batch, hard_negatives=True)[0].metrics["accuracy"] == pytest.approx(2 / 3)
    finally:
        torch.nn.init.zeros_(model.itm_head.bias)


def test_itc_matches_reference_and_learns_temperature(model):
    batch = pairs_batch()
    result, _ = _run("itc", model, batch)
    img = model.embed_image(batch).tolist()
    txt = model.embed_text(batch).tolist()
    scale = 1 / 0.07
    sim = [[scale * sum(a * b for a, b in zip(i, t, strict=True)) for t in txt] for i in img]
    i2t = sum(-_log_softmax(sim[i])[i] for i in range(4)) / 4
    t2i = sum(-_log_softmax([sim[j][i] for j in range(4)])[i] for i in range(4)) / 4
    assert result.loss.item() == pytest.approx((i2t + t2i) / 2, rel=1e-5)
    model.zero_grad()
    result.loss.backward()
    assert model.logit_scale.grad is not None and model.logit_scale.grad.abs() > 0
    model.zero_grad()


def test_itc_skips_samples_without_both_streams(model):
    batch = pairs_batch()
    batch.region_mask[2] = False  # sample 2 lost its image: a text-only sample
    loss = _run("itc", model, batch)[0].loss
    kept = select(pairs_batch(), torch.tensor([0, 1, 3]))
    assert loss.item() == pytest.approx(_run("itc", model, kept)[0].loss.item(), rel=1e-5)


def test_cmcl_loss_matches_eq6_reference():
    g = torch.Generator().manual_seed(3)
    images = torch.nn.functional.normalize(torch.randn(3, 5, generator=g), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(3, 5, generator=g), dim=-1)
    pos_scores, pos_owner = torch.tensor([0.3, 0.9, -0.2]), torch.tensor([0, 0, 2])
    neg_scores, neg_owner = torch.tensor([0.5, 0.1]), torch.tensor([1, 2])
    tau = 0.5
    got = cmcl_loss(images, texts, torch.tensor(1 / tau), pos_scores, pos_owner, neg_scores, neg_owner)
    for i in range(3):
        d = lambda v, w: float(images[v] @ texts[w])  # noqa: E731
        pos = [d(i, i)] + [float(s) for s, o in zip(pos_scores, pos_owner, strict=True) if o == i]
        neg = [d(j, i) for j in range(3) if j != i] + [d(i, j) for j in range(3) if j != i]
        neg += [float(s) for s, o in zip(neg_scores, neg_owner, strict=True) if o == i]
        p = sum(math.exp(x / tau) for x in pos)
        n = sum(math.exp(x / tau) for x in neg)
        assert got[i].item() == pytest.approx(-math.log(p / (p + n)), rel=1e-5)


def test_cmcl_items_are_scored_by_their_streams(model):
    anchors = pairs_batch(b=3, seed=1)
    extra = pairs_batch(b=3, seed=2)  # item 0: a pair, item 1: an image only, item 2: a text only
    extra.text_mask[1] = False
    extra.region_mask[2] = False
    extra.owner = torch.tensor([0, 1, 2])
    anchors.positives = extra
    negatives = pairs_batch(b=2, seed=4)
    negatives.owner = torch.tensor([2, 0])
    anchors.negatives = negatives
    result, _ = _run("cmcl", model, anchors)
    img, txt = model.embed_image(anchors), model.embed_text(anchors)
    e_img, e_txt = (
        model.embed_image(select(extra, torch.tensor([0, 1]))),
        model.embed_text(select(extra, torch.tensor([0, 2]))),
    )
    pos = torch.stack([e_img[0] @ e_txt[0], e_img[1] @ txt[1], img[2] @ e_txt[1]])
    neg = (model.embed_image(negatives) * model.embed_text(negatives)).sum(-1)
    expected = cmcl_loss(img, txt, model.temperature_scale(), pos, extra.owner, neg, negatives.owner).mean()
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert result.metrics == {"positives": 3.0, "negatives": 2.0}


def test_grounding_loss_matches_reference_and_its_gradients():
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(2, 4, 3, generator=g, requires_grad=True)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    dictionary = torch.randn(6, 3, generator=g, requires_grad=True)
    scores = torch.sigmoid(feats @ dictionary.t())
    indices = torch.tensor([[0, 2], [5, 1]])
    beta = 0.25
    got = grounding_loss(feats, mask, scores, indices, dictionary, beta)
    for b in range(2):
        real = [i for i in range(4) if mask[b, i]]
        ks = indices[b].tolist()
        x = {(i, j): float(scores[b, i, j].detach()) for i in real for j in ks}
        first = 0.0
        for j in ks:
            s = sum(x[i, j] for i in real)
            centre = sum(x[i, j] * feats[b, i].detach() for i in real) / s
            first += float(((centre - dictionary[j].detach()) ** 2).sum())
        second = 0.0
        for i in real:
            q = sum(x[i, j] * dictionary[j].detach() for j in ks) / sum(x[i, j] for j in ks)
            second += float(((q - feats[b, i].detach()) ** 2).sum())
        assert got[b].item() == pytest.approx(first / len(ks) + beta * second / len(real), rel=1e-5)
    # stop-gradients: the first term only moves the dictionary, the commitment only moves the features
    scores_const = scores.detach()
    only_dict = grounding_loss(feats, mask, scores_const, indices, dictionary, beta=0.0).sum()
    only_dict.backward()
    assert feats.grad is None or feats.grad.abs().max() == 0
    assert dictionary.grad[[0, 2, 5, 1]].abs().sum() > 0 and dictionary.grad[[3, 4]].abs().max() == 0
    dictionary.grad = None
    commit = grounding_loss(feats, mask, scores_const, indices, dictionary, beta=1.0).sum() - \
        grounding_loss(feats, mask, scores_const, indices, dictionary, beta=0.0).sum()
    commit.backward()
    assert dictionary.grad is None or dictionary.grad.abs().max() == 0
    assert feats.grad[0, 3].abs().max() == 0 and feats.grad[0, :3].abs().sum() > 0  # padding gets nothing


def test_grounded_dictionary_objective_reads_the_model():
    model = tiny_model(dictionary=True)
    batch = pairs_batch()
    result, out = _run("grounded_dictionary", model, batch)
    g = out.grounding
    expected = grounding_loss(g["features"], g["mask"], g["scores"], g["indices"], g["dictionary"], 0.25).mean()
    assert result.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="dictionary.enabled"):
        _run("grounded_dictionary", tiny_model(), batch)


def test_sub_batch_select_keeps_rows():
    batch = with_targets(pairs_batch())
    part = select(batch, torch.tensor([2, 0]))
    assert isinstance(part, Batch) and part.keys == ["k2", "k0"]
    assert torch.equal(part.mlm_labels[0], batch.mlm_labels[2])


@pytest.mark.parametrize("name, drop", [("mlm", "mlm_labels"), ("mrfr", "region_masked"), ("mrc", "region_masked"),
                                        ("mrc_kl", "region_masked"), ("p_mrtc", "region_masked")])
def test_conditional_masking_of_the_other_modality_gives_zero_loss(model, batch, name, drop):
    """Every sample masked the other modality (UNITER §3.2, mu-VLA §3.3.2): nothing to predict, loss 0."""
    setattr(batch, drop, None)
    result, _ = _run(name, model, batch)
    assert result.loss.item() == 0.0 and result.metrics["targets"] == 0.0
    batch.mlm_labels = batch.region_masked = None  # a collator that set neither is still an error
    with pytest.raises(ValueError, match=f"needs batch.{drop}"):
        _run(name, model, batch)
