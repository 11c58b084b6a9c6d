"""Downloading a URL list: unicorpus ingest vs img2dataset, on the same URLs from a local server, at
several shard counts.

Both fetch the same list (100 bad URLs per 3,000 good ones: 404s, HTML pages, truncated bodies, and
responses slower than the timeout) from a misbehaving HTTP server on 127.0.0.1 (its own process), as a
user would: 2 processes x 32 threads, timeout 5 s, no retries, resize to 256 px on the longest side,
WebDataset shards (the same number for both tools), every image re-encoded as JPEG at quality 95 (both
tools' encoder is libjpeg-turbo through PIL or OpenCV, 4:2:0). Besides the rates it reports where the output
bytes go, per stored image: image, caption and metadata members, tar headers and padding, the tables beside
the tars (``output_sizes``), and how many images both stored byte for byte the same. img2dataset runs from its
own virtual environment (its pins differ from Beam's):

    python3 -m venv /tmp/i2d && /tmp/i2d/bin/pip install img2dataset
    python -m benchmarks.download --urls 3000 --shards 4 8 16 64 --img2dataset-python /tmp/i2d/bin/python
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import random
import subprocess
import sys
import time
from collections import Counter

from benchmarks.ingest import make_corpus
from benchmarks.output_sizes import KINDS, compare_images, output_bytes, stored_images
from benchmarks.rounds import interleaved, median_rate
from schemas.config import ConceptualCaptionsConfig, CorpusConfig, DownloadConfig, ImageConfig, TextConfig

TIMEOUT_S, RETRIES, PROCESSES, THREADS, SIZE = 5.0, 0, 2, 32, 256
I2D, OURS = "img2dataset", "unicorpus ingest"
URL_OF = {I2D: lambda meta: meta["url"], OURS: lambda meta: meta["meta"]["url"]}  # where each json holds the URL


def url_list(base: str, count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(caption, url) rows: ``count`` good images and ``count / 30`` bad URLs mixed in, a quarter of each
    kind: 404, HTML page, truncated body, and a body dripped slower than the timeout."""
    rng = random.Random(seed)
    rows = [(f"a ball number {i}", f"{base}/img/{i:08d}.jpg") for i in range(count)]
    kind = count // 120
    bad = ["status/404"] * kind + ["html/page"] * kind + \
          [f"truncated/{i:08d}.jpg" for i in range(kind)] + [f"slow/{i:08d}.jpg" for i in range(kind)]
    for path in bad:
        rows.insert(rng.randrange(len(rows)), ("a bad url", f"{base}/{path}"))
    return rows


def run_unicorpus(tsv_dir: str, out: str, shards: int, statuses: Counter) -> int:
    """The ingest stage; ``statuses`` gets the URL status counts of the run."""
    from pipelines.runner import RunnerConfig
    from pipelines.stages.ingest import run_ingest

    source = ConceptualCaptionsConfig(root=tsv_dir, images=None, shards=shards)
    config = CorpusConfig(out, {"cc": source}, ImageConfig(max_side=SIZE, encode="jpeg", jpeg_quality=95), TextConfig(),
                          DownloadConfig(threads=THREADS, timeout_s=TIMEOUT_S, retries=RETRIES))
    (result,) = run_ingest(config, ["cc"], RunnerConfig(workers=PROCESSES), overwrite=True, show_progress=False)
    import pyarrow.parquet as pq

    statuses.clear()
    statuses.update(s for path in glob.glob(os.path.join(out, "urls", "cc", "*.parquet"))
                    for s in pq.read_table(path, columns=["status"]).column("status").to_pylist())
    return result.counts.written


def run_img2dataset(python: str, tsv: str, out: str, per_shard: int) -> int:
    script = (
        "from img2dataset import download\n"
        f"download(url_list={tsv!r}, input_format='tsv', url_col='url', caption_col='caption',"
        f" output_format='webdataset', output_folder={out!r}, processes_count={PROCESSES},"
        f" thread_count={THREADS}, image_size={SIZE}, resize_mode='keep_ratio_largest', resize_only_if_bigger=True,"
        f" timeout={int(TIMEOUT_S)}, retries={RETRIES}, number_sample_per_shard={per_shard}, enable_wandb=False)\n"
    )
    subprocess.run([python, "-c", script], check=True, capture_output=True)
    return sum(json.load(open(path))["successes"] for path in glob.glob(os.path.join(out, "*_stats.json")))


