"""Streaming the packed shards (``schemas/packed.py``) into ``Batch``es: split, shuffled, mixed, resumable.

The pipeline, per batch kind's task, written as a list of stages in the manner of open_clip's
``get_wds_dataset``:

1. ``epoch_shards``: the task's shards, permuted from ``(seed, task, epoch)``;
2. split by node and worker: slot ``rank * workers + worker`` of ``world_size * workers`` takes every
   slot-th shard (or, when a task has fewer shards than slots, every slot-th sample of every shard);
3. ``tar_samples``: WebDataset's tar reader, one shard at a time, so an unreadable shard is attributed,
   warned about, counted in ``stats`` and skipped from its first bad byte on;
4. ``shuffle``: a sample buffer seeded from ``(seed, task, epoch, slot)``;
5. ``decode``: json, ``.npy`` members, WordPiece ids (bad samples counted and dropped);
6. chunks of ``sort_buffer`` samples cut into unit-budget batches (``batching.py``), in a seeded order;
7. ``collate.collate`` with the step's batch kind.

The kind of step ``s`` comes from ``(seed, s)`` (``batching.kind_for_step``), the same on every rank.
A corrupt shard only shortens its task's epoch; it never changes which kind a step trains, so the mixture
holds.

Exact resume: every stage above is a deterministic function of seeds, so a position is a handful of
counters. With ``W`` DataLoader workers, torch yields batches round-robin, so logical worker ``j`` makes
steps ``s = j (mod W)``; each batch carries its worker's cursors, and ``state_dict()`` keeps the cursors of
the last batch each worker handed out. A restored loader relabels its workers so that the first worker
makes the next step, and each stream fast-forwards: it re-reads the current epoch's raw samples up to the
chunk it was in (tar bytes only, nothing decoded), rebuilds that chunk and skips the batches already given.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from schemas import packed
from schemas.batch import Batch
from schemas.config_errors import ConfigError, choice, positive

log = logging.getLogger("unicorpus.training.data")

OBJECTIVES = ("mlm", "seq2seq", "mrfr", "mrc", "mrc_kl", "itm", "wra", "itc", "cmcl", "p_mrtc",
              "grounded_dictionary")
MASKING_OBJECTIVES = ("mlm", "seq2seq", "mrfr", "mrc", "mrc_kl", "p_mrtc")
MATCHING_OBJECTIVES = ("itm", "wra", "itc", "cmcl")
MLM_MODES = ("token", "span", "phrase")


@dataclass
class BatchKind:
    """One kind of batch: a packed task, the objectives trained on it, its mixing weight (UNITER §3.1:
    one task per mini-batch; UNIMO App. A: images : texts : pairs = 1 : 1 : 5)."""

    task: str
    objectives: list[str]
    weight: float = 1.0
    mlm_mode: Literal["token", "span", "phrase"] = "token"  # MLM: BERT tokens, UNIMO spans or whole phrases

    def validate(self, where: str) -> None:
        try:
            packed.required_fields(self.task)
        except ValueError as exc:
            raise ConfigError(f"{where}.task: {exc}") from None
        if not self.objectives:
            raise ConfigError(f"{where}.objectives: expected at least one of {list(OBJECTIVES)}")
        for i, name in enumerate(self.objectives):
            choice(name, OBJECTIVES, f"{where}.objectives[{i}]")
        masking = [o for o in self.objectives if o in MASKING_OBJECTIVES]
        matching = [o for o in self.objectives if o in MATCHING_OBJECTIVES]
        if masking and matching:
            raise ConfigError(f"{where}.objectives: {masking} corrupt the inputs that {matching} must see clean; "
                              "put them in separate batch kinds")
        if "seq2seq" in self.objectives and "mlm" in self.objectives:
            raise ConfigError(f"{where}.objectives: seq2seq and mlm build different inputs; use two kinds")
        if "p_mrtc" in self.objectives and self.task != packed.WEAK_PAIRS:
            raise ConfigError(f"{where}.objectives: p_mrtc needs the phrase-region links of task "
                              f"{packed.WEAK_PAIRS!r}, not {self.task!r}")
        if "cmcl" in self.objectives and self.task != packed.CMCL:
            raise ConfigError(f"{where}.objectives: cmcl needs task {packed.CMCL!r}, not {self.task!r}")
        if not self.weight > 0:
            raise ConfigError(f"{where}.weight: expected a positive number, got {self.weight}")
        choice(self.mlm_mode, MLM_MODES, f"{where}.mlm_mode")


def unimo_kinds() -> list[BatchKind]:
    """UNIMO App. A: images : texts : pairs = 1 : 1 : 5 (visual learning, language learning, both)."""
    return [BatchKind(packed.IMAGES, ["mrfr"], 1.0),
            BatchKind(packed.TEXTS, ["mlm"], 1.0, "span"),
            BatchKind(packed.PAIRS, ["mlm", "mrfr"], 5.0, "phrase")]


@dataclass
class MaskingConfig:
    """Rates of the masking recipes (RECIPES.md "Objectives")."""

    mask_prob: float = 0.15         # MLM budget (UNITER §3.2, UNIMO §2.3)
    span_p: float = 0.2             # UNIMO span length ~ Geo(0.2)
    span_max: int = 10              # SpanBERT's clip of the span length
    seq2seq_budget: float = 0.25    # UNIMO Seq2Seq fragments until 25% of the tokens
    fragment_min: int = 4           # fragment length ~ U(4, 32)
    fragment_max: int = 32
    region_prob: float = 0.15       # MRFR / MRC anchors
    anchor_iou: float = 0.3         # UNIMO: also mask regions with IoU > 0.3 with an anchor
    link_rate: float = 0.15         # mu-VLA R-P: share of phrase-region links masked (at least one)
    itm_negative_prob: float = 0.5  # UNITER ITM: half the pairs swapped
    max_phrase_tokens: int = 8      # p-MRTC targets per region

    def validate(self, where: str) -> None:
        for name in ("mask_prob", "span_p", "seq2seq_budget", "region_prob", "anchor_iou", "link_rate",
                     "itm_negative_prob"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ConfigError(f"{where}.{name}: expected a number in (0, 1], got {value}")
        for name in ("span_max", "fragment_min", "fragment_max", "max_phrase_tokens"):
            positive(getattr(self, name), f"{where}.{name}")
        if self.fragment_min > self.fragment_max:
            raise ConfigError(f"{where}.fragment_min: {self.fragment_min} exceeds fragment_max {self.fragment_max}")


@dataclass
class DataConfig:
    """Where the packed shards are and how they become batches (torchtitan-style nested config)."""

    root: str = "packed"                     # the corpus's packed/ folder (one sub-folder per task)
    kinds: list[BatchKind] = field(default_factory=unimo_kinds)
    seed: int = 0                            # shard order, sample shuffle, kinds, masking
    num_workers: int = 2                     # DataLoader workers per rank (0: in the main process)
    prefetch_factor: int = 2                 # batches each worker keeps ready
    shuffle_buffer: int = 1000               # samples in the shuffle buffer
    sort_buffer: int = 512                   # samples sorted by length before cutting batches (a batch
                                             # never spans two chunks: at most this many samples)
    unit_budget: int = 8192                  # padded units per batch (UNITER App. A.2)
    max_batch_size: int = 256
    max_text_len: int = 128                  # WordPiece tokens incl. [CLS]/[SEP] (UNIMO allows 512)
    max_regions: int = 100                   # UNIMO §3.2
    visual: Literal["regions", "patches"] = "regions"  # detector regions, or 224-px pixels for patch models
    location: Literal["uniter", "muvla"] = "uniter"     # 7-d UNITER or 5-d mu-VLA region location
    region_dim: int = 2048                   # D of region_feats.npy (ann/detect's feature size)
    region_classes: int = 1601               # C of region_probs.npy (the detector's classes)
    image_size: int = 224                    # UNIMO-2 / VLMo
    patch_size: int = 16
    tokenizer: str | None = None             # a BERT WordPiece folder; None: the MiniLM package's
    cmcl_max_positives: int = 8              # per anchor, back-translations + related texts + related images
    cmcl_max_negatives: int = 8              # per anchor, rewrites
    max_bad_run: int = 1000                  # this many unusable samples in a row stop the loader (with reasons)
    masking: MaskingConfig = field(default_factory=MaskingConfig)

    def validate(self, where: str = "data") -> None:
        if not self.kinds:
            raise ConfigError(f"{where}.kinds: expected at least one batch kind")
        for i, kind in enumerate(self.kinds):
            if isinstance(kind, dict):
                raise ConfigError(f"{where}.kinds[{i}]: expected a BatchKind, got a plain mapping")
            kind.validate(f"{where}.kinds[{i}]")
        if self.num_workers < 0:
            raise ConfigError(f"{where}.num_workers: expected 0 or more, got {self.num_workers}")
        for name in (
            "prefetch_factor",
            "shuffle_buffer",
            "sort_buffer",
            "unit_budget",
            "max_batch_size",
            "max_regions",
            "region_dim",
            "region_classes",
            "image_size",
            "patch_size",
            "cmcl_max_positives",
            "cmcl_max_negatives",
            "max_bad_run",
        ):
            positive(getattr(self, name), f"{where}.{name}")
        if self.max_text_len < 3:
            raise ConfigError(f"{where}.max_text_len: expected at least 3 ([CLS] token [SEP]), got {self.max_text_len}")
        choice(self.visual, ("regions", "patches"), f"{where}.visual")
        choice(self.location, ("uniter", "muvla"), f"{where}.location")
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"{where}.image_size: {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.visual == "patches":
            for i, kind in enumerate(self.kinds):
                region = [o for o in kind.objectives if o in ("mrfr", "mrc", "mrc_kl", "p_mrtc")]
                if region:
                    raise ConfigError(f"{where}.kinds[{i}].objectives: {region} need detector regions, "
                                      f"but {where}.visual is 'patches'")
        self.masking.validate(f"{where}.masking")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def task_dir(self, task: str) -> str:
        return os.path.join(self.root, task)


def task_shards(cfg: DataConfig, task: str) -> list[str]:
    """The task's shard files, sorted; a clear error when the folder has none."""
    folder = cfg.task_dir(task)
    shards = sorted(glob.glob(os.path.join(glob.escape(folder), "*.tar")))
    if not shards:
        raise FileNotFoundError(f"data.root: no shards of task {task!r} under {folder!r} "
                                f"(expected packed/{task}/NNNNN.tar written by `unicorpus pack`)")
    return shards


