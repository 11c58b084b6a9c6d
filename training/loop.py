"""The training loop, meant to be read top to bottom in one sitting (nanoGPT's ``train.py``):
processes, data, model and objectives, optimizer, resume, then the step (forward per objective of the
batch's kind, weighted loss, backward over accumulated micro-batches, clip, step, schedule), logging,
evaluation and checkpoints. Everything else lives in the modules it calls.

One process, or many under ``torchrun`` (DDP; NCCL on GPUs, gloo on CPUs). bf16 autocast on CUDA.
Curricula: ``training.curriculum`` (UNIMO-2 §3.1, VLMo §3.4, mu-VLA §3.4).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from training import curriculum as cur
from training import distributed
from training.checkpoint import (
    check_resumable,
    data_digest,
    latest_checkpoint,
    load_state,
    model_shapes,
    read_meta,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from training.config import TrainConfig
from training.optim import build_optimizer, build_scheduler
from training.telemetry import Meter, Writer, model_flops_per_unit, peak_flops

METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainResult:
    steps: int                                            # optimizer steps done (the run's last step)
    resumed_from: int | None                              # the checkpoint step this run started from
    checkpoint: str | None                                # the last checkpoint written
    losses: dict[str, float] = field(default_factory=dict)  # "task/objective" -> mean of its last log window
    evaluations: list[dict[str, float]] = field(default_factory=list)


def train(cfg: TrainConfig, resume: bool = False, show_progress: bool = True) -> TrainResult:
    from training.data import PackedLoader

    # -- processes, device, precision ---------------------------------------------------------------------------
    env = distributed.setup(cfg.device)
    amp_on = cfg.amp == "bf16" or (cfg.amp == "auto" and env.device.type == "cuda")
    autocast = (lambda: torch.autocast(env.device.type, dtype=torch.bfloat16)) if amp_on else contextlib.nullcontext

    # -- model and objectives (same initial weights on every rank), optimizer, schedule -----------------------
    seed_all(cfg.seed)
    trainee = Trainee(cfg).to(env.device)
    cur.check_freeze_patterns(cfg.curriculum, [name for name, _ in trainee.named_parameters()])
    optimizer = build_optimizer(trainee, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule)
    all_tasks = sorted({kind.task for kind in cfg.data.kinds})
    digest = data_digest(packed_root(cfg.data), all_tasks)
    sizes = {task: info["samples"] for task, info in digest["tasks"].items()}
    progress, loader_state, resumed_from = cur.Progress(), None, None
    seed_all(cfg.seed + 1000 * env.rank)        # dropout and masking differ per rank

    # -- resume: the latest complete checkpoint, refused on other data or another model shape -----------------
    path = latest_checkpoint(cfg.checkpoint_dir) if resume else None
    if path is not None:
        check_resumable(read_meta(path), digest, model_shapes(trainee), env.world_size, path)
        state = load_state(path, map_location=env.device)
        trainee.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        progress = cur.Progress(**state["progress"])
        loader_state = state["loaders"][env.rank]
        set_rng_state(state["rng"][env.rank])
        resumed_from = progress.step
    model = trainee
    if env.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # Each batch kind trains a subset of the heads, hence find_unused_parameters.
        model = DistributedDataParallel(trainee, device_ids=[env.local_rank] if env.device.type == "cuda" else None,
                                        find_unused_parameters=True)

    # -- data: the current curriculum stage's batch kinds, at the saved position --------------------------------
    loader = PackedLoader(cur.stage_data(cfg.data, cfg.curriculum, progress.stage), rank=env.rank,
                          world_size=env.world_size)
    if loader_state is not None:
        loader.load_state_dict(loader_state)
    batches = iter(loader)

    # -- logging ------------------------------------------------------------------------------------------------
    writer = Writer(cfg.tensorboard_dir, os.path.join(cfg.output, METRICS_FILE)) if env.main else None
    meter, flops_per_unit, peak = Meter(), model_flops_per_unit(trainee), peak_flops(env.device)
    bar = progress_bar(cfg, progress.step, env.main and show_progress and cfg.log.progress)
    result = TrainResult(progress.step, resumed_from, path)
    parameters = [name for name, _ in trainee.named_parameters()]
    frozen = cur.frozen_names(cfg.curriculum, progress.stage, parameters)

    # -- the loop -----------------------------------------------------------------------------------------------
    while progress.step < cfg.schedule.steps:
        if cur.stage_done(cfg.curriculum, progress, sizes, all_tasks):       # next curriculum stage
            cur.advance(progress)
            frozen = cur.frozen_names(cfg.curriculum, progress.stage, parameters)
            loader = PackedLoader(cur.stage_data(cfg.data, cfg.curriculum, progress.stage), rank=env.rank,
                                  world_size=env.world_size)
            batches = iter(loader)
        started, wait = time.perf_counter(), 0.0
        for micro in range(cfg.optim.accumulate):
            t0 = time.perf_counter()
            with isolated_rng():            # whatever the loader draws (DataLoader seeds) leaves dropout's RNG alone
                batch = next(batches)
            batch = batch.to(env.device, non_blocking=True)
            wait += time.perf_counter() - t0
            if cur.itm_weighting_on(cfg.curriculum, progress, sizes, batch.task):   # mu-VLA §3.4
                batch.sample_weights = itm_weights(trainee, batch, autocast)
                meter.add_value("curriculum/w_itm", float(batch.sample_weights.mean()))
            last = micro == cfg.optim.accumulate - 1
            names = list(batch.objectives)
            with (contextlib.nullcontext() if last or not env.distributed else model.no_sync()), autocast():
                loss, metrics = model(batch, names)
                loss = loss * cfg.objectives.task_weights.get(batch.task, 1.0)
            (loss / cfg.optim.accumulate).backward()
            counts = [len(batch), batch.num_units(), *[metrics[f"{name}/loss"] for name in names]]
            counts = distributed.all_reduce_sum(torch.tensor(counts, dtype=torch.float64, device=env.device))
            progress.count(batch.task, int(counts[0]))
            meter.add_batch(
                batch.task,
                {name: float(v) / env.world_size for name, v in zip(names, counts[2:], strict=True)},
                int(counts[0]),
                int(counts[1]),
            )
        for name, param in trainee.named_parameters():               # VLMo §3.4: a frozen side does not move
            if name in frozen:
                param.grad = None
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainee.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        lr = optimizer.param_groups[0]["lr"]                          # the rate this step used
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        progress.step += 1
        meter.add_step(wait, time.perf_counter() - started)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", task=batch.task)

        if progress.step % cfg.log.every == 0 or progress.step == cfg.schedule.steps:
            summary = meter.summary(flops_per_unit, peak, env.world_size)
            summary["lr"] = lr
            summary["curriculum/stage"] = progress.stage
            result.losses.update({k.removeprefix("loss/"): v for k, v in summary.items() if k.startswith("loss/")})
            if writer is not None:
                writer.write(progress.step, summary)
            meter.reset()
        if cfg.eval.every and progress.step % cfg.eval.every == 0:
            scores = evaluate(trainee, cfg, env, autocast)
            result.evaluations.append({"step": progress.step, **scores})
            if writer is not None:
                writer.write(progress.step, {f"eval/{k}": v for k, v in scores.items()}, kind="eval")
        if progress.step % cfg.checkpoint.every == 0 or progress.step == cfg.schedule.steps:
            result.checkpoint = checkpoint(cfg, env, progress, trainee, optimizer, scheduler, loader, digest)

    # -- done ---------------------------------------------------------------------------------------------------
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    distributed.teardown()
    result.steps = progress.step
    return result


class Trainee(nn.Module):
    """The model and the objectives (whose heads have parameters too) as one module, so DDP, the optimizer and
    the checkpoint see every parameter; ``forward(batch, names)`` runs the batch kind's objectives and returns
    their weighted sum and metrics (``<objective>/loss`` ...)."""

    def __init__(self, cfg: TrainConfig):
        from training.model import build_model
        from training.objectives import build_objectives

        super().__init__()
        names = sorted({name for kind in cfg.data.kinds for name in kind.objectives})
        self.model = build_model(cfg.model)
        self.objectives = build_objectives({name: cfg.objectives.options.get(name) for name in names})
        self.weights = dict(cfg.objectives.weights)

    def forward(self, batch, names: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
        from training.objectives import run_objectives

        chosen = nn.ModuleDict({name: self.objectives[name] for name in names})
        return run_objectives(self.model, chosen, batch, self.weights)


def itm_weights(trainee, batch, autocast):
    """mu-VLA §3.4 w_ITM: the model's match probability for each (image, text) of the batch, no gradient."""
    with torch.no_grad(), autocast():
        model = trainee.model
        return model.itm_logits(model(batch)).float().softmax(-1)[:, 1].detach()


