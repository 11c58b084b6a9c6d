"""Checkpoints that a killed run cannot corrupt and that resume exactly (torchtitan's checkpoint manager, simplified).

A checkpoint is a folder ``checkpoints/step-NNNNNNNN/`` with ``state.pt`` (model, optimizer, scheduler, the
trainer's own counters, the RNG states and the loader state of every rank) and ``meta.json`` (step, world
size, the packed-data digest, the model's parameter shapes: readable without torch). It is written under a
temporary name and renamed into place after ``meta.json``, the last file, is complete; resume only considers
folders named ``step-*`` that hold ``meta.json``, so a run killed mid-write leaves nothing resume would pick.

Resume refuses, with the reason, a checkpoint made on different packed data (the digest of every task's
``sizes.json`` and shard names and sizes) or for a model of another shape.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from typing import Any

from schemas.packed import SIZES_FILE

_NAME = re.compile(r"^step-(\d{8})$")
META = "meta.json"
STATE = "state.pt"


class ResumeError(ValueError):
    """A checkpoint that cannot continue this run (other data, other model shape, other world size): a bad
    request, not a failed run (the CLI exits 2 and says what differs)."""


def data_digest(packed_root: str, tasks: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """What identifies the packed data a run trains on, cheaply: per task, its ``sizes.json`` and every
    shard's name and byte size (no shard is read)."""
    per_task = {}
    for task in sorted(set(tasks)):
        folder = os.path.join(packed_root, task)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder}: no packed task {task!r} here (run `unicorpus pack` first)")
        shards = sorted(name for name in os.listdir(folder) if name.endswith(".tar"))
        sizes_path = os.path.join(folder, SIZES_FILE)
        sizes = {}
        if os.path.exists(sizes_path):
            with open(sizes_path, encoding="utf-8") as f:
                sizes = json.load(f)
        per_task[task] = {"shards": {name: os.path.getsize(os.path.join(folder, name)) for name in shards},
                          "sizes": sizes, "samples": sum(int(v) for v in sizes.values())}
    blob = json.dumps(per_task, sort_keys=True).encode()
    return {"sha256": hashlib.sha256(blob).hexdigest(),
            "tasks": {task: {"shards": len(v["shards"]), "samples": v["samples"]} for task, v in per_task.items()}}


def model_shapes(model) -> dict[str, list[int]]:
    return {name: list(tensor.shape) for name, tensor in model.state_dict().items()}


def rng_state(cuda: bool = True) -> dict[str, Any]:
    """This process's random generators: Python, NumPy, torch CPU and (``cuda``) every CUDA device."""
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if cuda and torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(directory: str, step: int) -> str:
    return os.path.join(directory, f"step-{step:08d}")


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """Complete checkpoints (``step-*`` with ``meta.json``), oldest first."""
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        match = _NAME.match(name)
        if match and os.path.exists(os.path.join(directory, name, META)):
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


def latest_checkpoint(directory: str) -> str | None:
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def save_checkpoint(directory: str, step: int, state: dict[str, Any], meta: dict[str, Any], keep: int) -> str:
    """Write ``state`` and ``meta`` as checkpoint ``step`` atomically, then keep only the newest ``keep``.
    Called on one rank (rank 0) with every rank's loader and RNG states already gathered into ``state``."""
    import torch

    os.makedirs(directory, exist_ok=True)
    final = checkpoint_path(directory, step)
    tmp = os.path.join(directory, f".tmp-step-{step:08d}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    with open(os.path.join(tmp, STATE), "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    _write_json(os.path.join(tmp, META), {**meta, "step": step})
    _fsync_dir(tmp)
    if os.path.exists(final):  # the same step written again (a resumed run re-saving): replace it whole
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(directory)
    for _, old in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for name in os.listdir(directory):  # leftovers of killed writers
        if name.startswith(".tmp-step-") and not name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    return final


def read_meta(path: str) -> dict[str, Any]:
    with open(os.path.join(path, META), encoding="utf-8") as f:
        return json.load(f)


def load_state(path: str, map_location: Any = "cpu") -> dict[str, Any]:
    import torch

    # Our own file, holding RNG states (NumPy's is a tuple with an array): not loadable with weights_only.
    return torch.load(os.path.join(path, STATE), map_location=map_location, weights_only=False)


def check_resumable(meta: dict[str, Any], digest: dict[str, Any], shapes: dict[str, list[int]],
                    world_size: int, path: str) -> None:
    """Refuse, naming the difference, to resume on other packed data, another model shape or world size."""
    if meta["data"]["sha256"] != digest["sha256"]:
        before, now = meta["data"]["tasks"], digest["tasks"]
        def show(info):
            return f"{info['shards']} shards, {info['samples']} samples" if info else "absent"

        diff = [f"{task}: {show(before.get(task))} -> {show(now.get(task))}" for task in sorted(set(before) | set(now))
                if before.get(task) != now.get(task)] or ["same counts, but shard names or sizes differ"]
        raise ResumeError(f"{path}: the checkpoint was made on different packed data ({'; '.join(diff)}); "
                          f"resume only on the data it was trained on, or start a new run (another output)")
    old = meta["model_shapes"]
    changed = [f"{name}: {old.get(name)} -> {shapes.get(name)}" for name in sorted(set(old) | set(shapes))
               if old.get(name) != shapes.get(name)]
    if changed:
        shown = "; ".join(changed[:5]) + (f"; and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise ResumeError(f"{path}: the model's shape changed since the checkpoint ({shown}); "
                          f"resume with the config it was trained with")
    if meta["world_size"] != world_size:
        raise ResumeError(f"{path}: the checkpoint holds the data position of {meta['world_size']} processes, "
                          f"this run has {world_size}; resume with the same number of processes")


def _write_json(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
