"""Curricula as plain functions of the trainer's counters (RECIPES.md "Curricula").

- Stagewise (VLMo §3.4: image-only, then text-only with the vision side frozen, then pairs; UNIMO-2 §3.1:
  pairs only for 20 epochs, then every corpus): each stage draws only the batch kinds over its tasks and
  lasts a number of steps or of epochs over its tasks; the last stage runs to the end.
- mu-VLA §3.4: after m epochs, the losses of the weakly aligned tasks are weighted per sample by the
  model's ITM match probability.

Epochs are counted from samples seen (summed over ranks) against the packed task sizes (``sizes.json``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass, field
from typing import Any

from schemas.config_errors import ConfigError
from training.config import CurriculumConfig, StageConfig


@dataclass
class Progress:
    """The counters a curriculum decides on; saved in every checkpoint."""

    step: int = 0                                        # optimizer steps done
    stage: int = 0                                       # index into curriculum.stages
    stage_start: int = 0                                 # step the current stage began at
    samples: dict[str, int] = field(default_factory=dict)        # samples seen per task, whole run
    stage_samples: dict[str, int] = field(default_factory=dict)  # ... since the current stage began

    def count(self, task: str, n: int) -> None:
        self.samples[task] = self.samples.get(task, 0) + n
        self.stage_samples[task] = self.stage_samples.get(task, 0) + n


def epochs(samples: dict[str, int], sizes: dict[str, int], tasks: list[str]) -> float:
    """Passes over ``tasks`` (together) that ``samples`` amount to."""
    total = sum(sizes.get(task, 0) for task in tasks)
    return sum(samples.get(task, 0) for task in tasks) / total if total else 0.0


def stage_tasks(stage: StageConfig, all_tasks: list[str]) -> list[str]:
    return list(stage.tasks) or list(all_tasks)


def stage_done(cfg: CurriculumConfig, progress: Progress, sizes: dict[str, int], all_tasks: list[str]) -> bool:
    """Whether the current stage has reached its length (never for the last stage)."""
    if progress.stage >= len(cfg.stages) - 1:
        return False
    stage = cfg.stages[progress.stage]
    if stage.steps is not None:
        return progress.step - progress.stage_start >= stage.steps
    return epochs(progress.stage_samples, sizes, stage_tasks(stage, all_tasks)) >= stage.epochs


def advance(progress: Progress) -> None:
    progress.stage += 1
    progress.stage_start = progress.step
    progress.stage_samples = {}


def stage_data(data_cfg: Any, cfg: CurriculumConfig, stage: int) -> Any:
    """The data config of a stage: only the batch kinds over the stage's tasks."""
    if not cfg.stages or not cfg.stages[stage].tasks:
        return data_cfg
    wanted = set(cfg.stages[stage].tasks)
    return dataclasses.replace(data_cfg, kinds=[k for k in data_cfg.kinds if k.task in wanted])


def frozen_names(cfg: CurriculumConfig, stage: int, names: list[str]) -> set[str]:
    """The parameter names a stage freezes (its ``freeze`` patterns, shell-style)."""
    patterns = cfg.stages[stage].freeze if cfg.stages else []
    return {name for name in names if any(fnmatch.fnmatchcase(name, p) for p in patterns)}


def check_freeze_patterns(cfg: CurriculumConfig, names: list[str]) -> None:
    """A pattern that matches no parameter is a typo that would silently train what should stay fixed."""
    for i, stage in enumerate(cfg.stages):
        for j, pattern in enumerate(stage.freeze):
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                raise ConfigError(f"curriculum.stages[{i}].freeze[{j}]: {pattern!r} matches no parameter "
                                  f"(names look like {names[0]!r}, {names[len(names) // 2]!r})")


def itm_weighting_on(cfg: CurriculumConfig, progress: Progress, sizes: dict[str, int], task: str) -> bool:
    """mu-VLA §3.4: weight this task's losses by the ITM score once m epochs over the weighted tasks are done."""
    weighting = cfg.itm_weighting
    if weighting is None or task not in weighting.tasks:
        return False
    return epochs(progress.samples, sizes, weighting.tasks) >= weighting.after_epochs
