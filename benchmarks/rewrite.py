"""Rewrite throughput: TF-IDF hard negatives (blocked sparse products keeping the top n per row) vs the
obvious dense all-pairs cosine matrix with a per-row sort; and back-translation (length-sorted batches)
vs a plain ``generate`` loop over batches in input order, with the tiny offline Marian models.

    python -m benchmarks.rewrite --captions 6000 --translate 256 --repeat 3
"""

from __future__ import annotations

import argparse
import itertools
import random
import tempfile

import numpy as np

from benchmarks.rounds import interleaved, median_rate

TOP_N = 100


def make_captions(n: int, seed: int = 0) -> list[tuple[str, str, int, str]]:
    """Captions of 4-16 words from a Zipf-distributed 3,000-word vocabulary, five per image."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(3000)]
    weights = 1.0 / np.arange(1, len(words) + 1)
    weights /= weights.sum()
    return [(f"k{i // 5}", "bench", i % 5, " ".join(rng.choice(words, size=int(rng.integers(4, 17)), p=weights)))
            for i in range(n)]


def _words(document: dict) -> list[str]:
    from retrieval.tfidf import words

    return words(document["text"])


def tfidf_contenders(captions, shards: int = 4):
    """The stage's search (``tfidf_negatives`` over the captions in ``shards`` shards) vs dense all-pairs."""
    from pipelines.stages.rewrite import caption_document, tfidf_negatives
    from retrieval.tfidf import CollectionShard, ShardsInMemory, TfidfVectorizer, document_frequencies

    documents = [caption_document(*caption) for caption in captions]
    vectorizer = TfidfVectorizer(document_frequencies(documents, _words), _words, 0.5, np.float32, sorted_terms=False)
    keys = [c[0] for c in captions]
    bounds = np.linspace(0, len(documents), shards + 1).astype(int)

    def sparse(_out: str) -> int:
        matrix = vectorizer.transform(documents)
        collection = ShardsInMemory([CollectionShard(matrix[a:b], {name: [d[name] for d in documents[a:b]]
                                                                   for name in ("key", "words", "text")})
                                     for a, b in itertools.pairwise(bounds)])
        return len(tfidf_negatives(vectorizer, collection, documents, TOP_N))

    def dense(_out: str) -> int:
        matrix = vectorizer.transform(documents).toarray()
        scores = matrix @ matrix.T  # all pairs
        same = np.array(keys)[:, None] == np.array(keys)[None, :]
        scores[same] = 0
        top = np.argsort(-scores, axis=1, kind="stable")[:, :TOP_N]
        return len(top)

    return {"dense all-pairs": dense, "tfidf_negatives": sparse}


def translation_contenders(texts: list[str], work: str):
    from pipelines.annotators.backtranslate import Pivot, Translator, back_translate
    from pipelines.minicorpus.translation_models import build_translation_models

    models = build_translation_models(work)
    pivots = [Pivot(name, Translator(f, "cpu"), Translator(b, "cpu")) for name, (f, b) in models.items()]

    def plain(_out: str) -> int:
        import torch

        for pivot in pivots:
            for translator in (pivot.forward, pivot.backward):
                for start in range(0, len(texts), 32):
                    encoded = translator.tokenizer(texts[start:start + 32], return_tensors="pt", padding=True,
                                                   truncation=True)
                    with torch.inference_mode():
                        out = translator.model.generate(**encoded, max_length=32)
                    translator.tokenizer.batch_decode(out, skip_special_tokens=True)
        return len(texts)

    def ours(_out: str) -> int:
        back_translate(pivots, texts, batch_size=32, max_length=32)
        return len(texts)

    return {"plain generate loop": plain, "back_translate": ours}


def main() -> None:
    from retrieval.tfidf import BLOCK_ENTRIES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=6000)
    parser.add_argument("--translate", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    captions = make_captions(args.captions)
    with tempfile.TemporaryDirectory() as work:
        rates = {name: median_rate(r) for name, r in interleaved(tfidf_contenders(captions), args.repeat, work).items()}
        print(f"TF-IDF top {TOP_N} over {len(captions)} captions (captions/s): "
              + ", ".join(f"{n} {r:.0f}" for n, r in rates.items())
              + f"; ratio {rates['tfidf_negatives'] / rates['dense all-pairs']:.2f}x; the dense side holds "
              f"{len(captions) ** 2 / 1e6:.0f}M scores at once, ours one block of at most "
              f"{BLOCK_ENTRIES / 1e6:.2f}M")
        rng = random.Random(0)
        texts = [rng.choice(captions)[3] for _ in range(args.translate)]
        rates = {name: median_rate(r)
                 for name, r in interleaved(translation_contenders(texts, work), args.repeat, work).items()}
        print(f"back-translation through 3 pivots, tiny Marian, {len(texts)} captions (captions/s): "
              + ", ".join(f"{n} {r:.1f}" for n, r in rates.items())
              + f"; ratio {rates['back_translate'] / rates['plain generate loop']:.2f}x")


if __name__ == "__main__":
    main()
