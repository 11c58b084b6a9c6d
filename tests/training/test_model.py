"""The model: config errors, stream hiding (UNIMO App. A), MoME routing (VLMo §3.2), grounded tokens (UNIMO-2)."""

from __future__ import annotations

import pytest
import torch

from schemas.config_errors import ConfigError
from tests.training.tiny import pairs_batch, seq2seq_targets, tiny_config, tiny_model
from training.model import ModelConfig, build_model
from training.model.inputs import select
from training.model.model import GROUNDED, TEXT, VISUAL, _attention_mask


@pytest.mark.parametrize("data, key", [
    ({"hidden": 32, "heads": 5}, "model.heads"),
    ({"visual": {"kindd": "regions"}}, "model.visual.kindd"),
    ({"visual": {"kind": "grid"}}, "model.visual.kind"),
    ({"visual": {"region_loc_dim": 6}}, "model.visual.region_loc_dim"),
    ({"visual": {"image_size": 100}}, "model.visual.image_size"),
    ({"mome": {"enabled": True, "vl_layers": 13}}, "model.mome.vl_layers"),
    ({"dictionary": {"enabled": True, "layer": 12}}, "model.dictionary.layer"),
    ({"dictionary": {"size": 8, "top_k": 9}}, "model.dictionary.top_k"),
    ({"layers": "twelve"}, "model.layers"),
    ({"dropout": 1.5}, "model.dropout"),
])
def test_config_errors_name_the_dotted_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        ModelConfig.from_dict(data)


def test_from_dict_builds_nested_sections():
    cfg = ModelConfig.from_dict({"hidden": 64, "heads": 4, "visual": {"kind": "patches"}, "mome": {"enabled": True}})
    assert cfg.visual.kind == "patches" and cfg.mome.enabled and cfg.mome.vl_layers == 2
    assert isinstance(build_model({"hidden": 32, "heads": 4, "layers": 1, "intermediate": 8}).cfg, ModelConfig)


@pytest.mark.parametrize("kind", ["regions", "patches"])
def test_output_layout(kind):
    model = tiny_model(kind=kind)
    batch = pairs_batch(pixels=kind == "patches")
    out = model(batch)
    visual = 5 if kind == "regions" else 4  # 32 px / 16 -> 2 x 2 patches
    assert out.hidden.shape == (4, 8 + 1 + visual, 32)
    assert out.text.shape == (4, 8, 32) and out.visual.shape == (4, visual, 32)
    assert out.image_cls.shape == out.text_cls.shape == (4, 32)


def test_an_absent_stream_is_hidden_from_attention():
    model = tiny_model()
    batch = pairs_batch()
    batch.region_mask[1] = False  # sample 1 is text only (UNIMO's zero image)
    batch.text_mask[2] = False  # sample 2 is image only (UNIMO's pseudo text)
    out = model(batch)
    text_alone = model(select(batch, torch.tensor([1])), streams="text")
    image_alone = model(select(batch, torch.tensor([2])), streams="image")
    assert torch.allclose(out.text[1], text_alone.text[0], atol=1e-5)
    assert torch.allclose(out.visual[2], image_alone.visual[0], atol=1e-5)
    assert torch.allclose(out.image_cls[2], image_alone.image_cls[0], atol=1e-5)
    # and a pair is really fused: its text changes with its image
    other = pairs_batch()
    other.region_feats[0] = torch.randn_like(other.region_feats[0]) * other.region_mask[0, :, None]
    assert not torch.allclose(model(other).text[0], model(pairs_batch()).text[0], atol=1e-4)


def test_padding_regions_do_not_matter():
    model = tiny_model()
    batch = pairs_batch()
    padded = ~batch.region_mask
    assert padded.any()
    changed = pairs_batch()
    changed.region_feats[padded] = 100.0
    real = batch.region_mask
    assert torch.allclose(model(batch).visual[real], model(changed).visual[real], atol=1e-5)


def test_mu_vla_location_and_wrong_location_size():
    model = tiny_model(loc=5)
    assert model(pairs_batch(loc=5)).hidden.shape[0] == 4
    with pytest.raises(ValueError, match="region_loc_dim"):
        model(pairs_batch(loc=7))


