"""mu-VLA Fig. 1 in miniature: does more image-text alignment in the pre-training pairs give better retrieval?

mu-VLA §1 (Fig. 1, App. A Table 6) pre-trains on pair corpora where only X% of the pairs stay aligned and finds
downstream quality rising with X; its retrieved weak pairs land between the unaligned and the aligned corpus.
Here, on a packed mini corpus (``unicorpus demo`` or ``pack`` output, whose images carry drawn objects and
whose captions name them): the same tiny model, trained for the same steps with ITC on each
``pairs_aligned_<X>`` task and on ``weak_pairs`` (our own retrieval of sentences for unpaired images), then
zero-shot image-text retrieval on held-out true pairs. Held out: every ``<source>-NNNNN.tar`` of the last raw
shard of each pair source (its images are in no training task); trained on the other shards.

    python -m experiments.alignment --corpus demo-out/corpus --steps 150 --seeds 0 1 2

Prints a markdown table (mean and spread over seeds) for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time

_SHARD = re.compile(r"^(?P<source>.+)-(?P<shard>\d{5})\.tar$")


def split_packed(packed: str, work: str, tasks: list[str]) -> tuple[str, str, list[str]]:
    """Symlinked training and evaluation views of ``packed``: the last raw shard of every pair source is held
    out of every task and is the evaluation pool (its ``pairs`` tars). Returns (train root, eval root,
    held-out tar names)."""
    by_source: dict[str, list[str]] = {}
    for name in sorted(os.listdir(os.path.join(packed, "pairs"))):
        match = _SHARD.match(name)
        if match:
            by_source.setdefault(match["source"], []).append(name)
    held_out = [names[-1] for names in by_source.values() if len(names) > 1]
    if not held_out:
        raise ValueError(f"{packed}/pairs: every pair source has one shard; nothing can be held out "
                         "(generate the corpus with more shards or a larger --scale)")
    train_root, eval_root = os.path.join(work, "train"), os.path.join(work, "eval")
    for root, task, keep in [(train_root, t, lambda n: n not in held_out) for t in tasks] + [
            (eval_root, "pairs", lambda n: n in held_out)]:
        folder = os.path.join(root, task)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(packed, task, "sizes.json"), encoding="utf-8") as f:
            sizes = {n: c for n, c in json.load(f).items() if keep(n) and c}
        for name in sizes:
            link = os.path.join(folder, name)
            if not os.path.exists(link):
                os.symlink(os.path.abspath(os.path.join(packed, task, name)), link)
        with open(os.path.join(folder, "sizes.json"), "w", encoding="utf-8") as f:
            json.dump(sizes, f, indent=1, sort_keys=True)
    return train_root, eval_root, held_out


def run(task: str, seed: int, args, train_root: str, eval_root: str, dims: tuple[int, int]) -> dict[str, float]:
    from training.config import parse_train_config
    from training.loop import train

    dim, classes = dims
    config = parse_train_config({
        "output": os.path.join(args.work, "runs", f"{task}-s{seed}"), "seed": seed, "amp": "off",
        "model": {"hidden": args.hidden, "layers": args.layers, "heads": 4, "intermediate": 4 * args.hidden,
                  "max_text_len": 64, "visual": {"region_feat_dim": dim},
                  "output_heads": {"region_classes": classes, "projection_dim": 64}},
        "data": {"root": train_root, "seed": seed, "num_workers": 0, "max_text_len": 48, "region_dim": dim,
                 "region_classes": classes, "unit_budget": 100000, "max_batch_size": args.batch,
                 "shuffle_buffer": 200, "sort_buffer": 64, "kinds": [{"task": task, "objectives": ["itc"]}]},
        "optim": {"lr": args.lr, "weight_decay": 0.01},
        "schedule": {"steps": args.steps, "warmup_ratio": 0.1},
        "checkpoint": {"every": args.steps, "keep": 1},
        "log": {"every": args.steps, "progress": False},
        "eval": {"every": args.steps, "root": eval_root, "task": "pairs", "samples": args.eval_samples,
                 "batch_size": 64, "head": "itc"},
    }, args.work)
    result = train(config, show_progress=False)
    return {k: v for k, v in result.evaluations[-1].items() if k != "step"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="a corpus root with packed/ (demo-out/corpus)")
    parser.add_argument("--work", default="experiments-out/alignment")
    parser.add_argument("--ratios", type=int, nargs="+", default=[0, 40, 100],
                        help="pairs_aligned_<X> tasks to train on (those pack wrote)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--eval-samples", type=int, default=500)
    args = parser.parse_args(argv)
    from pipelines.demo import packed_region_sizes  # reads one packed sample; no Beam

    packed = os.path.join(args.corpus, "packed")
    tasks = [f"pairs_aligned_{x}" for x in args.ratios] + ["weak_pairs"]
    train_root, eval_root, held_out = split_packed(packed, args.work, tasks)
    dims = packed_region_sizes(packed)
    with open(os.path.join(eval_root, "pairs", "sizes.json"), encoding="utf-8") as f:
        pool = sum(json.load(f).values())
    print(f"held out {', '.join(held_out)} ({pool} captions); {args.steps} steps x batch {args.batch}; "
          f"seeds {args.seeds}", flush=True)
    rows = []
    for task in tasks:
        with open(os.path.join(train_root, task, "sizes.json"), encoding="utf-8") as f:
            size = sum(json.load(f).values())
        scores = []
        for seed in args.seeds:
            started = time.perf_counter()
            scores.append(run(task, seed, args, train_root, eval_root, dims))
            print(f"{task} seed {seed}: {scores[-1]} ({time.perf_counter() - started:.0f} s)", flush=True)
        rows.append((task, size, scores))
    print(format_table(rows))
    return 0


def format_table(rows) -> str:
    keys = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
    lines = ["| training pairs | samples | " + " | ".join(keys) + " | mean R |", "|---|---|" + "---|" * 7]
    for task, size, scores in rows:
        cells = []
        for key in keys:
            values = [s[key] for s in scores]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.3f}{spread}")
        mean_r = statistics.mean(statistics.mean(s[k] for k in keys) for s in scores)
        lines.append(f"| {task} | {size} | " + " | ".join(cells) + f" | {mean_r:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