def evaluate(trainee, cfg: TrainConfig, env, autocast) -> dict[str, float]:
    """Zero-shot retrieval on ``cfg.eval.samples`` pairs, on rank 0; the other ranks wait."""
    from training.evaluate import zero_shot_retrieval

    scores: dict[str, float] = {}
    if env.main:
        trainee.eval()
        with torch.no_grad(), autocast():
            batches = [b.to(env.device) for b in eval_batches(cfg)]
            scores = {k: float(v) for k, v in zero_shot_retrieval(trainee.model, batches, head=cfg.eval.head).items()}
        trainee.train()
    distributed.barrier()
    return scores


def eval_batches(cfg: TrainConfig) -> list:
    """The first ``eval.samples`` pairs of ``eval.task`` (a fixed seed: the same pool at every evaluation),
    collated clean (an ``itc`` kind: no masking, no swapped pairs)."""
    from training.data import BatchKind, PackedLoader

    data = dataclasses.replace(cfg.data, root=cfg.eval.root or cfg.data.root, seed=0, num_workers=0,
                               kinds=[BatchKind(cfg.eval.task, ["itc"])],
                               max_batch_size=min(cfg.data.max_batch_size, cfg.eval.batch_size))
    batches, seen = [], set()
    for batch in PackedLoader(data):
        keep = [i for i, key in enumerate(batch.keys) if key not in seen]
        if len(keep) < len(batch) or len(seen) + len(batch) > cfg.eval.samples:
            break                                   # an epoch came round, or the pool is full
        seen.update(batch.keys)
        batches.append(batch)
    if not batches:
        raise ValueError(f"eval: no batch of task {cfg.eval.task!r} fits eval.samples={cfg.eval.samples}")
    return batches


