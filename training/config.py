"""The trainer's config: one YAML file -> nested, validated dataclasses (torchtitan style).

Sections: ``model`` (``training.model.ModelConfig``), ``data`` (``training.data.DataConfig``, with the batch
kinds), ``objectives`` (loss weights and options), ``optim``, ``schedule``, ``checkpoint``, ``log``,
``eval``, ``curriculum``. A bad config fails before any step with the dotted key that is wrong
(``optim.lr: expected float, got str 'fast'``), like the corpus config (``schemas/config.py``).

A seed config may carry a ``tiny:`` mapping of overrides that makes it run on a CPU in seconds; ``--tiny``
applies it. Command-line overrides ``dotted.key=value`` (value parsed as YAML) apply last.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas import layout
from schemas.config_build import build, fields_of, path_field
from schemas.config_errors import ConfigError, positive, validate_sections
from training.data import DataConfig
from training.model.config import ModelConfig

TINY_KEY = "tiny"


@dataclass
class ObjectivesConfig:
    """Loss weights. A batch's loss is ``task_weights[task] * sum(weights[o] * loss_o)`` over the objectives
    of its batch kind (missing names weigh 1). ``options`` are keyword arguments of each objective."""

    weights: dict[str, float] = field(default_factory=dict)
    task_weights: dict[str, float] = field(default_factory=dict)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self, where: str) -> None:
        for name, table in (("weights", self.weights), ("task_weights", self.task_weights)):
            for key, value in table.items():
                if value < 0:
                    raise ConfigError(f"{where}.{name}.{key}: a loss weight is >= 0, got {value}")


@dataclass
class OptimConfig:
    """AdamW; norms, biases and embeddings-of-position style 1-d parameters get no weight decay."""

    lr: float = 1e-4                       # the peak learning rate (after warm-up)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.01
    grad_clip: float = 1.0                 # max global grad norm; 0 = no clipping
    accumulate: int = 1                    # micro-batches per optimizer step (gradient accumulation)

    def validate(self, where: str) -> None:
        if self.lr <= 0:
            raise ConfigError(f"{where}.lr: expected a positive learning rate, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{where}.betas: expected two numbers in [0, 1), got {self.betas}")
        if self.eps <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError(f"{where}: eps must be > 0, weight_decay and grad_clip >= 0")
        positive(self.accumulate, f"{where}.accumulate")


@dataclass
class ScheduleConfig:
    """Linear warm-up to the peak, then decay to ``min_lr_ratio`` x peak at ``steps``."""

    steps: int = 1000                      # optimizer steps of the whole run
    warmup_steps: int | None = None        # either a number of steps ...
    warmup_ratio: float | None = None      # ... or a fraction of ``steps`` (mu-VLA: 10%)
    decay: Literal["linear", "cosine", "constant"] = "linear"
    min_lr_ratio: float = 0.0

    def validate(self, where: str) -> None:
        positive(self.steps, f"{where}.steps")
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ConfigError(f"{where}: give warmup_steps or warmup_ratio, not both")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps <= self.steps:
            raise ConfigError(f"{where}.warmup_steps: expected 0..steps ({self.steps}), got {self.warmup_steps}")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio <= 1:
            raise ConfigError(f"{where}.warmup_ratio: expected 0..1, got {self.warmup_ratio}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"{where}.min_lr_ratio: expected 0..1, got {self.min_lr_ratio}")

    @property
    def warmup(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return round((self.warmup_ratio or 0.0) * self.steps)


@dataclass
class CheckpointConfig:
    every: int = 1000                      # optimizer steps between checkpoints (and one at the end)
    keep: int = 3                          # newest checkpoints kept; older ones are deleted

    def validate(self, where: str) -> None:
        positive(self.every, f"{where}.every")
        positive(self.keep, f"{where}.keep")


@dataclass
class LogConfig:
    every: int = 10                        # optimizer steps between TensorBoard points
    progress: bool = True                  # tqdm bar on rank 0

    def validate(self, where: str) -> None:
        positive(self.every, f"{where}.every")


@dataclass
class EvalConfig:
    """Zero-shot retrieval on a held-out packed task, every ``every`` steps (0 = never)."""

    every: int = 0
    task: str = "pairs"                    # the packed task whose samples are the retrieval pool
    root: str | None = path_field(None)    # packed/ folder of the eval data (default: the training data's)
    samples: int = 100                     # the pool size (images = texts)
    batch_size: int = 32
    head: Literal["itc", "itm"] = "itc"

    def validate(self, where: str) -> None:
        if self.every < 0:
            raise ConfigError(f"{where}.every: expected >= 0, got {self.every}")
        positive(self.samples, f"{where}.samples")
        positive(self.batch_size, f"{where}.batch_size")


@dataclass
class StageConfig:
    """One stage of a stagewise curriculum: only the batch kinds over ``tasks`` are drawn; parameters whose
    name matches a ``freeze`` pattern (shell-style, e.g. ``model.*.attention.*``) do not move (VLMo §3.4:
    text-only with the attention and vision experts frozen)."""

    name: str
    tasks: list[str] = field(default_factory=list)   # packed tasks of this stage; empty = every kind
    steps: int | None = None                         # stage length in optimizer steps ...
    epochs: float | None = None                      # ... or in epochs over its tasks (UNIMO-2 §3.1)
    freeze: list[str] = field(default_factory=list)  # fnmatch patterns over Trainee parameter names

    def validate(self, where: str) -> None:
        if self.steps is not None and self.epochs is not None:
            raise ConfigError(f"{where}: give steps or epochs, not both")
        if self.steps is None and self.epochs is None:
            raise ConfigError(f"{where}: give its length, steps or epochs (only the last stage may omit it)")
        positive(self.steps, f"{where}.steps")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"{where}.epochs: expected > 0, got {self.epochs}")


@dataclass
class ItmWeightingConfig:
    """mu-VLA §3.4: after ``after_epochs`` (m = 1) epochs over ``tasks``, the losses of their batches are
    weighted per sample by the model's own ITM match probability (``Batch.sample_weights``)."""

    tasks: list[str] = field(default_factory=lambda: ["weak_pairs"])
    after_epochs: float = 1.0

    def validate(self, where: str) -> None:
        if self.after_epochs < 0:
            raise ConfigError(f"{where}.after_epochs: expected >= 0, got {self.after_epochs}")
        if not self.tasks:
            raise ConfigError(f"{where}.tasks: name at least one packed task")


