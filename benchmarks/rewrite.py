"""Rewrite throughput: TF-IDF hard negatives (blocked sparse products keeping the top n per row) vs the
obvious dense all-pairs cosine matrix with a per-row sort; and back-translation (length-sorted batches)
vs a plain ``generate`` loop over batches in input order, with the tiny offline Marian models.

    python -m benchmarks.rewrite --captions 6000 --translate 256 --repeat 3

With ``--sizes``, only the TF-IDF negatives, as the corpus grows (docs/SCALE.md): one query shard's negatives
among collections of each size, the scan every shard did before (N^2 for the stage) vs the postings, exact (in
segments; in one segment, as before segments) and capped, with recall against the scan, the peak memory of one
search and the growth of both:

    python -m benchmarks.rewrite --sizes 10000 30000 100000 --caps none 1000 200 --repeat 2
"""

from __future__ import annotations

import argparse
import itertools
import random
import tempfile

import numpy as np

from benchmarks.rounds import interleaved, median_rate

TOP_N = 100


def make_captions(n: int, seed: int = 0, vocabulary: int = 3000) -> list[tuple[str, str, int, str]]:
    """Captions of 4-16 words from a Zipf-distributed ``vocabulary``, five per image. The draws are
    ``rng.choice(words, size, p=weights)``'s, with the cumulative weights summed once instead of per caption
    (250x faster at 30,000 words; the same captions)."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(vocabulary)])
    weights = 1.0 / np.arange(1, len(words) + 1)
    weights /= weights.sum()
    cdf = weights.cumsum()
    cdf /= cdf[-1]
    captions = []
    for i in range(n):
        drawn = cdf.searchsorted(rng.random(int(rng.integers(4, 17))), side="right")
        captions.append((f"k{i // 5}", "bench", i % 5, " ".join(words[drawn])))
    return captions


def _words(document: dict) -> list[str]:
    from retrieval.tfidf import words

    return words(document["text"])


def tfidf_contenders(captions, shards: int = 4):
    """The stage's search (``tfidf_negatives`` through the postings of the captions in ``shards`` shards) vs
    dense all-pairs."""
    from pipelines.stages.rewrite import caption_document, tfidf_negatives
    from retrieval.postings import in_memory, index_files
    from retrieval.tfidf import CollectionShard, TfidfVectorizer, document_frequencies

    documents = [caption_document(*caption) for caption in captions]
    vectorizer = TfidfVectorizer(document_frequencies(documents, _words), _words, 0.5, np.float32, sorted_terms=False)
    keys = [c[0] for c in captions]
    bounds = np.linspace(0, len(documents), shards + 1).astype(int)

    def sparse(_out: str) -> int:  # the collection's postings built, then searched
        matrix = vectorizer.transform(documents)
        shards = [CollectionShard(matrix[a:b], {name: [d[name] for d in documents[a:b]]
                                                for name in ("key", "words", "text")})
                  for a, b in itertools.pairwise(bounds)]
        index = in_memory(index_files(shards, None, len(vectorizer.vocabulary)))
        return len(tfidf_negatives(vectorizer, index, documents, TOP_N))

    def dense(_out: str) -> int:
        matrix = vectorizer.transform(documents).toarray()
        scores = matrix @ matrix.T  # all pairs
        same = np.array(keys)[:, None] == np.array(keys)[None, :]
        scores[same] = 0
        top = np.argsort(-scores, axis=1, kind="stable")[:, :TOP_N]
        return len(top)

    return {"dense all-pairs": dense, "tfidf_negatives": sparse}


ONE_SEGMENT = "postings (exact, one segment)"


def negatives_growth(size: int, queries: int, shard_size: int, caps: list[int | None], repeat: int,
                     vocabulary: int = 30_000, segment_entries: int | None = None) -> dict:
    """Rewrite's TF-IDF negatives of one query shard (``queries`` captions) among ``size`` captions in shards of
    ``shard_size``: the scan of every collection shard (the stage's search before issue 15; the shards held in
    memory, which only flatters it) vs the postings, exact (in segments, and in one segment as before segments)
    and with each cap (built once, timed apart). Captions/s (interleaved rounds), recall@TOP_N of each side
    against the scan's negatives, and the peak of what one search allocates (``peak_mb``)."""
    import time

    from benchmarks.related import peak_mb, recall
    from pipelines.stages.rewrite import caption_document, tfidf_negatives
    from retrieval.postings import in_memory, index_files
    from retrieval.tfidf import CollectionShard, ShardsInMemory, TfidfVectorizer, document_frequencies, gather, search

    documents = [caption_document(*caption) for caption in make_captions(size, vocabulary=vocabulary)]
    vectorizer = TfidfVectorizer(document_frequencies(documents, _words), _words, 0.5, np.float32, sorted_terms=False)
    matrix = vectorizer.transform(documents)
    columns = ("key", "source", "text_index", "text", "words")
    shards = ShardsInMemory([CollectionShard(matrix[a:a + shard_size],
                                             {name: [d[name] for d in documents[a:a + shard_size]] for name in columns})
                             for a in range(0, size, shard_size)])
    asked = documents[::max(1, size // queries)][:queries]

    def scanned() -> list:
        found = search(vectorizer.transform(asked), shards.each_shard(), TOP_N, ("key", "words"),
                       [(d["key"], d["words"]) for d in asked])
        rows = gather(found, shards.load)
        return [list(zip(rows.rows(hits.ties), hits.scores.tolist(), strict=True)) for hits in found]

    sides, build_s, segments = {"scan of every collection shard": scanned}, {}, {}
    for label, cap, per_segment in [(ONE_SEGMENT, None, matrix.nnz),
                                    *((f"postings ({'exact' if cap is None else f'cap {cap}'})", cap, segment_entries)
                                      for cap in caps)]:
        started = time.perf_counter()
        files = index_files(shards.shards, cap, len(vectorizer.vocabulary), per_segment)
        build_s[label] = round(time.perf_counter() - started, 2)
        index = in_memory(files)
        segments[label] = index.postings.plan.segments
        sides[label] = lambda index=index: tfidf_negatives(vectorizer, index, asked, TOP_N)
    with tempfile.TemporaryDirectory() as work:
        rates = {name: median_rate(r) for name, r in
                 interleaved({name: lambda _, side=side: len(side()) for name, side in sides.items()}, repeat,
                             work).items()}

    def ids(found) -> list[list[tuple]]:
        return [[((row["key"], row["text_index"]), score) for row, score in hits] for hits in found]

    truth = ids(scanned())
    return {"captions": size, "queries": len(asked), "shards": len(shards.shards), "top": TOP_N,
            "segments": segments,
            "captions_per_s": {name: round(rate, 1) for name, rate in rates.items()},
            "ms_per_caption": {name: round(1000 / rate, 3) for name, rate in rates.items()},
            f"recall@{TOP_N}": {name: round(recall(ids(side()), truth), 4) for name, side in sides.items()
                                if side is not scanned},
            "peak_mb": {name: round(peak_mb(side), 1) for name, side in sides.items()},
            "build_s": build_s}


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


def growth(args) -> None:
    """``--sizes``: ``negatives_growth`` at each size, then each side's exponent of time per caption over size
    (0: the stage grows linearly with the corpus; 1: as N^2)."""
    import json

    from benchmarks.scale import exponent

    caps = [None if cap == "none" else int(cap) for cap in args.caps]
    runs = []
    for size in args.sizes:
        runs.append(negatives_growth(size, args.queries, args.shard_size, caps, args.repeat,
                                     segment_entries=args.segment_entries))
        print(json.dumps(runs[-1]), flush=True)
    per_caption, memory = ({name: exponent(args.sizes, [run[field][name] for run in runs]) for name in runs[0][field]}
                           for field in ("ms_per_caption", "peak_mb"))
    print("exponent of time per caption over collection size: "
          + ", ".join(f"{name} {value}" for name, value in per_caption.items()))
    print("exponent of one search's peak memory over collection size: "
          + ", ".join(f"{name} {value}" for name, value in memory.items()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"sizes": args.sizes, "runs": runs, "per_caption_exponent": per_caption,
                       "peak_memory_exponent": memory}, f, indent=1)


def main(argv: list[str] | None = None) -> None:
    from retrieval.tfidf import BLOCK_ENTRIES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=6000)
    parser.add_argument("--translate", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+",
                        help="instead: the TF-IDF negatives of one query shard among collections of these sizes, "
                             "scan vs postings (--caps), and how the time per caption grows")
    parser.add_argument("--queries", type=int, default=1000, help="with --sizes: the query shard's captions")
    parser.add_argument("--shard-size", type=int, default=2000, help="with --sizes: captions per collection shard")
    parser.add_argument("--caps", nargs="+", default=["none"], help="with --sizes: postings caps (none: exact)")
    parser.add_argument("--segment-entries", type=int,
                        help="with --sizes: entries a segment of the exact postings holds, about "
                             "(default: retrieval.postings.SEGMENT_ENTRIES)")
    parser.add_argument("--out", help="with --sizes: the results as JSON")
    args = parser.parse_args(argv)
    if args.sizes:
        growth(args)
        return
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