# ---------------------------------------------------------------- the stages of one task's stream

def _seed(*parts: Any) -> list[int]:
    """A seed sequence from ints and strings (strings hashed stably, never with ``hash()``)."""
    import zlib

    return [p if isinstance(p, int) else zlib.crc32(str(p).encode()) for p in parts]


def epoch_shards(shards: list[str], seed: int, task: str, epoch: int) -> list[str]:
    """Stage 1: the shards of one epoch in an order drawn from ``(seed, task, epoch)``."""
    order = np.random.default_rng(_seed(seed, task, epoch, "shards")).permutation(len(shards))
    return [shards[i] for i in order]


def split_shards(shards: list[str], slot: int, slots: int) -> tuple[list[str], bool]:
    """Stage 2: the shards of slot ``slot`` of ``slots`` (= rank * workers + worker); second value True
    when the task has fewer shards than slots and the slot must take every slot-th sample instead."""
    if len(shards) >= slots:
        return shards[slot::slots], False
    return shards, True


class ShardErrors:
    """Stage 3's exception handler: remembers the first error of the shard being read and stops it."""

    def __init__(self) -> None:
        self.error: Exception | None = None

    def __call__(self, exn: Exception) -> bool:
        if self.error is None:
            self.error = exn
        return False


def tar_samples(shard: str, errors: ShardErrors) -> Iterator[dict]:
    """Stage 3: the raw samples of one shard (WebDataset's own tar reader and key grouping)."""
    from webdataset.tariterators import tarfile_samples

    yield from tarfile_samples([{"url": shard}], handler=errors)