@dataclass
class CurriculumConfig:
    """Stages run in order; the last one runs to ``schedule.steps`` (its own length is then optional)."""

    stages: list[StageConfig] = field(default_factory=list)
    itm_weighting: ItmWeightingConfig | None = None

    def validate(self, where: str) -> None:
        for i, stage in enumerate(self.stages):
            last = i == len(self.stages) - 1
            if not (last and stage.steps is None and stage.epochs is None):
                stage.validate(f"{where}.stages[{i}]")
        if self.itm_weighting is not None:
            self.itm_weighting.validate(f"{where}.itm_weighting")


@dataclass
class TrainConfig:
    model: ModelConfig
    data: DataConfig
    output: str = path_field("runs/train")  # checkpoints/ and tensorboard/ go here
    paper: str = ""                        # which paper's recipe this config follows (documentation)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "bf16", "off"] = "auto"     # auto = bf16 autocast on CUDA, off on the CPU
    objectives: ObjectivesConfig = field(default_factory=ObjectivesConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.output, layout.CHECKPOINTS)

    @property
    def tensorboard_dir(self) -> str:
        return os.path.join(self.output, "tensorboard")


def load_train_config(path: str, tiny: bool = False, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a trainer YAML, apply its ``tiny:`` overrides (``tiny``) and ``dotted.key=value`` overrides,
    validate everything. Relative paths are taken from the file's folder."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    try:
        return parse_train_config(data, os.path.dirname(os.path.abspath(path)), tiny, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def parse_train_config(data: Any, base_dir: str, tiny: bool = False,
                       overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top, got {type(data).__name__}")
    data = copy.deepcopy(data)
    tiny_overrides = data.pop(TINY_KEY, None)
    if tiny:
        if not isinstance(tiny_overrides, dict):
            raise ConfigError(f"{TINY_KEY}: --tiny needs a `{TINY_KEY}:` mapping of overrides in the config")
        for key, value in _flatten(tiny_overrides):
            _set_dotted(data, key, value, f"{TINY_KEY}.{key}")
    path_keys = {key for key, f, _ in fields_of(TrainConfig) if f.metadata.get("path")}
    for item in overrides:
        key, value = _parse_override(item)
        if key in path_keys and isinstance(value, str) and "://" not in value:
            value = os.path.abspath(value)  # typed by a user: relative to where they are, not to the file
        _set_dotted(data, key, value, key)
    config = build(TrainConfig, data, "", base_dir)
    validate_sections(config, "")
    check_consistency(config)
    return config


def check_consistency(config: TrainConfig) -> None:
    """Cross-section checks: every objective named anywhere exists, every task a stage names has a kind."""
    from training.objectives import OBJECTIVES

    kinds = list(getattr(config.data, "kinds", []) or [])
    tasks = {kind.task for kind in kinds}
    for i, kind in enumerate(kinds):
        for name in kind.objectives:
            if name not in OBJECTIVES:
                raise ConfigError(f"data.kinds[{i}].objectives: unknown objective {name!r} "
                                  f"(have: {', '.join(sorted(OBJECTIVES))})")
    for table in ("weights", "options"):
        for name in getattr(config.objectives, table):
            if name not in OBJECTIVES:
                raise ConfigError(f"objectives.{table}.{name}: unknown objective "
                                  f"(have: {', '.join(sorted(OBJECTIVES))})")
    for task in config.objectives.task_weights:
        if task not in tasks:
            raise ConfigError(f"objectives.task_weights.{task}: no batch kind trains on task {task!r} "
                              f"(data.kinds have: {', '.join(sorted(tasks))})")
    for i, stage in enumerate(config.curriculum.stages):
        for task in stage.tasks:
            if task not in tasks:
                raise ConfigError(f"curriculum.stages[{i}].tasks: no batch kind trains on task {task!r} "
                                  f"(data.kinds have: {', '.join(sorted(tasks))})")
    _check_model_matches_data(config.model, config.data)
    weighting = config.curriculum.itm_weighting
    if weighting is not None:
        if "itm" not in {name for kind in kinds for name in kind.objectives}:
            raise ConfigError("curriculum.itm_weighting: needs a batch kind that trains `itm` (mu-VLA §3.4)")
        for task in weighting.tasks:
            if task not in tasks:
                raise ConfigError(f"curriculum.itm_weighting.tasks: no batch kind trains on task {task!r}")


def _check_model_matches_data(model: Any, data: Any) -> None:
    """What the collator produces must be what the model embeds: one config, no surprise at step 1."""
    pairs = [("data.visual", data.visual, "model.visual.kind", model.visual.kind)]
    if data.visual == "regions":
        pairs += [("data.region_dim", data.region_dim, "model.visual.region_feat_dim", model.visual.region_feat_dim),
                  ("data.location", {"uniter": 7, "muvla": 5}[data.location], "model.visual.region_loc_dim",
                   model.visual.region_loc_dim),
                  ("data.region_classes", data.region_classes, "model.output_heads.region_classes",
                   model.output_heads.region_classes)]
    else:
        pairs += [("data.image_size", data.image_size, "model.visual.image_size", model.visual.image_size),
                  ("data.patch_size", data.patch_size, "model.visual.patch_size", model.visual.patch_size)]
    for data_key, data_value, model_key, model_value in pairs:
        if data_value != model_value:
            raise ConfigError(f"{data_key}: {data_value!r} does not match {model_key} {model_value!r}")
    if data.max_text_len > model.max_text_len:
        raise ConfigError(f"data.max_text_len: {data.max_text_len} exceeds model.max_text_len {model.max_text_len}")


def _flatten(mapping: dict, prefix: str = ""):
    """``{"a": {"b": 1}}`` -> ``("a.b", 1)``; a list or scalar is a leaf (replaced whole)."""
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{dotted}.")
        else:
            yield dotted, value


def _parse_override(item: str) -> tuple[str, Any]:
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"{item}: an override is dotted.key=value")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"{key}: the override's value is not valid YAML: {e}") from e


def _set_dotted(data: dict, key: str, value: Any, where: str) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value
