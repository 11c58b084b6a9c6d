"""Detect throughput: the detect annotator vs a plain ultralytics ``predict`` loop on the same images.

Both sides read the same JPEGs from one WebDataset tar by byte offset, decode them with PIL and run the
same random-weight YOLOv8n (pipelines.minicorpus.detector_model) in batches of the same size at the same
input size, confidence 0.2, at most 100 boxes. The annotator also keeps each box's class distribution,
pools a region feature per box and builds the sidecar rows; the loop keeps ultralytics' Results.
ultralytics' first ``predict`` sets torch's thread count to ``cores - 1``: every round sets it back to
``--threads`` for both sides. Besides wall-clock images/s (median of interleaved rounds) it reports
images per CPU-second, which other processes on a shared machine disturb less.

    python -m benchmarks.detect --images 64 --batch-size 16 --image-size 640 --repeat 2
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import tarfile
import time

from benchmarks.rounds import interleaved, median_rate
from schemas import layout

SIZES = ((640, 480), (480, 640), (512, 384), (640, 427))  # web-photo shapes (mixed: predict letterboxes square)


def make_shard(root: str, images: int, seed: int = 0):
    """``images`` mini-corpus pictures as JPEGs in ``raw/bench/00000.tar``; the ShardInput reading them."""
    from pipelines.minicorpus.scenes import draw, sample_scene
    from pipelines.sidecar_tables import ShardInput

    os.makedirs(os.path.join(root, layout.raw("bench")), exist_ok=True)
    path = os.path.join(root, layout.raw_tar("bench", 0))
    rng, rows = random.Random(seed), []
    with tarfile.open(path, "w") as tar:
        for i in range(images):
            buffer = io.BytesIO()
            draw(sample_scene(rng, SIZES[i % len(SIZES)])).save(buffer, format="JPEG", quality=90)
            data = buffer.getvalue()
            info = tarfile.TarInfo(f"bench-{i:06d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            rows.append({"key": f"bench-{i:06d}", "modality": "image", "meta": {}})
    with tarfile.open(path) as tar:
        for row, member in zip(rows, tar.getmembers(), strict=True):
            row["image_offset"], row["image_size"] = member.offset_data, member.size
    return ShardInput(root, "bench", 0, rows)


def plain_predict(model, shard, batch_size: int, image_size: int) -> int:
    """What a user would write first: decode, ``model.predict`` per batch."""
    from PIL import Image

    done = 0
    for start in range(0, len(shard.rows), batch_size):
        batch = [Image.open(io.BytesIO(shard.image_bytes(row))).convert("RGB")
                 for row in shard.rows[start:start + batch_size]]
        results = model.predict(batch, imgsz=image_size, conf=0.2, iou=0.7, max_det=100, batch=batch_size,
                                device="cpu", verbose=False)
        done += len(results)
    return done


def annotator(detector, shard, batch_size: int) -> int:
    from pipelines.annotators.detect import DetectSettings, annotate_images

    rows, rejects, _ = annotate_images(shard, DetectSettings("detector", batch_size, 0.2, 100), detector)
    assert not rejects
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=640)
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds; the median is reported")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--work", default="/tmp/unicorpus-bench-detect")
    args = parser.parse_args()

    from pipelines.annotators.detect import Detector, import_ultralytics
    from pipelines.minicorpus.detector_model import build_detector

    YOLO = import_ultralytics().YOLO
    import torch

    os.makedirs(args.work, exist_ok=True)
    weights = build_detector(os.path.join(args.work, "yolov8n-random.pt"), image_size=args.image_size)
    shard = make_shard(args.work, args.images)
    warm = make_shard(os.path.join(args.work, "warm"), args.batch_size, seed=1)
    model = YOLO(weights)
    detector = Detector(weights, args.image_size, "cpu", 0.2, 100, 0.7)
    detector.threads = args.threads  # it runs with its own fixed count (the process' CPUs unless told)
    plain_predict(model, warm, args.batch_size, args.image_size)  # predictor set-up, first-call costs
    annotator(detector, warm, args.batch_size)

    cpu_rates: dict[str, list[float]] = {}

    def contender(name, run):
        """Wall-clock rate from ``interleaved``; the CPU-time rate beside it (the machine is shared)."""
        def timed(_out: str) -> int:
            torch.set_num_threads(args.threads)
            started = time.process_time()
            done = run()
            cpu_rates.setdefault(name, []).append(done / (time.process_time() - started))
            return done
        return timed

    plain, ours = "plain YOLO.predict loop", "unicorpus detect annotator"
    contenders = {
        plain: contender(plain, lambda: plain_predict(model, shard, args.batch_size, args.image_size)),
        ours: contender(ours, lambda: annotator(detector, shard, args.batch_size)),
    }
    results = interleaved(contenders, args.repeat, args.work)
    for name, rounds in results.items():
        assert all(done == args.images for done, _ in rounds), f"{name}: {rounds}"
    base, base_cpu = median_rate(results[plain]), statistics.median(cpu_rates[plain])
    print(json.dumps({"images": args.images, "batch_size": args.batch_size, "image_size": args.image_size,
                      "threads": args.threads, "cores": os.cpu_count(), "repeat": args.repeat}))
    print(f"{'contender':28} {'images/s':>9} {'ratio':>6} {'per CPU-s':>9} {'ratio':>6}  wall rounds (images/s)")
    for name, rounds in results.items():
        rate, cpu = median_rate(rounds), statistics.median(cpu_rates[name])
        print(f"{name:28} {rate:9.2f} {rate / base:5.2f}x {cpu:9.2f} {cpu / base_cpu:5.2f}x  "
              f"{' '.join(f'{r:.2f}' for _, r in rounds)}")

if __name__ == "__main__":
    main()
