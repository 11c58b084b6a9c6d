"""Checkpoints: atomic folders, what resume picks, the packed-data digest and the refusals."""

import json
import os
import random

import numpy as np
import pytest
import torch

from training.checkpoint import (
    ResumeError,
    check_resumable,
    data_digest,
    latest_checkpoint,
    list_checkpoints,
    load_state,
    read_meta,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def _packed(root, task, shards):
    folder = os.path.join(root, task)
    os.makedirs(folder, exist_ok=True)
    for name, (size, _count) in shards.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"x" * size)
    with open(os.path.join(folder, "sizes.json"), "w") as f:
        json.dump({name: count for name, (_, count) in shards.items()}, f)


def test_digest_follows_sizes_and_shards(tmp_path):
    root = str(tmp_path)
    _packed(root, "pairs", {"00000.tar": (100, 3), "00001.tar": (50, 2)})
    _packed(root, "texts", {"00000.tar": (10, 1)})
    first = data_digest(root, ["pairs", "texts"])
    assert first["tasks"] == {"pairs": {"shards": 2, "samples": 5}, "texts": {"shards": 1, "samples": 1}}
    assert data_digest(root, ["texts", "pairs", "pairs"]) == first          # order and repeats do not matter
    with open(os.path.join(root, "pairs", "00001.tar"), "ab") as f:         # a repacked shard of another size
        f.write(b"y")
    assert data_digest(root, ["pairs", "texts"])["sha256"] != first["sha256"]
    with pytest.raises(FileNotFoundError, match="no packed task 'images'"):
        data_digest(root, ["images"])


def test_atomic_save_latest_and_keep(tmp_path):
    directory = str(tmp_path / "ckpt")
    for step in (2, 4, 6):
        save_checkpoint(directory, step, {"w": torch.full((2,), float(step))}, {"world_size": 1}, keep=2)
    assert [s for s, _ in list_checkpoints(directory)] == [4, 6]
    # what a writer killed mid-way leaves: a temporary folder, and a step folder without meta.json
    os.makedirs(os.path.join(directory, ".tmp-step-00000008-999999"))
    os.makedirs(os.path.join(directory, "step-00000010"))
    torch.save({"w": torch.zeros(2)}, os.path.join(directory, "step-00000010", "state.pt"))
    latest = latest_checkpoint(directory)
    assert latest.endswith("step-00000006")
    assert read_meta(latest) == {"world_size": 1, "step": 6}
    assert torch.equal(load_state(latest)["w"], torch.full((2,), 6.0))
    # the next save cleans the dead writer's temporary folder
    save_checkpoint(directory, 12, {"w": torch.zeros(1)}, {"world_size": 1}, keep=2)
    assert not any(n.startswith(".tmp-") for n in os.listdir(directory))
    assert latest_checkpoint(str(tmp_path / "nothing")) is None


def test_resume_refusals_name_the_difference(tmp_path):
    root = str(tmp_path)
    _packed(root, "pairs", {"00000.tar": (100, 3)})
    digest = data_digest(root, ["pairs"])
    shapes = {"encoder.weight": [4, 4], "head.bias": [2]}
    meta = {"data": digest, "model_shapes": shapes, "world_size": 2}
    check_resumable(meta, digest, shapes, 2, "ckpt")                        # the same run: fine
    _packed(root, "pairs", {"00000.tar": (100, 3), "00001.tar": (40, 4)})
    with pytest.raises(
        ResumeError, match=r"different packed data \(pairs: 1 shards, 3 samples -> 2 shards, 7 samples\)"
    ):
        check_resumable(meta, data_digest(root, ["pairs"]), shapes, 2, "ckpt")
    with pytest.raises(ResumeError, match=r"shape changed .*encoder.weight: \[4, 4\] -> \[8, 4\]"):
        check_resumable(meta, digest, {**shapes, "encoder.weight": [8, 4]}, 2, "ckpt")
    with pytest.raises(ResumeError, match="2 processes, this run has 1"):
        check_resumable(meta, digest, shapes, 1, "ckpt")


def test_rng_states_round_trip():
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(3)
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
