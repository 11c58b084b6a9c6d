"""The retrieve stage split by job: weak pairs (mu-VLA), related images and related texts (UNIMO App. A),
each run alone on the corpora a scale benchmark left (``python -m benchmarks.scale --work W`` through
``index``), so that the job whose cost grows faster than the corpus shows by itself.

Per size and job, the retrieve command runs on a copy of the corpus config asking for that job only
(``W/size-S/retrieve-<job>.yaml``, the sources in the config's order), measured as the scale benchmark
measures a stage: CPU seconds of the process tree, wall time, peak memory of the largest worker, twice: the
first run builds the job's collection where it is missing, the second finds it. Reported: those, and each job's
CPU growth exponent over the sizes. With ``--caps``, each related-items job runs once per
postings cap (``related_*_postings_cap``; ``none``: exact) and reports the recall of its links against the
first cap's, per query: the share of the reference's linked items it also links.

    python -m benchmarks.retrieve_kinds --work W --sizes 10000 30000 [--jobs related-texts] [--caps none 1000]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from dataclasses import asdict

import yaml

from benchmarks.scale import exponent, run_stage

# job -> the retrieve keys that switch the other jobs off
JOBS = {"weak-pairs": {"related_images_queries": [], "related_texts_queries": []},
        "related-images": {"weak_pairs": [], "related_texts_queries": []},
        "related-texts": {"weak_pairs": [], "related_images_queries": []}}


def job_config(config: str, job: str, cap: int | None = None) -> str:
    """A copy of the corpus config beside it asking retrieve for ``job`` only (its postings capped at ``cap``)."""
    if not os.path.exists(config):
        raise FileNotFoundError(f"{config}: no corpus there; run `python -m benchmarks.scale --work W --sizes ...` "
                                "through index first")
    with open(config, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    data.setdefault("retrieval", {}).setdefault("retrieve", {}).update(
        JOBS[job], related_images_postings_cap=cap, related_texts_postings_cap=cap)
    path = os.path.join(os.path.dirname(config), f"retrieve-{job}{'' if cap is None else f'-cap{cap}'}.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)  # the sources in their order: a collection's order
    return path


def links(corpus: str, job: str) -> dict[tuple, set[tuple]]:
    """A related-items job's links as written: query (key, text index) -> the linked (key, text index)s."""
    import pyarrow.parquet as pq

    out: dict[tuple, set[tuple]] = {}
    for path in sorted(glob.glob(os.path.join(corpus, "links", job, "*", "[0-9]*.parquet"))):
        table = pq.read_table(path, columns=["query_key", "query_text_index", "key", "text_index"]).to_pydict()
        for query, query_index, key, index in zip(*table.values(), strict=True):
            out.setdefault((query, query_index), set()).add((key, index))
    return out


def scored_entries(corpus: str, job: str, cap: int | None) -> tuple[int, int]:
    """(entries, documents): the postings entries the job's search scores when every collection item is also a
    query (as here), the sum over terms of document count x its list's length (``cap`` at most), and the
    collection's documents, from the collection's frequencies (any cap's: they do not depend on it)."""
    import pickle

    path = sorted(glob.glob(os.path.join(corpus, "links", job, "_stats", "tfidf-*", "frequencies.pkl")))[-1]
    with open(path, "rb") as f:
        frequencies = pickle.load(f)
    return (sum(count * (count if cap is None else min(count, cap)) for count in frequencies.counts.values()),
            frequencies.documents)


def recall(found: dict[tuple, set[tuple]], reference: dict[tuple, set[tuple]]) -> float:
    """Mean over the reference's queries of the share of their linked items ``found`` links too."""
    shares = [len(found.get(query, set()) & items) / len(items) for query, items in reference.items() if items]
    return sum(shares) / len(shares) if shares else 1.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="the --work folder of a scale benchmark run")
    parser.add_argument("--sizes", type=int, nargs="+", required=True)
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--caps", nargs="+", default=["none"],
                        help="postings caps of the related-items jobs (none: exact); recall against the first")
    parser.add_argument("--out", default="benchmarks/results/retrieve-kinds.json")
    args = parser.parse_args(argv)
    sizes, rows = sorted(args.sizes), []
    caps = [None if cap == "none" else int(cap) for cap in args.caps]
    for size in sizes:
        folder = os.path.join(args.work, f"size-{size}")
        corpus = os.path.join(folder, "corpus")
        for job in args.jobs:
            reference = None
            for cap in caps if job != "weak-pairs" else [None]:
                config = job_config(os.path.join(folder, "corpus.yaml"), job, cap)
                for run in ("first", "again"):  # the first builds what a rerun finds (a cap's collection)
                    measured = run_stage("retrieve", config, corpus, size,
                                         ["--workers", str(args.workers), "--quiet", "--overwrite"])
                    row = {"job": job, "cap": cap, "run": run, **asdict(measured)}
                    if job != "weak-pairs":
                        found = links(corpus, job)
                        reference = reference if reference is not None else found
                        row["recall"] = recall(found, reference)
                        row["scored_entries"], row["queries"] = scored_entries(corpus, job, cap)
                        row["cpu_ms_per_query"] = round(1e3 * measured.cpu_s / max(1, row["queries"]), 3)
                    rows.append(row)
                    print(json.dumps(rows[-1]), flush=True)
    growth = {f"{job}{'' if cap is None else f'-cap{cap}'} ({run})": exponent(
        sizes, [r["cpu_s"] for r in rows if r["job"] == job and r["cap"] == cap and r["run"] == run])
        for job in args.jobs for cap in (caps if job != "weak-pairs" else [None]) for run in ("first", "again")}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"rows": rows, "cpu_exponent": growth}, f, indent=1)
    print(json.dumps({"cpu_exponent": growth}))


if __name__ == "__main__":
    main()