def shuffle(samples: Iterator[Any], buffer: int, rng: np.random.Generator) -> Iterator[Any]:
    """Stage 4: a seeded buffer shuffle (the generator is the only state, so a replay repeats it)."""
    pool: list[Any] = []
    for sample in samples:
        pool.append(sample)
        if len(pool) >= buffer:
            yield pool.pop(int(rng.integers(len(pool))))
    while pool:
        yield pool.pop(int(rng.integers(len(pool))))


def epoch_stream(cfg: DataConfig, task: str, shards: list[str], epoch: int, slot: int, slots: int,
                 on_corrupt: Callable[[str, Exception], None]) -> Iterator[dict]:
    """Stages 1-4 for one epoch of one slot: raw samples (member bytes), shuffled; every sample of the
    task lands in exactly one slot per epoch."""
    mine, by_sample = split_shards(epoch_shards(shards, cfg.seed, task, epoch), slot, slots)

    def samples() -> Iterator[dict]:
        index = 0
        for shard in mine:
            errors = ShardErrors()
            for sample in tar_samples(shard, errors):
                if not by_sample or index % slots == slot:
                    yield sample
                index += 1
            if errors.error is not None:
                on_corrupt(shard, errors.error)

    rng = np.random.default_rng(_seed(cfg.seed, task, epoch, slot, slots, "samples"))
    return shuffle(samples(), cfg.shuffle_buffer, rng)


