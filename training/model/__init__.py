"""The model family: a single-stream transformer with region or patch embedders, MoME, grounded dictionary."""

from training.model.config import DictionaryConfig, HeadsConfig, ModelConfig, MoMEConfig, VisualConfig
from training.model.model import ModelOutput, UnifiedModel, build_model

__all__ = ["DictionaryConfig", "HeadsConfig", "ModelConfig", "MoMEConfig", "ModelOutput", "UnifiedModel",
           "VisualConfig", "build_model"]
