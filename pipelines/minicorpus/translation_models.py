"""Tiny offline Marian translation models for tests and the demo (ENVIRONMENT.md "Translation").

No real MT weights can be had offline, so back-translation is exercised with ``MarianMTModel``s that
have random weights and ``MarianTokenizer``s whose two sentencepiece models are trained on the fly on a
few generated sentences. Their outputs are gibberish but real: produced by ``generate`` from a model
folder, exactly as ``Helsinki-NLP/opus-mt-*`` folders are used. Built with a fixed seed: the same call
writes the same folders.
"""

from __future__ import annotations

import io
import itertools
import json
import os

from pipelines.minicorpus.scenes import KINDS
from retrieval.models import offline_hub

_WORDS = {  # a few words per pivot language, enough for a sentencepiece vocabulary of that script
    "en": (["a", "the", "small", "red", "big", "green", "blue"], list(KINDS), ["on", "near", "under", "in front of"]),
    "zh": (
        ["一个", "这个", "小", "红色的", "大", "绿色的"],
        ["球", "盒子", "帐篷", "树", "汽车", "房子", "太阳", "风筝"],
        ["在上面", "旁边", "下面"],
    ),
    "fr": (
        ["un", "le", "petit", "rouge", "grand", "vert"],
        ["ballon", "boîte", "tente", "arbre", "voiture", "maison", "soleil", "cerf-volant"],
        ["sur", "près de", "sous"],
    ),
    "es": (
        ["un", "el", "pequeño", "rojo", "grande", "verde"],
        ["balón", "caja", "tienda", "árbol", "coche", "casa", "sol", "cometa"],
        ["sobre", "cerca de", "debajo de"],
    ),
}
DEFAULT_PIVOTS = ("zh", "fr", "es")  # UNIMO §2.1
_POSITIONS = 64  # the models' input and output limit, tokens


def sentences(language: str) -> list[str]:
    """Deterministic short sentences of ``language`` ("a red ball near the tree")."""
    modifiers, nouns, relations = _WORDS[language]
    return [f"{m} {a} {r} {modifiers[1]} {b}"
            for m, (a, b), r in zip(itertools.cycle(modifiers), itertools.permutations(nouns, 2),
                                    itertools.cycle(relations))]


def build_translation_model(folder: str, source: str, target: str, seed: int = 0, vocab_size: int = 96,
                            d_model: int = 16) -> str:
    """A random-weight Marian ``source`` -> ``target`` model with trained tokenizers, saved to ``folder``."""
    offline_hub()
    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    os.makedirs(folder, exist_ok=True)
    for side, language in (("source", source), ("target", target)):
        trained = io.BytesIO()  # no model_prefix: the model would carry the folder's path
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences(language)), model_writer=trained, vocab_size=vocab_size,
            character_coverage=1.0, model_type="unigram", num_threads=1, hard_vocab_limit=False, bos_id=-1,
            eos_id=-1, pad_id=-1, unk_id=0, unk_piece="<unk>", minloglevel=2)
        with open(os.path.join(folder, f"{side}.spm"), "wb") as f:
            f.write(trained.getvalue())
    pieces = ["</s>", "<unk>"]
    for side in ("source", "target"):
        processor = spm.SentencePieceProcessor(model_file=os.path.join(folder, f"{side}.spm"))
        pieces += [p for p in (processor.id_to_piece(i) for i in range(processor.get_piece_size())) if p not in pieces]
    pieces.append("<pad>")
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({p: i for i, p in enumerate(pieces)}, f, ensure_ascii=False)
    tokenizer = MarianTokenizer(os.path.join(folder, "source.spm"), os.path.join(folder, "target.spm"),
                                os.path.join(folder, "vocab.json"), source_lang=source, target_lang=target,
                                model_max_length=_POSITIONS)
    pad = len(pieces) - 1
    config = MarianConfig(vocab_size=len(pieces), d_model=d_model, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * d_model,
                          decoder_ffn_dim=2 * d_model, max_position_embeddings=_POSITIONS, pad_token_id=pad,
                          eos_token_id=0, decoder_start_token_id=pad, forced_eos_token_id=0)
    torch.manual_seed(seed)
    model = MarianMTModel(config).eval()
    model.generation_config.max_length = _POSITIONS
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_translation_models(root: str, pivots: tuple[str, ...] = DEFAULT_PIVOTS, source: str = "en",
                             seed: int = 0) -> dict[str, tuple[str, str]]:
    """``source`` -> pivot and pivot -> ``source`` models under ``root/<src>-<tgt>/``: pivot -> (forward, backward)."""
    models = {}
    for i, pivot in enumerate(pivots):
        forward = build_translation_model(os.path.join(root, f"{source}-{pivot}"), source, pivot, seed + 2 * i)
        backward = build_translation_model(os.path.join(root, f"{pivot}-{source}"), pivot, source, seed + 2 * i + 1)
        models[pivot] = (forward, backward)
    return models
