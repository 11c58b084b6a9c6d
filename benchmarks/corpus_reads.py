"""Sample lookups of ``retrieval.corpus.Corpus`` (what the service and ``query`` do per key) through the fsspec
file layer (``retrieval/files.py``), beside the reader it replaced (pyarrow.fs, ``retrieval/corpus.py`` at
``--before``, loaded from git) on the same local corpus, and the fsspec layer on a ``memory://`` copy.

A round opens a fresh ``Corpus`` (its shard cache cold) and, per key of a fixed random draw, reads the raw
row (``locate``: one shard index per shard), the image at its offset (a ranged read of the tar) and the key's
row of a keyed table (``sidecar_rows``, a filtered parquet read: the raw index stands in for a sidecar).

    python -m benchmarks.corpus_reads --scale 4 --lookups 2000 --repeat 5
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import random
import subprocess
import tempfile
import uuid

from benchmarks.rounds import interleaved, median_rate
from schemas import layout


def ingested(work: str, scale: int):
    """The mini corpus generated at ``scale`` and its COCO-like sources ingested under ``work``: the config."""
    from pipelines.minicorpus import generate
    from pipelines.runner import RunnerConfig
    from pipelines.stages.ingest import run_ingest
    from schemas.config import load_config

    config = load_config(generate(os.path.join(work, "mini"), seed=0, scale=scale))
    sources = {name: source for name, source in config.sources.items() if name in ("coco", "vg", "cc")}
    config = dataclasses.replace(config, output=os.path.join(work, "corpus"), sources=sources)
    run_ingest(config, list(sources), RunnerConfig(), show_progress=False)
    return config


def reader_before(rev: str):
    """``retrieval/corpus.py`` as it was at ``rev``, as a module of its own."""
    source = subprocess.run(["git", "show", f"{rev}:retrieval/corpus.py"], capture_output=True, text=True,
                            check=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "corpus_before.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("corpus_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lookups(corpus_class, root: str, shards: dict[str, int], keys: list[str]):
    def run(_out: str) -> int:
        corpus = corpus_class(root, shards)
        for key in keys:
            corpus.row(key)
            corpus.image_bytes(key)
            assert corpus.sidecar_rows(layout.RAW, key)
        return len(keys)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=4, help="mini corpus scale")
    parser.add_argument("--lookups", type=int, default=2000, help="keys looked up per round")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--before", default="main", help="git revision of the pyarrow.fs reader")
    args = parser.parse_args()

    import fsspec

    from retrieval import files
    from retrieval.corpus import Corpus

    with tempfile.TemporaryDirectory() as work:
        config = ingested(work, args.scale)
        shards = {name: source.shards for name, source in config.sources.items()}
        keys = [key for source in shards for path in files.glob(files.join(config.output, layout.raw(source),
                                                                             "[0-9]*.parquet"))
                for key in files.read_table(path, ["key"]).column("key").to_pylist()]
        drawn = random.Random(0).choices(keys, k=args.lookups)
        memory = f"memory://bench-{uuid.uuid4().hex[:8]}"
        fsspec.filesystem("memory").put(config.output, memory.removeprefix("memory:/"), recursive=True)
        contenders = {
            "pyarrow.fs (before)": lookups(reader_before(args.before).Corpus, config.output, shards, drawn),
            "fsspec, local path": lookups(Corpus, config.output, shards, drawn),
            "fsspec, memory://": lookups(Corpus, memory, shards, drawn),
        }
        rates = {name: median_rate(rounds) for name, rounds in interleaved(contenders, args.repeat, work).items()}
    base = rates["pyarrow.fs (before)"]
    print(json.dumps({"samples": len(keys), "lookups": args.lookups, "repeat": args.repeat,
                      "lookups_per_s": {name: round(rate) for name, rate in rates.items()},
                      "vs_before": {name: round(rate / base, 2) for name, rate in rates.items()}}, indent=2))


if __name__ == "__main__":
    main()
