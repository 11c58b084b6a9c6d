"""Rewrite's trigram fluency model in one piece vs in buckets: what the merging worker and a scoring worker hold.

For each size, the same Zipf captions (``benchmarks.rewrite.make_captions``) are counted per shard of 2,000
captions and each bucket merged on its own, in both passes (context pairs, then middle words). The baseline
is the model before buckets: one bucket (one worker merged every count) read into every rewrite process'
memory; now 64 buckets, each worker mapping the arrays. Per variant: the largest merge's tracemalloc peak of
each pass (a CombinePerKey worker merges one bucket at a time), the largest pair bucket's share of the
trigrams, the loaded model's heap (tracemalloc: mapped arrays are the page cache's, shared by a machine's
processes and evictable, not the process' own), the process' anonymous and file-backed resident memory
after scoring, and the scoring rate in calls of ``--batch`` texts (the rewriter scores one caption's
rewrites a call).

    python -m benchmarks.ngram --sizes 30000 100000 300000 --out benchmarks/results/ngram-buckets-30k-300k.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import tempfile
import time
import tracemalloc

import numpy as np

from benchmarks.rewrite import make_captions
from pipelines.annotators.ngram_counts import (
    BITS,
    BigramShare,
    BucketCounts,
    Summing,
    UnigramTotals,
    bigram_part,
    count_texts,
    trigram_part,
    vocabulary_of,
)
from pipelines.annotators.ngram_lm import DISCOUNT, SECTIONS, NgramLM, write_model, write_part

SHARD = 2000


def _rss() -> dict[str, float]:
    """The process' resident MB: anonymous (its own) and file-backed (mapped files, shared)."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {name: int(fields[name].split()[0]) / 1024 for name in ("RssAnon", "RssFile")}


def _traced(run):
    gc.collect()
    tracemalloc.start()
    value = run()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return value, held / 2**20, peak / 2**20


def _merged(parts: list[dict], combiner) -> tuple[dict, list[float]]:
    """Each bucket of ``parts`` merged on its own (as a CombinePerKey worker merges one), with its peak MB."""
    merged, peaks = {}, []
    for bucket in sorted({b for part in parts for b in part}):
        mine = [part.pop(bucket) for part in parts if bucket in part]  # as a worker receives them
        merged[bucket], _, peak = _traced(lambda mine=mine: combiner.extract_output(combiner.merge_accumulators(
            [combiner.add_input(combiner.create_accumulator(), value) for value in mine])))
        peaks.append(peak)
    return merged, peaks


def build(texts: list[str], bits: int, folder: str) -> dict:
    """Count per shard, merge each pair bucket, write its part and pass its bigrams on, merge each
    middle-word bucket and write its part, then the model: as the stage's Beam steps do."""
    started = time.perf_counter()
    shards = [count_texts(texts[i:i + SHARD], bits) for i in range(0, len(texts), SHARD)]
    counted = time.perf_counter()
    merged, pair_peaks = _merged(shards, Summing(BucketCounts))
    vocabulary = vocabulary_of(counts.word_hashes() for counts in merged.values())
    shares = []
    for bucket, counts in merged.items():
        part, mine = trigram_part(counts, vocabulary, bucket, bits)
        write_part(folder, bucket, part)
        shares.append(mine)
    sizes = [len(counts.counts) for counts in merged.values()]
    del merged
    summed, middle_peaks = _merged(shares, Summing(BigramShare))
    totals = UnigramTotals()
    for middle, share in summed.items():
        part = bigram_part(share, vocabulary, middle, bits)
        write_part(folder, middle, part)
        totals.add(middle, part.unigram_ids, part.unigram_cont, share.trigram_buckets)
    write_model(folder, vocabulary, totals, DISCOUNT, bits)
    return {"trigrams": sum(sizes), "buckets": len(sizes), "largest_bucket_share": max(sizes) / sum(sizes),
            "merge_peak_mb": max(pair_peaks), "bigram_merge_peak_mb": max(middle_peaks),
            "count_s": counted - started, "build_s": time.perf_counter() - started}


def read_whole(folder: str) -> NgramLM:
    """The model with its parts read into memory (the baseline: what every process held before)."""
    model = NgramLM.load(folder)
    for name in SECTIONS:
        setattr(model, name, np.array(getattr(model, name)))
    return model


def run(size: int, vocabulary: int, asked: list[str], batch: int) -> list[dict]:
    texts = [c[3] for c in make_captions(size, vocabulary=vocabulary)]
    rows = []
    for bits, load in ((0, read_whole), (BITS, NgramLM.load)):
        with tempfile.TemporaryDirectory() as folder:
            row = {"captions": size, "bits": bits, "parts": "in memory" if load is read_whole else "mapped",
                   **build(texts, bits, folder)}
            before = _rss()
            model, row["loaded_heap_mb"], _ = _traced(lambda folder=folder, load=load: load(folder))
            started = time.perf_counter()
            scores = [score for i in range(0, len(asked), batch) for score in model.score_many(asked[i:i + batch])]
            row["score_us_per_caption"] = 1e6 * (time.perf_counter() - started) / len(asked)
            after = _rss()
            row |= {f"{name}_growth_mb": after[name] - before[name] for name in after}
            row["score_sum"] = math.fsum(scores)
            del model
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[30000, 100000, 300000])
    parser.add_argument("--vocabulary", type=int, default=30000)
    parser.add_argument("--asked", type=int, default=5000, help="texts scored after loading")
    parser.add_argument("--batch", type=int, default=50, help="texts a scoring call")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    asked = [c[3] for c in make_captions(args.asked, seed=7, vocabulary=args.vocabulary)]
    rows = [row for size in args.sizes for row in run(size, args.vocabulary, asked, args.batch)]
    assert len({(r["captions"], r["score_sum"]) for r in rows}) == len(args.sizes), "bucketing changed the scores"
    exponents = {}
    for bits in (0, BITS):
        mine = [r for r in rows if r["bits"] == bits]
        if len(mine) > 1:
            x = np.log([r["captions"] for r in mine])
            exponents[bits] = {key: float(np.polyfit(x, np.log([r[key] for r in mine]), 1)[0])
                               for key in ("merge_peak_mb", "bigram_merge_peak_mb", "loaded_heap_mb", "trigrams")}
    print(json.dumps({"exponents": exponents}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": rows, "exponents": exponents, "vocabulary": args.vocabulary}, f, indent=1)


if __name__ == "__main__":
    main()