def checkpoint(cfg, env, progress, trainee, optimizer, scheduler, loader, digest) -> str | None:
    """Gather every rank's loader and RNG state, write on rank 0 (atomically), wait for it everywhere."""
    loaders = distributed.gather_objects(loader.state_dict())
    rngs = distributed.gather_objects(rng_state())
    path = None
    if env.main:
        state = {"model": trainee.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "progress": dataclasses.asdict(progress),
                 "loaders": loaders, "rng": rngs}
        meta = {"world_size": env.world_size, "data": digest, "model_shapes": model_shapes(trainee),
                "paper": cfg.paper, "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str))}
        path = save_checkpoint(cfg.checkpoint_dir, progress.step, state, meta, cfg.checkpoint.keep)
    distributed.barrier()
    return path


def packed_root(data_cfg) -> str:
    return data_cfg.root


@contextlib.contextmanager
def isolated_rng():
    """Run the block without touching this process's generators. Creating a DataLoader iterator draws from
    torch's generator; a resumed run creates it at another step than an uninterrupted one, so without this
    their dropout masks would differ from the first step after the resume. (The loader never draws on CUDA.)"""
    state = rng_state(cuda=False)
    try:
        yield
    finally:
        set_rng_state(state)


def seed_all(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def progress_bar(cfg: TrainConfig, start: int, show: bool) -> Any:
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.schedule.steps, initial=start, desc="train", unit="step", dynamic_ncols=True)


def read_metrics(output: str) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (every log point of every attempt, resumed ones appended)."""
    path = os.path.join(output, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