def test_attention_pattern_size_is_checked():
    model = tiny_model()
    batch = seq2seq_targets(pairs_batch())
    batch.attention_pattern = batch.attention_pattern[:, 1:, 1:]
    with pytest.raises(ValueError, match="attention_pattern"):
        model(batch)


def _perturb(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p))


def test_mome_routes_by_modality_and_layer():
    model = tiny_model(mome=True)
    batch = pairs_batch()
    text0, image0, joint0 = model(batch, "text").text, model(batch, "image").visual, model(batch).hidden
    for layer in model.layers:
        _perturb(layer.ffn["vl"])
    assert torch.allclose(model(batch, "text").text, text0)  # single-modal input never meets VL-FFN
    assert torch.allclose(model(batch, "image").visual, image0)
    assert not torch.allclose(model(batch).hidden, joint0)  # the top layer of a pair uses it
    for layer in model.layers:
        _perturb(layer.ffn["v"])
    assert torch.allclose(model(batch, "text").text, text0)  # text never meets V-FFN
    assert not torch.allclose(model(batch, "image").visual, image0)
    # the last layer of a pair runs on VL-FFN only: perturbing L-FFN there changes nothing
    joint1 = model(batch).hidden
    _perturb(model.layers[-1].ffn["l"])
    assert torch.allclose(model(batch).hidden, joint1)


def test_grounded_tokens_are_the_top_k_by_accumulated_score():
    model = tiny_model(dictionary=True)
    batch = pairs_batch()
    out = model(batch)
    g = out.grounding
    k = model.cfg.dictionary.top_k
    assert out.hidden.shape[1] == 8 + 1 + 5 + k
    for b in range(4):
        real = g["mask"][b]
        accumulated = torch.sigmoid(model.dictionary_eta * g["features"][b, real] @ model.dictionary.t()).sum(0)
        assert set(g["indices"][b].tolist()) == set(accumulated.topk(k).indices.tolist())


def test_grounded_transformer_exchanges_modalities_only_through_grounded_tokens():
    kinds = torch.tensor([TEXT, TEXT, VISUAL, VISUAL, GROUNDED])
    mask = torch.ones(1, 5, dtype=torch.bool)
    allowed = _attention_mask(mask, None, kinds)[0, 0]
    assert not allowed[0, 2] and not allowed[2, 0]  # text <-/-> visual
    assert allowed[0, 1] and allowed[2, 3] and allowed[0, 4] and allowed[4, 2]
    # and in the model: below the grounding layer, text is encoded without the image
    model = tiny_model(dictionary=True)
    a, b = pairs_batch(), pairs_batch()
    b.region_feats = torch.randn_like(b.region_feats) * b.region_mask[..., None]
    assert torch.allclose(model(a).grounding["features"][:, :8], model(b).grounding["features"][:, :8], atol=1e-5)


def test_dual_encoder_vectors_are_normalised_and_mode_independent():
    model = tiny_model()
    batch = pairs_batch()
    text = model.embed_text(batch)
    assert torch.allclose(text.norm(dim=-1), torch.ones(4), atol=1e-5)
    batch_no_image = pairs_batch()
    batch_no_image.region_feats = batch_no_image.region_loc = batch_no_image.region_mask = None
    assert torch.allclose(model.embed_text(batch_no_image), text, atol=1e-6)


def test_config_default_is_bert_base():
    cfg = tiny_config()
    assert ModelConfig().hidden == 768 and ModelConfig().layers == 12 and ModelConfig().heads == 12
    assert cfg.validate() is cfg


def test_a_batch_without_padding_attends_everywhere():
    mask = torch.ones(2, 4, dtype=torch.bool)
    assert _attention_mask(mask, None, None) is None
    mask[1, 3] = False
    assert _attention_mask(mask, None, None).shape == (2, 1, 1, 4)
    model = tiny_model()
    padded = pairs_batch(b=3)  # the first sample is full length, the others padded
    batch = select(padded, torch.tensor([0]))  # alone: no padding anywhere, so no mask
    assert bool(batch.text_mask.all()) and bool(batch.region_mask.all())
    assert torch.allclose(model(batch).hidden[0], model(padded).hidden[0], atol=1e-5)