def compare(shards: int, row_count: int, args, tsv_dir: str, i2d_tsv: str) -> tuple[list[str], list[str]]:
    """Both tools at one shard count, interleaved; a rate row and a size row each (printed at once too)."""
    outputs, statuses = {}, Counter()
    per_shard = math.ceil(row_count / shards)
    runs = {I2D: lambda out: run_img2dataset(args.img2dataset_python, i2d_tsv, out, per_shard),
            OURS: lambda out: run_unicorpus(tsv_dir, out, shards, statuses)}

    def measured(name):
        def contender(out):
            done = runs[name](out)
            outputs[name] = (output_bytes(out), stored_images(out, URL_OF[name]))  # before the next round's rmtree
            return done
        return contender

    results = interleaved({name: measured(name) for name in runs}, args.repeat, args.work)
    base = median_rate(results[I2D])
    rates = [f"| {shards} | {name} | {median_rate(rounds):.0f} | {median_rate(rounds) / base:.2f}x | "
             f"{', '.join(str(n) for n, _ in rounds)} |" for name, rounds in results.items()]
    sizes = size_rows(shards, outputs)
    print(*rates, *sizes, f"  unicorpus URL statuses: {dict(sorted(statuses.items()))}",
          same_images(outputs[OURS][1], outputs[I2D][1], os.path.join(args.work, "raw", "images")),
          sep="\n", flush=True)
    return rates, sizes


def same_images(ours: dict[str, bytes], theirs: dict[str, bytes], images_dir: str) -> str:
    """The images both tools stored, apart by whether the served original was resized (longest side over
    ``SIZE``): how many are byte for byte the same, and ours/theirs in bytes over the others."""
    from PIL import Image

    def resized(url: str) -> bool:
        with Image.open(os.path.join(images_dir, url.rsplit("/", 1)[1])) as image:
            return max(image.size) > SIZE

    common = set(ours) & set(theirs)
    parts = []
    for label, wanted in (("not resized", False), ("resized", True)):
        urls = {url for url in common if resized(url) == wanted}
        same = compare_images({u: ours[u] for u in urls}, {u: theirs[u] for u in urls})
        parts.append(f"{label}: {same['common']}, byte for byte the same {same['identical']}, the others "
                     f"{same['differing_ratio']:.3f}x img2dataset's bytes")
    return "  images both stored, " + "; ".join(parts)


def size_rows(shards: int, outputs: dict[str, tuple[dict, dict]]) -> list[str]:
    """Bytes per stored image by kind for each tool, the tars' MB, and a row of ratios (ours / theirs)."""
    per_image = {name: {kind: sizes[kind] / len(images) for kind in KINDS} for name, (sizes, images) in outputs.items()}
    tar_mb = {name: sum(sizes[k] for k in KINDS if k != "tables") / 1e6 for name, (sizes, _) in outputs.items()}
    rows = [f"| {shards} | {name} | {len(outputs[name][1])} | {' | '.join(f'{per_image[name][k]:.0f}' for k in KINDS)}"
            f" | {tar_mb[name]:.1f} |" for name in (I2D, OURS)]
    ratios = " | ".join(f"{per_image[OURS][k] / per_image[I2D][k]:.2f}x" if per_image[I2D][k] else "-" for k in KINDS)
    return rows + [f"| {shards} | ours / img2dataset | | {ratios} | {tar_mb[OURS] / tar_mb[I2D]:.2f}x |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--shards", type=int, nargs="+", default=[4, 8, 16, 64])
    parser.add_argument("--img2dataset-python", required=True)
    parser.add_argument("--work", default="/tmp/unicorpus-bench-download")
    args = parser.parse_args()

    raw = os.path.join(args.work, "raw")
    make_corpus(raw, args.urls)
    port_file = os.path.join(args.work, "port")
    if os.path.exists(port_file):
        os.remove(port_file)
    server = subprocess.Popen([sys.executable, "-m", "tests.http_server", os.path.join(raw, "images"), port_file])
    rates, sizes = [], []
    try:
        while not os.path.exists(port_file) or not open(port_file).read():
            time.sleep(0.1)
        rows = url_list(f"http://127.0.0.1:{open(port_file).read()}", args.urls)
        os.makedirs(os.path.join(args.work, "tsv"), exist_ok=True)
        with open(os.path.join(args.work, "tsv", "Train_GCC-training.tsv"), "w") as f:
            f.writelines(f"{c}\t{u}\n" for c, u in rows)
        i2d_tsv = os.path.join(args.work, "i2d.tsv")
        with open(i2d_tsv, "w") as f:
            f.write("caption\turl\n" + "".join(f"{c}\t{u}\n" for c, u in rows))
        for shards in args.shards:
            shard_rates, shard_sizes = compare(shards, len(rows), args, os.path.join(args.work, "tsv"), i2d_tsv)
            rates, sizes = rates + shard_rates, sizes + shard_sizes
    finally:
        server.terminate()
    print(f"{len(rows)} URLs ({args.urls} good), {PROCESSES} processes x {THREADS} threads, timeout {TIMEOUT_S} s, "
          f"{RETRIES} retries, median of {args.repeat} interleaved rounds")
    print("| shards | contender | images/s | vs img2dataset | successes |")
    print("|---:|---|---:|---:|---|")
    print("\n".join(rates))
    print("\nBytes per stored image (the last round's output):")
    print(f"| shards | contender | images | {' | '.join(KINDS)} | MB of tars |")
    print("|---:|---|---:|" + "---:|" * (len(KINDS) + 1))
    print("\n".join(sizes))


if __name__ == "__main__":
    main()
