"""The packed-shard loader beside a plain ``webdataset`` loop, and unit-budget vs fixed-size padding.

    python -m benchmarks.loader --samples 6000 --repeat 3

Both readers run 2 DataLoader workers over the same shards. The plain loop shuffles, decodes json, text
and ``.npy`` members and makes lists of 32; ``PackedLoader`` also tokenizes, sorts, cuts unit-budget
batches, mixes kinds, masks and collates padded tensors. Padding is compared on the same samples' lengths:
unit-budget batches vs fixed-size batches of the same mean size, in stream order.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from benchmarks.rounds import interleaved, median_rate
from schemas import layout, packed
from tests.training.packed_fixture import REGION_CLASSES, Shape, write_task
from training.batching import fixed_size_batches, padding_fraction, unit_budget_batches
from training.data import BatchKind, DataConfig, PackedLoader, epoch_stream, task_shards

SHAPE = Shape(region_dim=512, regions=(10, 100), words=(4, 40))  # UNIMO: regions > 0.2, at most 100


def write_corpus(root: str, samples: int) -> None:
    per_shard = 250
    for task, share in ((packed.PAIRS, 5), (packed.IMAGES, 1), (packed.TEXTS, 1)):
        count = max(1, samples * share // 7 // per_shard)
        write_task(root, task, count, per_shard, shape=SHAPE)


def config(root: str, kinds: list[BatchKind], workers: int) -> DataConfig:
    return DataConfig(root=root, kinds=kinds, num_workers=workers, region_dim=SHAPE.region_dim,
                      region_classes=REGION_CLASSES, unit_budget=6000, sort_buffer=512, shuffle_buffer=1000)


def plain_loop(urls: list[str], samples: int, workers: int) -> int:
    import webdataset as wds

    dataset = (wds.WebDataset(urls, shardshuffle=False, empty_check=False).shuffle(1000).decode()
               .batched(32, collation_fn=list))
    seen = 0
    for batch in wds.WebLoader(dataset, batch_size=None, num_workers=workers):
        seen += len(batch)
        if seen >= samples:
            break
    return seen


def packed_loop(cfg: DataConfig, samples: int, units: list[int]) -> int:
    seen = 0
    for batch in PackedLoader(cfg):
        seen += len(batch)
        units.append(batch.num_units())
        if seen >= samples:
            break
    return seen


def padding(cfg: DataConfig, task: str) -> tuple[float, float, float]:
    """Padding fractions (unit-budget, fixed-size) and the mean batch size, on one epoch of ``task``."""
    from training.collate import decode_sample, sample_units
    from training.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.tokenizer)
    raw = epoch_stream(cfg, task, task_shards(cfg, task), 0, 0, 1, lambda shard, error: None)
    lengths = [sample_units(decode_sample(s, task, cfg, tokenizer), cfg) for s in raw]
    budget_batches = []
    for start in range(0, len(lengths), cfg.sort_buffer):
        chunk = lengths[start:start + cfg.sort_buffer]
        budget_batches += [
            [start + i for i in b] for b in unit_budget_batches(chunk, cfg.unit_budget, cfg.max_batch_size)
        ]
    size = round(len(lengths) / len(budget_batches))
    fixed = fixed_size_batches(len(lengths), size)
    return padding_fraction(lengths, budget_batches), padding_fraction(lengths, fixed), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--padding-only", action="store_true", help="skip the throughput rounds")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        root = os.path.join(work, layout.PACKED)
        started = time.perf_counter()
        write_corpus(root, args.samples)
        print(f"wrote {args.samples} samples in {time.perf_counter() - started:.1f} s")
        pairs_only = [BatchKind(packed.PAIRS, ["mlm", "mrfr"], 1, "phrase")]
        unimo = [BatchKind(packed.IMAGES, ["mrfr"], 1), BatchKind(packed.TEXTS, ["mlm"], 1, "span"),
                 BatchKind(packed.PAIRS, ["mlm", "mrfr"], 5, "phrase")]
        pair_urls = task_shards(config(root, pairs_only, 0), packed.PAIRS)
        target = len(pair_urls) * 250
        units: dict[str, list[int]] = {"pairs": [], "unimo": []}
        if args.padding_only:
            args.repeat = 0
        results = interleaved({
            "plain webdataset loop (pairs)": lambda out: plain_loop(pair_urls, target, args.workers),
            "PackedLoader, pairs [mlm, mrfr]": lambda out: packed_loop(config(root, pairs_only, args.workers),
                                                                      target, units["pairs"]),
            "PackedLoader, UNIMO 1:1:5 mix": lambda out: packed_loop(config(root, unimo, args.workers),
                                                                    target, units["unimo"]),
        }, args.repeat, work)
        if args.repeat:
            base = median_rate(results["plain webdataset loop (pairs)"])
            print(f"{'contender':36s} {'samples/s':>10s} {'vs loop':>8s}")
            for name, rounds in results.items():
                rate = median_rate(rounds)
                print(f"{name:36s} {rate:10.0f} {rate / base:7.2f}x")
            for name, key in (("PackedLoader, pairs [mlm, mrfr]", "pairs"), ("PackedLoader, UNIMO 1:1:5 mix", "unimo")):
                per_sample = sum(units[key]) / max(1, statistics.median([n for n, _ in results[name]]) * args.repeat)
                print(f"{name}: {per_sample * median_rate(results[name]):.0f} input units/s "
                      f"({per_sample:.0f} units a sample)")
        for task in (packed.PAIRS, packed.TEXTS):
            for sort_buffer in (512, 2048):
                cfg = config(root, pairs_only, 0)
                cfg.sort_buffer = sort_buffer
                budget, fixed, size = padding(cfg, task)
                print(f"padding on {task}, sort_buffer {sort_buffer}: unit-budget {budget:.1%}, "
                      f"fixed-size ({size}) {fixed:.1%}, {1 - budget / fixed:.0%} less")


if __name__ == "__main__":
    main()