@dataclass
class Cursor:
    """Where one task's stream of one logical worker stands (all it takes to resume exactly)."""

    epoch: int = 0
    chunk_start: int = 0   # raw shuffled samples of this epoch consumed by earlier chunks
    chunk_index: int = 0   # chunks begun this epoch
    emitted: int = 0       # batches of the current chunk already handed out
    epoch_good: int = 0    # usable samples in this epoch's chunks so far
    empty_epochs: int = 0  # consecutive epochs without one usable sample
    bad_run: int = 0       # consecutive unusable samples


def new_stats() -> dict[str, Any]:
    return {"samples": 0, "batches": 0, "bad_samples": 0, "corrupt_shards": 0, "corrupt": [],
            "bad_reasons": {}}


class TaskStream:
    """One task's batches for one (rank, logical worker) slot: stages 1-6, with a ``Cursor``."""

    MAX_EMPTY_EPOCHS = 10

    def __init__(self, cfg: DataConfig, task: str, slot: int, slots: int, cursor: Cursor,
                 stats: dict[str, Any], tokenizer: Any) -> None:
        self.cfg, self.task, self.slot, self.slots = cfg, task, slot, slots
        self.cursor, self.stats, self.tokenizer = cursor, stats, tokenizer
        self.shards = task_shards(cfg, task)
        self._raw: Iterator[dict] | None = None
        self._batches: list[list[Any]] | None = None

    def _epoch_stream(self, epoch: int) -> Iterator[dict]:
        return epoch_stream(self.cfg, self.task, self.shards, epoch, self.slot, self.slots,
                            lambda shard, error: self._corrupt(shard, epoch, error))

    def _corrupt(self, shard: str, epoch: int, error: Exception) -> None:
        name = f"{self.task}/{os.path.basename(shard)}@{epoch}"
        if name in self.stats["corrupt"]:  # seen again while fast-forwarding after a resume
            return
        self.stats["corrupt"].append(name)
        self.stats["corrupt_shards"] += 1
        log.warning("skipping the rest of unreadable shard %s (epoch %d): %s", shard, epoch, error)

    # stages 5-6
    def _load_chunk(self) -> None:
        from training.batching import unit_budget_batches
        from training.collate import Sample, decode_chunk, sample_units

        cursor = self.cursor
        while True:
            if self._raw is None:
                self._raw = self._epoch_stream(cursor.epoch)
                for _ in range(cursor.chunk_start):  # fast-forward: raw bytes only, nothing decoded
                    next(self._raw)
            raw = [s for _, s in zip(range(self.cfg.sort_buffer), self._raw, strict=False)]
            if raw:
                break
            cursor.empty_epochs = cursor.empty_epochs + 1 if cursor.epoch_good == 0 else 0
            if cursor.empty_epochs >= self.MAX_EMPTY_EPOCHS:
                raise RuntimeError(f"task {self.task!r}: no usable sample in {cursor.empty_epochs} epochs of slot "
                                   f"{self.slot}/{self.slots}; corrupt shards: {self.stats['corrupt']}, bad samples "
                                   f"by reason: {self.stats['bad_reasons']}")
            cursor.epoch, cursor.chunk_start, cursor.chunk_index, cursor.emitted = cursor.epoch + 1, 0, 0, 0
            cursor.epoch_good = 0
            self._raw = None
        self._chunk_size = len(raw)
        samples = []
        first_load = cursor.emitted == 0  # not a resumed stream rebuilding a chunk it had counted
        for item, decoded in zip(raw, decode_chunk(raw, self.task, self.cfg, self.tokenizer), strict=True):
            if isinstance(decoded, Sample):
                samples.append(decoded)
                if first_load:
                    cursor.bad_run = 0
            elif first_load:
                self.stats["bad_samples"] += 1
                reasons = self.stats["bad_reasons"]
                reasons[decoded.reason] = reasons.get(decoded.reason, 0) + 1
                log.warning("dropping sample %s of %s: %s", item.get("__key__"), item.get("__url__"), decoded)
                cursor.bad_run += 1
                if cursor.bad_run >= self.cfg.max_bad_run:
                    raise RuntimeError(f"task {self.task!r}: {cursor.bad_run} unusable samples in a row (last: "
                                       f"{decoded}); bad samples by reason: {reasons}. A config that does not "
                                       "match the shards (data.region_dim, data.region_classes) makes every sample bad")
        if first_load:
            cursor.epoch_good += len(samples)
        lengths = [sample_units(s, self.cfg) for s in samples]
        batches = unit_budget_batches(lengths, self.cfg.unit_budget, self.cfg.max_batch_size)
        rng = np.random.default_rng(_seed(self.cfg.seed, self.task, cursor.epoch, self.slot, self.slots,
                                          cursor.chunk_index, "batches"))
        self._batches = [[samples[i] for i in batches[j]] for j in rng.permutation(len(batches))]

    def next_batch(self) -> list[Any]:
        """The next unit-budget batch of decoded samples; epochs roll over forever."""
        while True:
            if self._batches is None:
                self._load_chunk()
            assert self._batches is not None
            if self.cursor.emitted < len(self._batches):
                batch = self._batches[self.cursor.emitted]
                self.cursor.emitted += 1
                return batch
            self.cursor.chunk_start += self._chunk_size
            self.cursor.chunk_index += 1
            self.cursor.emitted = 0
            self._batches = None


