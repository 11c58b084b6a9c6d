"""pack throughput beside the obvious baseline: a plain loop that joins the same tables with pyarrow and
writes the same members with ``webdataset.TarWriter``.

A synthetic annotated source (``--shards`` raw shards of ``--images`` COCO-like images with 5 captions
each, ``--regions`` detector regions of ``--dim``-d features and an 80-class distribution, 3 noun phrases
per caption) is written with the project's own shard and sidecar writers, then packed into the ``pairs``
task (one sample per caption: image, caption, json with regions and phrases, float16 ``.npy`` features
and class distributions) by

- ``pack``: ``ShardPacker`` + ``write_packed``, the logic of the stage without Beam (one process);
- ``pack-beam``: ``run_pack`` through the in-process DirectRunner (the stage as a user runs it);
- ``plain``: pyarrow reads of the raw index, ann/detect and ann/parse, a dict join, the images read at their
  offsets, ``TarWriter`` writes (no clean removals, no rejects, no accounting, no atomic rename).

    python -m benchmarks.pack --shards 4 --images 200 --repeat 3

Interleaved rounds, one process; samples/s and the ratio to the plain loop.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import tempfile

import numpy as np

from benchmarks.rounds import interleaved, median_rate
from schemas import layout

SOURCE = "bench"
WORDS = "a red ball next to the blue tent on green grass with small dog and big tree".split()


def build_corpus(root: str, shards: int, images: int, regions: int, dim: int, seed: int = 0):
    """The raw shards, ann/detect and ann/parse tables of one synthetic source; returns its config."""
    from PIL import Image

    from pipelines.raw_shard import ShardPaths, write_shard
    from pipelines.sidecar_tables import SidecarPaths, params_hash, raw_params_hash, read_shard_input, write_sidecar
    from schemas.config import CorpusConfig, ImageConfig, ImageFolderConfig
    from schemas.records import Candidate
    from schemas.stages import PackConfig
    from schemas.tables import ANN_DETECT, ANN_PARSE

    rng = np.random.default_rng(seed)
    for shard in range(shards):
        candidates = []
        for i in range(images):
            pixels = rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).resize((320, 240)).save(buffer, "JPEG", quality=85)
            captions = [" ".join(rng.choice(WORDS, size=10)) for _ in range(5)]
            key = f"{SOURCE}-{shard:03d}{i:05d}"
            candidates.append(Candidate(key, SOURCE, "pair", key, f"synthetic:{key}", captions[0],
                                        image_bytes=buffer.getvalue(),
                                        meta={"captions": [{"caption": c} for c in captions]}))
        write_shard(ShardPaths.of(root, "ingest", SOURCE, shard), "ingest", candidates, ImageConfig(), f"bench{shard}")
        rows = read_shard_input(root, SOURCE, shard).rows
        detect, parse = [], []
        for row in rows:
            boxes = np.sort(rng.random((regions, 2, 2)), axis=1).reshape(regions, 4)[:, [0, 2, 1, 3]]
            probs = rng.dirichlet(np.ones(80), size=regions).astype(np.float32)
            features = rng.random((regions, dim), dtype=np.float32)
            detect.append({"key": row["key"], "source": SOURCE, "width": 320, "height": 240, "regions": [
                {"box": boxes[r].tolist(), "label": WORDS[r % len(WORDS)], "score": 0.9, "origin": "detector",
                 "class_probs": probs[r].tolist(), "feature": features[r].tolist()} for r in range(regions)]})
            for index, caption in enumerate(c["caption"] for c in row["meta"]["captions"]):
                phrases = [{"text": caption[s:s + 5], "root": caption[s:s + 5], "start": s, "end": s + 5}
                           for s in (0, 10, 20)]
                parse.append({"key": row["key"], "source": SOURCE, "text_index": index, "text": caption,
                              "noun_phrases": phrases, "objects": [], "relations": []})
        digest = params_hash({}, raw_params_hash(root, SOURCE, shard))
        write_sidecar(SidecarPaths.of(root, layout.ann("detect"), "detect", SOURCE, shard), "detect", detect, [],
                      ANN_DETECT, digest, len(detect))
        write_sidecar(SidecarPaths.of(root, layout.ann("parse"), "parse", SOURCE, shard), "parse", parse, [],
                      ANN_PARSE, digest, len(parse))
    source = ImageFolderConfig(root=root)
    return CorpusConfig(root, {SOURCE: source},
                        pack=dataclasses.replace(PackConfig(), tasks=["pairs"], aligned_ratios=[]))


def plain_loop(root: str, shards: int, out: str) -> int:
    """The obvious join: pyarrow tables -> dicts -> TarWriter."""
    import pyarrow.parquet as pq
    import webdataset as wds

    os.makedirs(out, exist_ok=True)
    done = 0
    for shard in range(shards):
        index = pq.read_table(f"{root}/{layout.raw_index(SOURCE, shard)}").to_pylist()
        detect = {row["key"]: row
                  for row in pq.read_table(f"{root}/{layout.table(layout.ann('detect'), SOURCE, shard)}").to_pylist()}
        parse = {(row["key"], row["text_index"]): row
                 for row in pq.read_table(f"{root}/{layout.table(layout.ann('parse'), SOURCE, shard)}").to_pylist()}
        with open(f"{root}/{layout.raw_tar(SOURCE, shard)}", "rb") as tar_in, \
                wds.TarWriter(f"{out}/{SOURCE}-{shard:05d}.tar", mtime=0) as sink:
            for row in sorted(index, key=lambda r: r["key"]):
                tar_in.seek(row["image_offset"])
                image = tar_in.read(row["image_size"])
                regions = detect[row["key"]]["regions"]
                features = np.asarray([r["feature"] for r in regions], np.float16)  # once per image, like pack
                probs = np.asarray([r["class_probs"] for r in regions], np.float16)
                meta = json.loads(row["json"])["meta"]
                for i, caption in enumerate(c["caption"] for c in meta["captions"]):
                    phrases = [{"text": p["text"], "start": p["start"], "end": p["end"]}
                               for p in parse[(row["key"], i)]["noun_phrases"]]
                    sink.write({"__key__": f"{row['key']}_t{i}", "jpg": image, "txt": caption,
                                "json": {"sample_key": row["key"], "text_index": i, "phrases": phrases,
                                         "regions": {"boxes": [r["box"] for r in regions],
                                                     "labels": [r["label"] for r in regions],
                                                     "scores": [r["score"] for r in regions]}},
                                "region_feats.npy": features, "region_probs.npy": probs})
                    done += 1
    return done


def pack_logic(config, shards: int, out: str) -> int:
    """ShardPacker + write_packed into a fresh output root (the raw and ann folders linked in)."""
    from pipelines.pack import ShardPacker
    from pipelines.stages.pack import pack_settings, shard_digest, write_packed

    root = _fresh_root(config.output, out)
    settings = dataclasses.replace(pack_settings(config), root=root)
    packer = ShardPacker(settings)
    packer.setup()
    done = 0
    for shard in range(shards):
        tasks, left_out = packer.pack(SOURCE, shard)
        counts = write_packed(root, SOURCE, shard, shard_digest(settings, SOURCE, shard, {}), tasks, left_out)
        done += counts["tasks"]["pairs"]["packed"]
    return done


def pack_beam(config, out: str) -> int:
    from pipelines.runner import RunnerConfig
    from pipelines.stages.pack import run_pack

    root = _fresh_root(config.output, out)
    tasks = run_pack(dataclasses.replace(config, output=root), None, RunnerConfig(), show_progress=False)
    return tasks[0].counts.written


def _fresh_root(corpus: str, out: str) -> str:
    os.makedirs(out, exist_ok=True)
    for folder in (layout.RAW, layout.ANN):
        os.symlink(os.path.join(corpus, folder), os.path.join(out, folder))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--images", type=int, default=200, help="images per shard (5 captions each)")
    parser.add_argument("--regions", type=int, default=36)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import webdataset  # noqa: F401  (its import, torch's included, is not the plain loop's time)
    with tempfile.TemporaryDirectory() as work:
        config = build_corpus(os.path.join(work, "corpus"), args.shards, args.images, args.regions, args.dim)
        rounds = interleaved({
            "plain": lambda out: plain_loop(config.output, args.shards, out),
            "pack": lambda out: pack_logic(config, args.shards, out),
            "pack-beam": lambda out: pack_beam(config, out),
        }, args.repeat, work)
    base = median_rate(rounds["plain"])
    print(f"{args.shards} shards x {args.images} images x 5 captions, {args.regions} regions x {args.dim}-d, "
          f"{args.repeat} interleaved rounds (median samples/s)")
    for name, result in rounds.items():
        rate = median_rate(result)
        print(f"{name:<10} {result[0][0]:>7} samples  {rate:>8.0f}/s  {rate / base:.2f}x plain")


if __name__ == "__main__":
    main()
