"""Ingest throughput: the Beam ingest stage vs a plain single-process loop doing the same work.

The corpus is Conceptual-Captions shaped (headerless ``caption<TAB>url`` TSV, one JPEG per row in a
folder), the most common layout at scale. Both sides parse the TSV, decode every image, apply EXIF
orientation, convert to RGB, resize to ``max_side``, re-encode as JPEG and write WebDataset tars.

    python -m benchmarks.ingest --samples 20000 --repeat 2
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import statistics

from benchmarks.rounds import interleaved, median_rate
from schemas.config import ConceptualCaptionsConfig, CorpusConfig, ImageConfig, TextConfig

MAX_SIDE = 224
QUALITY = 90


def make_corpus(root: str, samples: int, seed: int = 0) -> None:
    """A TSV and ``samples`` small JPEGs (160-320 px shapes on a background); reused when present."""
    from PIL import Image, ImageDraw

    tsv = os.path.join(root, "Train_GCC-training.tsv")
    if os.path.exists(tsv) and sum(1 for _ in open(tsv, encoding="utf-8")) == samples:
        return
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    rng = random.Random(seed)
    colours = {"red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 200), "yellow": (230, 210, 40)}
    with open(tsv, "w", encoding="utf-8") as f:
        for row in range(samples):
            name, colour = rng.choice(list(colours.items()))
            size = (rng.randint(160, 320), rng.randint(160, 320))
            image = Image.new("RGB", size, (rng.randint(100, 255), rng.randint(100, 255), rng.randint(100, 255)))
            box = sorted(rng.sample(range(size[0]), 2)) + sorted(rng.sample(range(size[1]), 2))
            ImageDraw.Draw(image).ellipse((box[0], box[2], box[1], box[3]), fill=colour)
            image.save(os.path.join(root, "images", f"{row:08d}.jpg"), quality=90)
            f.write(f"a {name} ball on a plain background\thttp://example.invalid/{row}.jpg\n")


def baseline(root: str, out: str, shard_size: int = 1250) -> int:
    """What a user would write first: a loop over the TSV with PIL and webdataset's TarWriter."""
    import webdataset as wds
    from PIL import Image, ImageOps

    os.makedirs(out, exist_ok=True)
    written, writer = 0, None
    with open(os.path.join(root, "Train_GCC-training.tsv"), encoding="utf-8") as lines:
        for row, line in enumerate(lines):
            caption, url = line.rstrip("\n").split("\t")
            if row % shard_size == 0:
                writer and writer.close()
                writer = wds.TarWriter(os.path.join(out, f"{row // shard_size:05d}.tar"))
            with Image.open(os.path.join(root, "images", f"{row:08d}.jpg")) as image:
                image = ImageOps.exif_transpose(image).convert("RGB")
                image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BICUBIC)
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=QUALITY)
            writer.write({"__key__": f"cc-{row}", "jpg": buffer.getvalue(), "txt": caption,
                          "json": json.dumps({"url": url, "width": image.width, "height": image.height})})
            written += 1
    writer and writer.close()
    return written


def unicorpus_ingest(root: str, out: str, workers: int, shards: int) -> int:
    from pipelines.runner import RunnerConfig
    from pipelines.stages.ingest import run_ingest

    source = ConceptualCaptionsConfig(root=root, shards=shards)
    config = CorpusConfig(out, {"cc": source}, ImageConfig(max_side=MAX_SIDE, encode="jpeg", jpeg_quality=QUALITY),
                          TextConfig())
    (result,) = run_ingest(config, ["cc"], RunnerConfig(workers=workers), overwrite=True, show_progress=False)
    return result.counts.written


def counting_cpu(run, seconds: list[float]):
    """``run``, appending the CPU seconds of each call (this process and its workers) to ``seconds``: unlike
    wall time, barely moved by other jobs on the machine."""

    def counted(out: str) -> int:
        before = _cpu_seconds()
        done = run(out)
        seconds.append(_cpu_seconds() - before)
        return done

    return counted


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds; the median is reported")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--work", default="/tmp/unicorpus-bench")
    args = parser.parse_args()

    raw = os.path.join(args.work, "raw")
    make_corpus(raw, args.samples)
    cpu: dict[str, list[float]] = {}
    contenders = {
        "plain loop (PIL + TarWriter)": lambda out: baseline(raw, out),
        "unicorpus ingest, direct, 1 process": lambda out: unicorpus_ingest(raw, out, 1, args.shards),
        "unicorpus ingest, direct, 2 workers": lambda out: unicorpus_ingest(raw, out, 2, args.shards),
    }
    results = interleaved({name: counting_cpu(run, cpu.setdefault(name, [])) for name, run in contenders.items()},
                          args.repeat, args.work)
    for name, rounds in results.items():
        assert all(written == args.samples for written, _ in rounds), f"{name}: wrote {rounds} of {args.samples}"
    base = median_rate(results["plain loop (PIL + TarWriter)"])
    print(f"{args.samples} samples, {os.cpu_count()} cores, median of {args.repeat} interleaved rounds")
    print(f"{'contender':40} {'samples/s':>10} {'vs loop':>8} {'CPU ms/sample':>14}  each round's samples/s")
    for name, rounds in results.items():
        rate, cpu_ms = median_rate(rounds), 1000 * statistics.median(cpu[name]) / args.samples
        print(f"{name:40} {rate:10.0f} {rate / base:7.2f}x {cpu_ms:14.2f}  {' '.join(f'{r:.0f}' for _, r in rounds)}")
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    print(f"peak RSS of one process: {peak / 1024:.0f} MB")


if __name__ == "__main__":
    main()
