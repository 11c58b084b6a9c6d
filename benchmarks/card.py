"""The dataset card's cost (issue 15): from the shapes kept in the index footers and per source, against reading
and parsing every sample's ``json`` (the indexes as written before, which the card still reads that way).

Interleaved rounds (``benchmarks.rounds``), the median per contender. The corpus: ``--sources`` text sources of
``--samples`` samples each over ``--shards`` shards, written by the real shard writer, with CC-like ``meta``
(captions, a URL, a score that is null or a float, tags). The columns case is a copy of it with the shape keys
taken out of every footer.

    python -m benchmarks.card --samples 20000 --sources 2 --shards 16 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.rounds import interleaved, median_rate
from pipelines.card import forget_features, write_card
from pipelines.manifest_io import update_manifest
from pipelines.raw_shard import ShardPaths, write_shard
from pipelines.shard_shape import shape_footer
from schemas.config import ImageConfig
from schemas.keys import make_key, shard_of
from schemas.records import Candidate
from schemas.tables import HAS_TEXT_KEY, IMAGE_FORMATS_KEY, JSON_TYPE_KEY


def make_corpus(root: str, sources: list[str], samples: int, shards: int) -> None:
    for source in sources:
        records: list[list[Candidate]] = [[] for _ in range(shards)]
        for i in range(samples):
            key = make_key(source, str(i))
            meta = {"captions": [f"a photo of thing {i}"], "url": f"http://example.com/{i}.jpg",
                    "score": None if i % 3 else i / 7, "tags": [f"t{i % 11}"] * (i % 3)}
            records[shard_of(key, shards)].append(Candidate(key, source, "text", str(i), f"{source}.tsv:{i}",
                                                            text=f"sentence number {i}", meta=meta))
        for shard, shard_records in enumerate(records):
            write_shard(ShardPaths.of(root, "ingest", source, shard), "ingest", shard_records, ImageConfig(), "h")


def strip_shapes(root: str) -> None:
    """Every index as written before issue 15."""
    for path in Path(root).glob("raw/*/*.parquet"):
        table = pq.read_table(path)
        kept = {k: v for k, v in table.schema.metadata.items() if k not in (JSON_TYPE_KEY, IMAGE_FORMATS_KEY,
                                                                             HAS_TEXT_KEY)}
        pq.write_table(table.replace_schema_metadata(kept), path, compression="zstd")


def shape_footer_seconds(root: str) -> float:
    """What the shard writers now spend on the shapes, all shards together."""
    seconds = 0.0
    for path in Path(root).glob("raw/*/*.parquet"):
        rows = pq.read_table(path, columns=["json", "image_format", "text"]).to_pylist()
        started = time.perf_counter()
        shape_footer(rows)
        seconds += time.perf_counter() - started
    return seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=20000, help="per source")
    parser.add_argument("--sources", type=int, default=2)
    parser.add_argument("--shards", type=int, default=16, help="per source")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    sources = [f"s{i}" for i in range(args.sources)]
    work = tempfile.mkdtemp(prefix="card-bench-")
    roots = {name: f"{work}/{name}" for name in ("columns", "footers", "kept")}
    try:
        make_corpus(roots["footers"], sources, args.samples, args.shards)
        shutil.copytree(roots["footers"], roots["columns"])
        strip_shapes(roots["columns"])
        shutil.copytree(roots["footers"], roots["kept"])
        update_manifest(roots["kept"], "ingest", {source: {"params_hash": f"hash-{source}"} for source in sources})
        write_card(roots["kept"], sources)  # keeps each source's features

        def card(name: str, forget: list[str] = ()):
            def run(_out: str) -> int:
                for source in forget:
                    forget_features(roots[name], source)
                write_card(roots[name], sources)
                return 1
            return run

        contenders = {"columns": card("columns"), "footers": card("footers"), "kept": card("kept"),
                      "rerun of one source": card("kept", sources[:1])}
        seconds = {name: 1 / median_rate(rounds) for name, rounds in interleaved(contenders, args.repeat, work).items()}
        cards = {name: Path(root, "README.md").read_bytes() for name, root in roots.items()}
        writers = shape_footer_seconds(roots["footers"])
    finally:
        shutil.rmtree(work)
    total = args.samples * args.sources
    result = {"samples": total, "shards": args.shards * args.sources, "same_card": len(set(cards.values())) == 1,
              "seconds": {name: round(value, 4) for name, value in seconds.items()},
              "vs_columns": {name: round(seconds["columns"] / value, 1) for name, value in seconds.items()},
              "shard_writers_shape_us_per_sample": round(writers / total * 1e6, 1)}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
