"""``python -m pipelines.minicorpus OUT_DIR [--seed N] [--scale N]``: write the mini corpus."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from pipelines.minicorpus import EXPECTED, generate, source_entries, total_samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.minicorpus", description=__doc__.split(":")[1].strip())
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=1, help="multiplies the number of images and documents")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        config = generate(args.out_dir, seed=args.seed, scale=args.scale)
    except ValueError as e:
        print(f"minicorpus: error: {e}", file=sys.stderr)
        return 2
    with open(os.path.join(os.path.dirname(config), EXPECTED), encoding="utf-8") as f:
        expected = json.load(f)
    rejects = sum(sum(entry["rejects"].values()) for entry in source_entries(expected).values())
    print(
        f"{config}: {len(source_entries(expected))} sources, {total_samples(expected)} samples and {rejects} rejects "
        "expected "
        f"({time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
