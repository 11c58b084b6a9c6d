"""Fluency of rewrites by a causal language model from a local folder (UNIMO App. A ranks rewritten
captions by linguistic fluency; ``annotate.rewrite.scene_graph.language_model`` picks this over the
corpus n-gram model of ``ngram_lm``).

The score is the same kind as the n-gram model's: the average natural-log probability per predicted
token, the first token predicted from the tokenizer's BOS (or EOS) token, so batches and lengths compare.
"""

from __future__ import annotations

import numpy as np

from retrieval.models import offline_hub, resolve_device
from schemas.config_build import check_path, what_goes_in
from schemas.stages import SceneGraphNegativeConfig

WHERE = "annotate.rewrite.scene_graph.language_model"


class CausalLMScorer:
    """One loaded causal LM; ``score_many`` scores texts in padded batches (higher = more fluent)."""

    def __init__(self, path: str | None, device: str = "auto", batch_size: int = 32, max_length: int = 128):
        check_path(path, WHERE, what_goes_in(SceneGraphNegativeConfig, "language_model"))
        offline_hub()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path, self.device = path, resolve_device(device)
        self.batch_size, self.max_length = batch_size, max_length
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        if start is None:
            raise ValueError(f"{WHERE}: the tokenizer at {path} has neither a BOS nor an EOS token to start from")
        self.start = start
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).to(self.device).eval()

    def score_many(self, texts: list[str]) -> list[float]:
        scores: list[float] = []
        for first in range(0, len(texts), self.batch_size):
            scores += self._score_batch(texts[first:first + self.batch_size])
        return scores

    def _score_batch(self, texts: list[str]) -> list[float]:
        import torch

        encoded = [[self.start, *self.tokenizer(t, add_special_tokens=False)["input_ids"][:self.max_length]]
                   for t in texts]
        width = max(len(ids) for ids in encoded)
        ids = torch.tensor([row + [self.start] * (width - len(row)) for row in encoded], device=self.device)
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in encoded], device=self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        predicted = mask[:, 1:].float()
        counts = predicted.sum(dim=1)
        totals = (logprobs * predicted).sum(dim=1) / counts.clamp(min=1)
        totals = torch.where(counts > 0, totals, torch.full_like(totals, float("-inf")))  # no words: least fluent
        return [float(x) for x in np.asarray(totals.cpu())]
