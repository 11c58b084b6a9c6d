"""Sentence embeddings from a local sentence-transformers folder (mu-VLA §3.2: one sentence-BERT model
embeds image tag queries and candidate sentences alike, so cosine similarity compares them).

Vectors are float32 and L2-normalised: inner product == cosine, which the FAISS indexes rely on.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from retrieval.models import offline_hub, resolve_device


def tag_query(labels: list[str]) -> str:
    """The text query of an image (mu-VLA §3.2): its object tags as one sequence, each distinct label once,
    in first-seen order (regions come sorted by score, so the most confident tags lead)."""
    seen: dict[str, None] = {}
    for label in labels:
        label = " ".join(label.split())
        if label:
            seen.setdefault(label, None)
    return " ".join(seen)


class Embedder:
    """One loaded model; ``encode`` batches texts and returns normalised float32 vectors."""

    def __init__(self, model_path: str | None, device: str = "auto", batch_size: int = 64,
                 where: str = "retrieval.embed.model"):
        if not model_path or not os.path.isdir(model_path):
            from schemas.config_build import what_goes_in
            from schemas.stages import EmbedConfig

            raise ValueError(f"{where}: no sentence-transformers model folder at {model_path!r}; "
                             f"{what_goes_in(EmbedConfig, 'model')}")
        offline_hub()
        from sentence_transformers import SentenceTransformer

        self.model = model_path
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self._model = SentenceTransformer(model_path, device=self.device, local_files_only=True)
        self.dim = int(self._model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)


@lru_cache(maxsize=2)
def shared_embedder(model_path: str, device: str = "auto", batch_size: int = 64,
                    where: str = "retrieval.embed.model") -> Embedder:
    """One loaded model per process: stages run a pipeline per source and space, and each pipeline's
    workers would otherwise load the same model again."""
    return Embedder(model_path, device, batch_size, where)
