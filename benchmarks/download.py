"""Downloading a URL list: unicorpus ingest vs img2dataset, on the same URLs from a local server.

Both fetch the same list (a few percent of it bad: 404s, HTML pages, truncated bodies, responses slower
than the timeout) from a misbehaving HTTP server on 127.0.0.1 (its own process), with the same number of
processes and threads, resize to 224 px on the longest side and write WebDataset shards. img2dataset
runs from its own virtual environment (its pins differ from Beam's):

    python3 -m venv /tmp/i2d && /tmp/i2d/bin/pip install img2dataset
    python -m benchmarks.download --urls 3000 --img2dataset-python /tmp/i2d/bin/python
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time

from benchmarks.ingest import make_corpus
from benchmarks.rounds import interleaved, median_rate
from schemas.config import ConceptualCaptionsConfig, CorpusConfig, DownloadConfig, ImageConfig, TextConfig

TIMEOUT_S, RETRIES, PROCESSES, THREADS, SIZE = 2.0, 1, 2, 16, 224


def url_list(base: str, count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(caption, url) rows: ``count`` good images and about 3 % bad URLs mixed in."""
    rng = random.Random(seed)
    rows = [(f"a ball number {i}", f"{base}/img/{i:08d}.jpg") for i in range(count)]
    bad = ["status/404"] * (count // 100) + ["html/page"] * (count // 100) + \
          [f"truncated/{i:08d}.jpg" for i in range(count // 200)] + [f"slow/{i:08d}.jpg" for i in range(count // 200)]
    for path in bad:
        rows.insert(rng.randrange(len(rows)), ("a bad url", f"{base}/{path}"))
    return rows


def run_unicorpus(tsv_dir: str, out: str) -> int:
    from pipelines.runner import RunnerConfig
    from pipelines.stages.ingest import run_ingest

    source = ConceptualCaptionsConfig(root=tsv_dir, images=None, shards=8)
    config = CorpusConfig(out, {"cc": source}, ImageConfig(max_side=SIZE, encode="jpeg", jpeg_quality=95), TextConfig(),
                          DownloadConfig(threads=THREADS, timeout_s=TIMEOUT_S, retries=RETRIES, backoff_s=0.1))
    (result,) = run_ingest(config, ["cc"], RunnerConfig(workers=PROCESSES), overwrite=True, show_progress=False)
    return result.counts.written


def run_img2dataset(python: str, tsv: str, out: str) -> int:
    script = (
        "from img2dataset import download\n"
        f"download(url_list={tsv!r}, input_format='tsv', url_col='url', caption_col='caption',"
        f" output_format='webdataset', output_folder={out!r}, processes_count={PROCESSES},"
        f" thread_count={THREADS}, image_size={SIZE}, resize_mode='keep_ratio_largest', resize_only_if_bigger=True,"
        f" timeout={int(TIMEOUT_S)}, retries={RETRIES}, number_sample_per_shard=400, enable_wandb=False)\n"
    )
    subprocess.run([python, "-c", script], check=True, capture_output=True)
    import glob
    import json

    return sum(json.load(open(path))["successes"] for path in glob.glob(os.path.join(out, "*_stats.json")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--img2dataset-python", required=True)
    parser.add_argument("--work", default="/tmp/unicorpus-bench-download")
    args = parser.parse_args()

    raw = os.path.join(args.work, "raw")
    make_corpus(raw, args.urls)
    port_file = os.path.join(args.work, "port")
    if os.path.exists(port_file):
        os.remove(port_file)
    server = subprocess.Popen([sys.executable, "-m", "tests.http_server", os.path.join(raw, "images"), port_file])
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
        contenders = {
            "img2dataset": lambda out: run_img2dataset(args.img2dataset_python, i2d_tsv, out),
            "unicorpus ingest": lambda out: run_unicorpus(os.path.join(args.work, "tsv"), out),
        }
        results = interleaved(contenders, args.repeat, args.work)
    finally:
        server.terminate()
    print(f"{len(rows)} URLs ({args.urls} good), {PROCESSES} processes x {THREADS} threads, timeout {TIMEOUT_S} s, "
          f"median of {args.repeat} interleaved rounds")
    base = median_rate(results["img2dataset"])
    for name, rounds in results.items():
        rate = median_rate(rounds)
        print(f"{name:20} {rate:8.0f} images/s  {rate / base:5.2f}x  successes {[n for n, _ in rounds]}")


if __name__ == "__main__":
    main()
