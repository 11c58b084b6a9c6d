"""What the trainer reports: per-task losses, learning rate, samples/s, input units/s, the fraction of time
spent waiting for data, and on GPUs the model FLOPs utilisation (MFU, PaLM App. B: 6 N FLOPs per input unit
for a forward and backward pass, attention ignored, against the chip's peak)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any

# Dense bf16 peak FLOP/s by device-name fragment (vendor data sheets).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
             "V100": 125e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "T4": 65e12}


def peak_flops(device) -> float | None:
    """The bf16 peak of a CUDA device, or None (CPU, unknown GPU): no MFU is reported then."""
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, peak in PEAK_BF16.items():
        if fragment in name:
            return peak
    return None


def model_flops_per_unit(model) -> float:
    """Training FLOPs per input unit (token, region or patch): 6 x trainable parameters."""
    return 6.0 * sum(p.numel() for p in model.parameters())


class Meter:
    """Sums over the steps between two log points; ``flush`` turns them into rates and means."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.losses: dict[str, list[float]] = defaultdict(list)   # "task/objective" -> per micro-batch
        self.values: dict[str, list[float]] = defaultdict(list)   # anything else to average ("curriculum/w_itm")
        self.samples = self.units = 0
        self.wait = self.elapsed = 0.0
        self.steps = 0

    def add_batch(self, task: str, losses: dict[str, float], samples: int, units: int) -> None:
        for name, value in losses.items():
            self.losses[f"{task}/{name}"].append(value)
        self.samples += samples
        self.units += units

    def add_value(self, key: str, value: float) -> None:
        self.values[key].append(value)

    def add_step(self, wait: float, elapsed: float) -> None:
        self.wait += wait
        self.elapsed += elapsed
        self.steps += 1

    def summary(self, flops_per_unit: float, peak: float | None, world_size: int) -> dict[str, float]:
        """Means and rates since the last reset (samples and units already summed over ranks)."""
        out = {f"loss/{key}": sum(v) / len(v) for key, v in sorted(self.losses.items())}
        out.update({key: sum(v) / len(v) for key, v in sorted(self.values.items())})
        seconds = max(self.elapsed, 1e-9)
        out["throughput/samples_per_s"] = self.samples / seconds
        out["throughput/units_per_s"] = self.units / seconds
        out["throughput/data_wait_fraction"] = self.wait / seconds
        if peak:
            out["throughput/mfu"] = flops_per_unit * self.units / seconds / (peak * world_size)
        return out


class Writer:
    """TensorBoard scalars plus a JSON-lines copy (``metrics.jsonl``) that tests and the demo read."""

    def __init__(self, log_dir: str, jsonl_path: str):
        from torch.utils.tensorboard import SummaryWriter

        os.makedirs(os.path.dirname(jsonl_path), exist_ok=True)
        self.tb = SummaryWriter(log_dir)
        self.jsonl = open(jsonl_path, "a", encoding="utf-8")

    def write(self, step: int, values: dict[str, Any], kind: str = "train") -> None:
        for key, value in values.items():
            self.tb.add_scalar(key, value, step)
        self.jsonl.write(json.dumps({"kind": kind, "step": step, **values}, sort_keys=True) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        self.tb.close()
        self.jsonl.close()
