"""The model's nested config: sizes, the visual stream, MoME, the grounded dictionary, heads, init.

Defaults are BERT-base (mu-VLA §4.3: 12 layers, 768 hidden, 12 heads); every paper value stays a field.
Errors name the dotted key (``model.mome.vl_layers``), like the corpus config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.config_build import path_field
from schemas.config_errors import ConfigError, positive, validate_sections


@dataclass
class VisualConfig:
    """The visual stream: detector regions (UNITER, UNIMO, mu-VLA) or raw-pixel patches (VLMo, UNIMO-2)."""

    kind: Literal["regions", "patches"] = "regions"
    region_feat_dim: int = 2048  # detector feature size D
    region_loc_dim: int = 7  # 7 = UNITER §3.1 [x1,y1,x2,y2,w,h,w*h]; 5 = mu-VLA §3.1
    image_size: int = 224  # patches: VLMo §3.1, UNIMO-2 §4 (224 px)
    patch_size: int = 16  # 16 x 16 patches (ViT)
    channels: int = 3

    def validate(self, where: str) -> None:
        positive(self.region_feat_dim, f"{where}.region_feat_dim")
        if self.region_loc_dim not in (5, 7):
            raise ConfigError(f"{where}.region_loc_dim: expected 7 (UNITER) or 5 (mu-VLA), got {self.region_loc_dim}")
        positive(self.patch_size, f"{where}.patch_size")
        positive(self.channels, f"{where}.channels")
        if self.image_size % self.patch_size:
            raise ConfigError(f"{where}.image_size: {self.image_size} is not a multiple of "
                              f"patch_size {self.patch_size}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass
class MoMEConfig:
    """VLMo §3.2 mixture of modality experts: shared attention, V/L/VL feed-forward experts."""

    enabled: bool = False
    vl_layers: int = 2  # top layers that use the VL expert when both streams are encoded together

    def validate(self, where: str) -> None:
        if self.vl_layers < 0:
            raise ConfigError(f"{where}.vl_layers: expected >= 0, got {self.vl_layers}")


@dataclass
class DictionaryConfig:
    """UNIMO-2 §3.1 grounded dictionary: C entries, top-K grounded tokens, commitment weight beta.

    Layers below ``layer`` encode each stream on its own; from ``layer`` on, the K grounded tokens are
    appended and the streams exchange information only through them (UNIMO-2 Grounded Transformer).
    """

    enabled: bool = False
    size: int = 2048  # C
    top_k: int = 100  # K
    beta: float = 0.25
    layer: int = 6  # grounded tokens come from the hidden states after this many layers

    def validate(self, where: str) -> None:
        positive(self.size, f"{where}.size")
        positive(self.top_k, f"{where}.top_k")
        if self.top_k > self.size:
            raise ConfigError(f"{where}.top_k: {self.top_k} exceeds the dictionary size {self.size}")
        if self.beta < 0:
            raise ConfigError(f"{where}.beta: expected >= 0, got {self.beta}")


@dataclass
class HeadsConfig:
    """Output heads: region classes (MRC), the ITC projection and its initial temperature (VLMo §3.3)."""

    region_classes: int = 1601  # Visual Genome detector classes incl. background
    projection_dim: int = 256
    temperature: float = 0.07  # initial; learned as a log scale, clamped at 100

    def validate(self, where: str) -> None:
        positive(self.region_classes, f"{where}.region_classes")
        positive(self.projection_dim, f"{where}.projection_dim")
        if not 0 < self.temperature < 1:
            raise ConfigError(f"{where}.temperature: expected a value in (0, 1), got {self.temperature}")


@dataclass
class ModelConfig:
    """The single-stream transformer. ``init_from``: a local Hugging Face BERT-style folder or null (random)."""

    vocab_size: int = 30522
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    dropout: float = 0.1
    attention_dropout: float = 0.1
    max_text_len: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    init_from: str | None = path_field(None)  # relative to the config file, like every path
    visual: VisualConfig = field(default_factory=VisualConfig)
    mome: MoMEConfig = field(default_factory=MoMEConfig)
    dictionary: DictionaryConfig = field(default_factory=DictionaryConfig)
    output_heads: HeadsConfig = field(default_factory=HeadsConfig)

    def validate(self, where: str = "model") -> ModelConfig:
        for name in ("vocab_size", "hidden", "layers", "heads", "intermediate", "max_text_len", "type_vocab_size"):
            positive(getattr(self, name), f"{where}.{name}")
        if self.hidden % self.heads:
            raise ConfigError(f"{where}.heads: hidden {self.hidden} is not divisible by {self.heads} heads")
        for name in ("dropout", "attention_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: expected a probability in [0, 1), got {getattr(self, name)}")
        validate_sections(self, where)
        if self.mome.enabled and self.mome.vl_layers > self.layers:
            raise ConfigError(f"{where}.mome.vl_layers: {self.mome.vl_layers} exceeds layers {self.layers}")
        if self.dictionary.enabled and not 0 < self.dictionary.layer < self.layers:
            raise ConfigError(f"{where}.dictionary.layer: expected 1..{self.layers - 1}, got {self.dictionary.layer}")
        if self.mome.enabled and self.dictionary.enabled:
            raise ConfigError(f"{where}: mome and dictionary are separate model families; enable one of them")
        return self

    @classmethod
    def from_dict(cls, data: Any, where: str = "model") -> ModelConfig:
        """Build from a parsed YAML mapping: unknown keys, wrong types and bad values name the dotted key."""
        from schemas.config_build import build
        return build(cls, data, where).validate(where)
