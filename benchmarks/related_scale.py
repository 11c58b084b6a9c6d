"""Related items at scale: the retrieve stage's related images and related texts (UNIMO App. A) searched
exactly and with capped postings (``retrieval.tfidf.Postings``), on the corpora a scale benchmark left
(``python -m benchmarks.scale --work W`` through ``index``).

Per size, kind (related images, related texts) and setting (``exact``: no cap; ``N``: a query term scores
at most N rows), the retrieve command runs on a copy of the corpus config asking for that kind only,
measured as the scale benchmark measures a stage (CPU seconds of the process tree, peak memory of the
largest worker); its links table is kept under ``W/size-S/<kind>-<setting>/``. Reported: CPU seconds, their
growth exponent over the sizes, and recall@k against the exact search: of each query's exact links, the
share the capped search also gave, by identity, and counting ties (an exact link found as itself or as
another row of the same score: related images tie by the hundred, equal bags of labels).

    python -m benchmarks.related_scale --work W --sizes 10000 30000 --postings 1000 4000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections import Counter
from dataclasses import asdict

import pyarrow.parquet as pq
import yaml

from benchmarks.scale import exponent, run_stage

KINDS = {"related-images": ("related_images", ("key", "source")),
         "related-texts": ("related_texts", ("key", "source", "text_index"))}
QUERY = ("query_source", "query_key", "query_text_index")


def setting(postings: int | None) -> str:
    return "exact" if postings is None else str(postings)


def settings_config(config: str, kind: str, postings: int | None) -> str:
    """A copy of the corpus config beside it asking for the related items of ``kind`` only, with ``postings``."""
    with open(config, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    retrieve = data.setdefault("retrieval", {}).setdefault("retrieve", {})
    retrieve["weak_pairs"] = []
    for other, (field, _) in KINDS.items():
        if other != kind:
            retrieve[f"{field}_queries"] = []
    retrieve[f"{KINDS[kind][0]}_postings"] = postings
    path = os.path.join(os.path.dirname(config), f"{kind}-{setting(postings)}.yaml")
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(data, f, sort_keys=False)  # the sources in their order: the collection's order
    return path


def links(folder: str, identity: tuple[str, ...]) -> dict[tuple, dict[tuple, float]]:
    """Each query's linked rows (by ``identity``) and their scores in a links/ table folder."""
    out: dict[tuple, dict[tuple, float]] = {}
    if not os.path.isdir(folder):
        return out
    for row in pq.read_table(folder, columns=[*QUERY, *identity, "score"]).to_pylist():
        out.setdefault(tuple(row[c] for c in QUERY), {})[tuple(row[c] for c in identity)] = row["score"]
    return out


def _found(found: dict[tuple, float], truth: dict[tuple, float]) -> tuple[int, int]:
    """(exact links found as themselves, and with ties: the rest matched to other found rows of equal score)."""
    same = truth.keys() & found.keys()
    scores = Counter(round(score, 6) for row, score in found.items() if row not in same)
    tied = Counter(round(score, 6) for row, score in truth.items() if row not in same) & scores
    return len(same), len(same) + sum(tied.values())


def recall(found: dict[tuple, dict], truth: dict[tuple, dict]) -> dict[str, float] | None:
    """Of the exact links (over all queries), the share found: by identity, and counting ties; None without
    exact links."""
    total = sum(len(rows) for rows in truth.values())
    if not total:
        return None
    counts = [_found(found.get(query, {}), rows) for query, rows in truth.items()]
    return {"identity": round(sum(c[0] for c in counts) / total, 4),
            "with_ties": round(sum(c[1] for c in counts) / total, 4)}


def run_size(folder: str, samples: int, postings: list[int | None], workers: int) -> list[dict]:
    """Each kind and setting's retrieve run on the corpus in ``folder``, its links kept, its recall against
    exact (``postings``: exact first)."""
    config, output, out = os.path.join(folder, "corpus.yaml"), os.path.join(folder, "corpus"), []
    for kind, (_, identity) in KINDS.items():
        for limit in postings:
            measured = run_stage("retrieve", settings_config(config, kind, limit), output, samples,
                                 ["--workers", str(workers), "--quiet", "--overwrite"])
            kept = os.path.join(folder, f"{kind}-{setting(limit)}")
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(os.path.join(output, "links", kind), kept)
            truth = links(os.path.join(folder, f"{kind}-exact"), identity)
            out.append({"samples": samples, "kind": kind, "postings": setting(limit), **asdict(measured),
                        "recall": recall(links(kept, identity), truth)})
            print(json.dumps(out[-1]), flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="the --work folder of a scale benchmark run")
    parser.add_argument("--sizes", type=int, nargs="+", required=True)
    parser.add_argument("--postings", type=int, nargs="+", default=[1000, 4000], help="caps to measure")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/related-scale.json")
    args = parser.parse_args(argv)
    settings, sizes = [None, *args.postings], sorted(args.sizes)  # exact first: the others' recall is against it
    rows = [row for size in sizes for row in run_size(os.path.join(args.work, f"size-{size}"), size, settings,
                                                      args.workers)]
    growth = {f"{kind} {setting(limit)}": exponent(sizes, [r["cpu_s"] for r in rows if (r["kind"], r["postings"])
                                                           == (kind, setting(limit))])
              for kind in KINDS for limit in settings}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({"rows": rows, "cpu_exponent": growth}, f, indent=1)
    print(json.dumps({"cpu_exponent": growth}))


if __name__ == "__main__":
    main()
