"""The retrieve stage split by job: weak pairs (mu-VLA), related images and related texts (UNIMO App. A),
each run alone on the corpora a scale benchmark left (``python -m benchmarks.scale --work W`` through
``index``), so that the job whose cost grows faster than the corpus shows by itself.

Per size and job, the retrieve command runs on a copy of the corpus config asking for that job only
(``W/size-S/retrieve-<job>.yaml``, the sources in the config's order), measured as the scale benchmark
measures a stage: CPU seconds of the process tree, wall time, peak memory of the largest worker. Reported:
those, and each job's CPU growth exponent over the sizes.

    python -m benchmarks.retrieve_kinds --work W --sizes 10000 30000 [--jobs related-texts]
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict

import yaml

from benchmarks.scale import exponent, run_stage

# job -> the retrieve keys that switch the other jobs off
JOBS = {"weak-pairs": {"related_images_queries": [], "related_texts_queries": []},
        "related-images": {"weak_pairs": [], "related_texts_queries": []},
        "related-texts": {"weak_pairs": [], "related_images_queries": []}}


def job_config(config: str, job: str) -> str:
    """A copy of the corpus config beside it asking retrieve for ``job`` only."""
    if not os.path.exists(config):
        raise FileNotFoundError(f"{config}: no corpus there; run `python -m benchmarks.scale --work W --sizes ...` "
                                "through index first")
    with open(config, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    data.setdefault("retrieval", {}).setdefault("retrieve", {}).update(JOBS[job])
    path = os.path.join(os.path.dirname(config), f"retrieve-{job}.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)  # the sources in their order: a collection's order
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="the --work folder of a scale benchmark run")
    parser.add_argument("--sizes", type=int, nargs="+", required=True)
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/retrieve-kinds.json")
    args = parser.parse_args(argv)
    sizes, rows = sorted(args.sizes), []
    for size in sizes:
        folder = os.path.join(args.work, f"size-{size}")
        for job in args.jobs:
            measured = run_stage("retrieve", job_config(os.path.join(folder, "corpus.yaml"), job),
                                 os.path.join(folder, "corpus"), size,
                                 ["--workers", str(args.workers), "--quiet", "--overwrite"])
            rows.append({"job": job, **asdict(measured)})
            print(json.dumps(rows[-1]), flush=True)
    growth = {job: exponent(sizes, [r["cpu_s"] for r in rows if r["job"] == job]) for job in args.jobs}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"rows": rows, "cpu_exponent": growth}, f, indent=1)
    print(json.dumps({"cpu_exponent": growth}))


if __name__ == "__main__":
    main()