# ---------------------------------------------------------------- workers and the loader

def first_step(start: int, logical: int, workers: int) -> int:
    """The first step ``>= start`` that logical worker ``logical`` makes (``s = logical mod workers``)."""
    return start + (logical - start) % workers


class PackedDataset:
    """The per-worker producer (a torch ``IterableDataset`` once ``torch_dataset`` wraps it)."""

    def __init__(self, cfg: DataConfig, rank: int, world_size: int, start_step: int,
                 worker_states: dict[str, dict]) -> None:
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.start_step, self.worker_states = start_step, worker_states

    def batches(self, physical: int, workers: int) -> Iterator[Batch]:
        from training.batching import kind_for_step
        from training.collate import collate
        from training.tokenizer import load_tokenizer

        cfg = self.cfg
        logical = (physical + self.start_step) % workers
        state = self.worker_states.get(str(logical)) or {"cursors": {}, "stats": new_stats()}
        cursors = {task: Cursor(**c) for task, c in state["cursors"].items()}
        stats = json.loads(json.dumps(state["stats"]))
        tokenizer = load_tokenizer(cfg.tokenizer)
        slot, slots = self.rank * workers + logical, self.world_size * workers
        streams: dict[str, TaskStream] = {}
        weights = [k.weight for k in cfg.kinds]
        step = first_step(self.start_step, logical, workers)
        while True:
            kind = cfg.kinds[kind_for_step(weights, cfg.seed, step)]
            if kind.task not in streams:
                cursors.setdefault(kind.task, Cursor())
                streams[kind.task] = TaskStream(cfg, kind.task, slot, slots, cursors[kind.task], stats, tokenizer)
            samples = streams[kind.task].next_batch()
            epoch = cursors[kind.task].epoch
            rng = np.random.default_rng(_seed(cfg.seed, step, self.rank, "collate"))
            batch = collate(samples, kind, cfg, tokenizer, rng)
            batch.extra["epoch"] = epoch  # of the batch's task, in this rank's and worker's stream
            batch.objectives = tuple(kind.objectives)
            stats["samples"] += len(samples)
            stats["batches"] += 1
            batch.extra["loader"] = {"worker": logical, "step": step, "stats": json.loads(json.dumps(stats)),
                                     "cursors": {t: asdict(c) for t, c in cursors.items()}}
            yield batch
            step += workers


