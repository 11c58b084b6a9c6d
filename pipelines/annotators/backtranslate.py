"""Positives by back-translation (UNIMO §2.1, App. A "Data Augmentations": every caption through pivot
languages, zh, fr and es in the paper): source -> pivot -> source with any ``transformers`` seq2seq pair
from local folders (Marian ``opus-mt-*``, or NLLB / mBART style multilingual models, which need a source
language code and a forced first token: give ``source_code`` and ``pivot_code``). An output that is empty or
the caption again (case and space aside) is no new positive and is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from pipelines.dedup import normalise_text as normalise  # case and white space make no new sentence
from retrieval.models import offline_hub, resolve_device


class Translator:
    """One seq2seq model and its tokenizer, loaded once; translates batches of texts."""

    def __init__(self, path: str, device: str = "auto", source_code: str | None = None,
                 target_code: str | None = None):
        offline_hub()
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.path, self.device = path, resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if source_code:
            self.tokenizer.src_lang = source_code
        self.forced_bos = self.tokenizer.convert_tokens_to_ids(target_code) if target_code else None
        self.model = AutoModelForSeq2SeqLM.from_pretrained(path).to(self.device).eval()

    def translate(self, texts: Sequence[str], batch_size: int = 32, max_length: int = 128,
                  num_beams: int = 1) -> list[str]:
        """Translations in input order; batches are formed by length to cut padding. ``max_length`` caps
        the generated tokens."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[str] = [""] * len(texts)
        extra = {} if self.forced_bos is None else {"forced_bos_token_id": self.forced_bos}
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            encoded = self.tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True,
                                     truncation=True).to(self.device)  # at the model's own input limit
            with torch.inference_mode():
                generated = self.model.generate(**encoded, max_length=max_length, num_beams=num_beams, **extra)
            for i, text in zip(batch, self.tokenizer.batch_decode(generated, skip_special_tokens=True), strict=True):
                out[i] = text.strip()
        return out


@dataclass
class Pivot:
    """A loaded pivot: source -> pivot and pivot -> source translators."""

    name: str
    forward: Translator
    backward: Translator

    def detail(self, pivot_text: str) -> str:
        return json.dumps({"pivot": self.name, "pivot_text": pivot_text, "forward": self.forward.path,
                           "backward": self.backward.path}, ensure_ascii=False)


def is_new(source: str, output: str) -> bool:
    """A back-translation is a positive only if it is neither empty nor the source again."""
    return bool(output.strip()) and normalise(output) != normalise(source)


def back_translate(pivots: Sequence[Pivot], texts: Sequence[str], batch_size: int = 32, max_length: int = 128,
                   num_beams: int = 1) -> list[list[tuple[str, str]]]:
    """For each text, its (back-translation, detail) over ``pivots`` in order, without empty outputs,
    echoes of the source, or a repeat of an earlier pivot's output."""
    found: list[list[tuple[str, str]]] = [[] for _ in texts]
    for pivot in pivots:
        middle = pivot.forward.translate(texts, batch_size, max_length, num_beams)
        back = pivot.backward.translate(middle, batch_size, max_length, num_beams)
        for rewrites, source, pivot_text, output in zip(found, texts, middle, back, strict=True):
            if is_new(source, output) and all(normalise(output) != normalise(seen) for seen, _ in rewrites):
                rewrites.append((output, pivot.detail(pivot_text)))
    return found
