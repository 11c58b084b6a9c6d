"""Shard indexes only (no tars, no images), with duplicates and evaluation images planted at any size: what
``clean`` reads, for comparing its two implementations and for benchmarking them at scale.

Four sources (``coco``, ``cc``, ``unl`` images, ``books`` text) over ``shards`` shards each. Of the
``n`` image samples, about one in ten gets an exact copy (same sha256 and pHash) in another source, one
in ten a near copy (1-4 pHash bits flipped, other bytes), one in fifty a chain A~B~C whose ends are 6-8
bits apart (one cluster only through B), and some carry a COCO id or URL of the evaluation list
(``eval_ids.txt``); about a quarter of the ``n // 2`` sentences repeat another after case and spacing
changes. A long chain of near copies can be added (``long_chain``). The same arguments give the same files.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict

from schemas.config import (
    BookCorpusConfig,
    CleanConfig,
    CocoConfig,
    ConceptualCaptionsConfig,
    CorpusConfig,
    EvalSetConfig,
    ImageFolderConfig,
)
from schemas.keys import make_key, shard_name, shard_of
from schemas.tables import SHARD_INDEX

SOURCES = {"coco": CocoConfig, "cc": ConceptualCaptionsConfig, "unl": ImageFolderConfig, "books": BookCorpusConfig}
IMAGE_SOURCES = ("coco", "cc", "unl")
_MODALITY = {"coco": "pair", "cc": "pair", "unl": "image", "books": "text"}


def write_clean_indexes(root: str, n: int, seed: int = 0, shards: int = 4, long_chain: int = 0) -> CorpusConfig:
    """Write the shard indexes under ``root/corpus/raw/`` and the evaluation list; the config naming them.
    ``long_chain``: that many more images, each 2 bits from the one before (one cluster, a long path)."""
    from pipelines.raw_shard import write_table

    rng = random.Random(seed)
    samples: list[tuple[str, int, dict]] = []  # (source, number, row fields)
    eval_lines: list[str] = []
    counter = defaultdict(int)

    def add(source: str, **fields) -> dict:
        counter[source] += 1
        row = {"number": counter[source], **fields}
        samples.append((source, counter[source], row))
        return row

    def image(source: str, sha: str, phash: int) -> dict:
        meta = {"image_id": counter[source] + 1} if source == "coco" else {}
        if source == "cc":
            meta = {"url": f"http://img.example.com/{counter[source] + 1}.jpg"}
        return add(source, sha256=sha, phash=phash, meta=meta)

    for i in range(n):
        base = rng.getrandbits(64)
        first = image(rng.choice(IMAGE_SOURCES), f"{i:064x}", base)
        roll = rng.random()
        if roll < 0.1:
            image(rng.choice(IMAGE_SOURCES), first["sha256"], base)
        elif roll < 0.2:
            image(rng.choice(IMAGE_SOURCES), f"n{i:063x}", _flip(rng, base, rng.randint(1, 4)))
        elif roll < 0.22:
            middle = _flip(rng, base, 3)
            image(rng.choice(IMAGE_SOURCES), f"m{i:063x}", middle)
            end = _flip(rng, middle, rng.randint(3, 4), avoid=middle ^ base)
            image(rng.choice(IMAGE_SOURCES), f"e{i:063x}", end)
        if rng.random() < 0.03:
            meta = first["meta"]
            if "image_id" in meta:
                eval_lines.append(f"coco:{meta['image_id']}")
            elif "url" in meta:
                eval_lines.append(meta["url"])
    value = rng.getrandbits(64)
    for k in range(long_chain):
        value = _flip(rng, value, 2)
        image(IMAGE_SOURCES[k % 3], f"c{k:063x}", value)
    sentences = [f"sentence number {k} about a dog" for k in range(n // 2)]
    for k in range(n // 2):
        text = sentences[k] if rng.random() > 0.25 else _respell(rng, sentences[rng.randrange(max(k, 1))])
        add("books", text=text)

    output = os.path.join(root, "corpus")
    tables = defaultdict(list)
    for source, number, row in samples:
        key = make_key(source, number)
        tables[source, shard_of(key, shards)].append(_index_row(source, key, number, row))
    for (source, shard), rows in sorted(tables.items()):
        os.makedirs(os.path.join(output, "raw", source), exist_ok=True)
        write_table(os.path.join(output, "raw", source, f"{shard_name(shard)}.parquet"),
                    sorted(rows, key=lambda r: r["key"]), SHARD_INDEX)
    with open(os.path.join(root, "eval_ids.txt"), "w") as f:
        f.write("\n".join(eval_lines or ["coco:0"]) + "\n")
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    return indexes_config(root, shards)


def indexes_config(root: str, shards: int = 4) -> CorpusConfig:
    """The config of indexes ``write_clean_indexes`` wrote under ``root``."""
    sources = {name: kind(root=os.path.join(root, "data"), shards=shards) for name, kind in SOURCES.items()}
    eval_set = EvalSetConfig("eval_ids", os.path.join(root, "eval_ids.txt"))
    return CorpusConfig(output=os.path.join(root, "corpus"), sources=sources, clean=CleanConfig(eval_sets=[eval_set]))


def _flip(rng: random.Random, value: int, bits: int, avoid: int = 0) -> int:
    """``value`` with ``bits`` bits flipped, none of those set in ``avoid`` (so a chain's ends drift apart)."""
    choices = [b for b in range(64) if not avoid >> b & 1]
    for bit in rng.sample(choices, bits):
        value ^= 1 << bit
    return value


def _respell(rng: random.Random, text: str) -> str:
    """The same text for exact text dedup: other case, other spacing."""
    return rng.choice([text.upper(), f"  {text}\n", text.replace(" ", "   "), text.title()])


def _index_row(source: str, key: str, number: int, row: dict) -> dict:
    modality = _MODALITY[source]
    text = row.get("text", f"a caption {number}" if modality == "pair" else None)
    phash = row.get("phash")
    return {"key": key, "source": source, "modality": modality, "source_id": str(number), "text": text,
            "image_format": None if modality == "text" else "jpg", "width": None, "height": None,
            "sha256": row.get("sha256"), "phash": None if phash is None else f"{phash:016x}",
            "image_offset": None, "image_size": None, "sample_bytes": 100,
            "json": json.dumps({"meta": row.get("meta", {})})}