def torch_dataset(dataset: PackedDataset) -> Any:
    import torch.utils.data

    class _Iterable(torch.utils.data.IterableDataset):
        def __iter__(self) -> Iterator[Batch]:
            info = torch.utils.data.get_worker_info()
            return dataset.batches(info.id if info else 0, info.num_workers if info else 1)

    return _Iterable()


def _identity(batch: Batch) -> Batch:
    return batch


class PackedLoader:
    """An endless iterable of ``Batch`` for one rank, with ``state_dict()`` / ``load_state_dict()`` (the
    checkpoint keeps the data position, torchtitan-style) and ``stats`` (samples, batches, bad samples,
    corrupt shards, summed over workers). Iterating again continues where the last iteration stopped."""

    STATE_VERSION = 1

    def __init__(self, cfg: DataConfig, rank: int = 0, world_size: int = 1) -> None:
        cfg.validate("data")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        if cfg.max_batch_size > cfg.sort_buffer:
            log.warning("data.max_batch_size %d exceeds data.sort_buffer %d: batches are cut from one sorted "
                        "chunk, so none holds more than %d samples", cfg.max_batch_size, cfg.sort_buffer,
                        cfg.sort_buffer)
        self.step = 0
        self._workers: dict[str, dict] = {}

    @property
    def workers(self) -> int:
        return max(1, self.cfg.num_workers)

    def __iter__(self) -> Iterator[Batch]:
        import torch
        import torch.utils.data

        dataset = PackedDataset(self.cfg, self.rank, self.world_size, self.step, dict(self._workers))
        loader = torch.utils.data.DataLoader(
            torch_dataset(dataset), batch_size=None, collate_fn=_identity, num_workers=self.cfg.num_workers,
            prefetch_factor=self.cfg.prefetch_factor if self.cfg.num_workers else None,
            persistent_workers=False, generator=torch.Generator())  # never draws from the global generator
        for batch in loader:
            info = batch.extra.pop("loader")
            if info["step"] != self.step:
                raise RuntimeError(f"loader out of order: got step {info['step']}, expected {self.step}")
            self._workers[str(info["worker"])] = {"cursors": info["cursors"], "stats": info["stats"]}
            self.step += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"version": self.STATE_VERSION, "step": self.step, "rank": self.rank,
                "world_size": self.world_size, "workers": self.workers, "seed": self.cfg.seed,
                "kinds": [[k.task, list(k.objectives), k.weight] for k in self.cfg.kinds],
                "worker_states": json.loads(json.dumps(self._workers))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; the topology, seed and kinds must be the ones that wrote it."""
        mine = self.state_dict()
        for name in ("version", "rank", "world_size", "workers", "seed", "kinds"):
            if state.get(name) != mine[name]:
                raise ValueError(f"loader state: {name} was {state.get(name)!r} when saved, is {mine[name]!r} now; "
                                 "an exact resume needs the same data topology, seed and batch kinds")
        self.step = int(state["step"])
        self._workers = json.loads(json.dumps(state["worker_states"]))

    @property
    def stats(self) -> dict[str, Any]:
        total = new_stats()
        for state in self._workers.values():
            for name in ("samples", "batches", "bad_samples", "corrupt_shards"):
                total[name] += state["stats"][name]
            total["corrupt"].extend(state["stats"]["corrupt"])
            for reason, count in state["stats"]["bad_reasons"].items():
                total["bad_reasons"][reason] = total["bad_reasons"].get(reason, 0) + count
        total["corrupt"].sort()
        return total
