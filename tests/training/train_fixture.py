"""Packed data and command lines for the trainer tests: every seed config in its ``--tiny`` form on packed
shards written per ``schemas/packed.py`` (``packed_fixture``)."""

from __future__ import annotations

import os

from tests.training.packed_fixture import REGION_CLASSES, REGION_DIM, write_task

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "training", "configs")
SEEDS = ("uniter", "unimo", "unimo2", "vlmo", "muvla")
TASKS = ("pairs", "images", "texts", "tag_pairs", "weak_pairs", "cmcl")


def write_packed(root: str, shards: int = 2, per_shard: int = 12) -> str:
    for task in TASKS:
        write_task(root, task, shards, per_shard)
    return root


def config_path(seed: str) -> str:
    return os.path.normpath(os.path.join(CONFIGS, f"{seed}.yaml"))


def train_args(seed: str, packed: str, output: str, *overrides: str) -> list[str]:
    """``unicorpus train`` arguments of a seed's tiny config on the fixture's shards (their region sizes)."""
    regions = [] if seed in ("unimo2", "vlmo") else [
        f"data.region_dim={REGION_DIM}", f"model.visual.region_feat_dim={REGION_DIM}",
        f"data.region_classes={REGION_CLASSES}", f"model.output_heads.region_classes={REGION_CLASSES}"]
    return ["train", "--config", config_path(seed), "--tiny", "--quiet", f"data.root={packed}",
            f"output={output}", *regions, *overrides]


def last_rows(rows: list[dict], kind: str = "train") -> dict[int, dict]:
    """The last metrics row of each step (a resumed run appends rows for steps a killed run had logged)."""
    return {row["step"]: row for row in rows if row["kind"] == kind}
