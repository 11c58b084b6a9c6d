"""The packed-shard loader: split, mixing, exact resume, corrupt shards, config errors."""

from __future__ import annotations

import json
import logging
from collections import Counter

import numpy as np
import pytest

from schemas import packed
from schemas.config_errors import ConfigError
from tests.training.packed_fixture import REGION_CLASSES, REGION_DIM, garble, truncate, write_task
from training.batching import kind_for_step
from training.data import BatchKind, DataConfig, MaskingConfig, PackedLoader, epoch_stream, task_shards


def config(root, kinds, **overrides) -> DataConfig:
    values = dict(root=str(root), kinds=kinds, num_workers=0, region_dim=REGION_DIM, region_classes=REGION_CLASSES,
                  unit_budget=400, sort_buffer=10, shuffle_buffer=6, seed=3)
    values.update(overrides)
    return DataConfig(**values)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """pairs: 5 shards x 9 samples (more shards than 4 slots); texts: 3 x 7 (fewer); images: 4 x 6."""
    root = tmp_path_factory.mktemp("packed")
    keys = {packed.PAIRS: write_task(str(root), packed.PAIRS, 5, 9),
            packed.TEXTS: write_task(str(root), packed.TEXTS, 3, 7),
            packed.IMAGES: write_task(str(root), packed.IMAGES, 4, 6)}
    return root, keys


def take(loader: PackedLoader, steps: int) -> list:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == steps:
            break
    return out


def fingerprint(batch) -> dict:
    """Everything a batch carries, comparable with ==."""
    out = {"task": batch.task, "keys": list(batch.keys), "epoch": batch.extra["epoch"]}
    for name, tensor in batch.tensors().items():
        out[name] = tensor.numpy().tolist()
    return out


def test_plain_webdataset_reads_the_fixture_with_every_required_field(shards):
    import webdataset as wds

    root, keys = shards
    for task, expected in keys.items():
        urls = task_shards(config(root, [BatchKind(task, ["mlm"] if task != packed.IMAGES else ["mrfr"])]), task)
        seen = []
        for sample in wds.WebDataset(urls, shardshuffle=False):
            meta = json.loads(sample["json"])
            assert packed.missing_fields(task, meta) == []
            seen.append(sample["__key__"])
        assert seen == expected


@pytest.mark.parametrize("task", [packed.PAIRS, packed.TEXTS])
def test_split_by_node_and_worker_covers_every_sample_once_per_epoch(shards, task):
    """2 ranks x 2 workers = 4 slots; pairs has 5 shards (split by shard), texts 3 (split by sample)."""
    root, keys = shards
    cfg = config(root, [BatchKind(task, ["mlm"])])
    files = task_shards(cfg, task)
    for epoch in (0, 1):
        seen = Counter()
        orders = []
        for slot in range(4):
            slot_keys = [s["__key__"] for s in epoch_stream(cfg, task, files, epoch, slot, 4, None)]
            seen.update(slot_keys)
            orders.append(slot_keys)
        assert seen == Counter(keys[task])
        assert all(orders), "every slot gets samples"
        if epoch == 0:
            first = orders
    assert first != orders, "the epoch reshuffles"


def test_loader_with_two_ranks_and_two_workers_yields_each_sample_once_in_epoch_zero(shards):
    root, keys = shards
    cfg = config(root, [BatchKind(packed.PAIRS, ["mlm"])], num_workers=2)
    seen = Counter()
    for rank in (0, 1):
        loader = PackedLoader(cfg, rank=rank, world_size=2)
        done = {0: False, 1: False}
        for step, batch in enumerate(loader):
            if batch.extra["epoch"] == 0:
                seen.update(batch.keys)
            else:
                done[step % 2] = True
            if all(done.values()):
                break
    assert seen == Counter(keys[packed.PAIRS])


def test_every_rank_trains_the_same_kind_at_each_step_and_the_mixture_holds(shards):
    root, _ = shards
    kinds = [BatchKind(packed.IMAGES, ["mrfr"], 1), BatchKind(packed.TEXTS, ["mlm"], 1),
             BatchKind(packed.PAIRS, ["mlm", "mrfr"], 5)]
    cfg = config(root, kinds, num_workers=0)
    steps = 120
    tasks = [[b.task for b in take(PackedLoader(cfg, rank=r, world_size=2), steps)] for r in (0, 1)]
    assert tasks[0] == tasks[1]
    assert tasks[0] == [kinds[kind_for_step([1, 1, 5], cfg.seed, s)].task for s in range(steps)]
    # the generator's proportions over many steps: 1 : 1 : 5 within 4 standard deviations
    draws = Counter(kind_for_step([1, 1, 5], 11, s) for s in range(20000))
    for index, share in enumerate((1 / 7, 1 / 7, 5 / 7)):
        sd = np.sqrt(20000 * share * (1 - share))
        assert abs(draws[index] - 20000 * share) < 4 * sd


@pytest.mark.parametrize("workers", [0, 2])
def test_a_restored_loader_continues_exactly(shards, workers):
    """Two ranks, cut at several points (mid-chunk, across epochs); the state goes through JSON."""
    root, _ = shards
    kinds = [BatchKind(packed.TEXTS, ["mlm"], 1, "span"), BatchKind(packed.PAIRS, ["mlm", "mrfr"], 2, "phrase"),
             BatchKind(packed.IMAGES, ["mrfr", "mrc"], 1)]
    cfg = config(root, kinds, num_workers=workers)
    total = 26
    for rank in (0, 1):
        reference = PackedLoader(cfg, rank=rank, world_size=2)
        expected = [fingerprint(b) for b in take(reference, total)]
        assert max(e["epoch"] for e in expected) >= 1, "the run crosses an epoch boundary"
        for cut in (1, 7, 16):
            first = PackedLoader(cfg, rank=rank, world_size=2)
            head = [fingerprint(b) for b in take(first, cut)]
            state = json.loads(json.dumps(first.state_dict()))
            restored = PackedLoader(cfg, rank=rank, world_size=2)
            restored.load_state_dict(state)
            tail = [fingerprint(b) for b in take(restored, total - cut)]
            assert head + tail == expected, f"rank {rank}, cut at {cut}"
            assert restored.stats["samples"] == reference.stats["samples"]


def test_iterating_again_continues_where_the_last_loop_stopped(shards):
    root, _ = shards
    cfg = config(root, [BatchKind(packed.PAIRS, ["mlm"])])
    expected = [b.keys for b in take(PackedLoader(cfg), 6)]
    loader = PackedLoader(cfg)
    assert [b.keys for b in take(loader, 2)] + [b.keys for b in take(loader, 4)] == expected


def test_a_state_from_another_topology_is_refused(shards):
    root, _ = shards
    cfg = config(root, [BatchKind(packed.PAIRS, ["mlm"])])
    loader = PackedLoader(cfg, rank=0, world_size=2)
    take(loader, 2)
    other = PackedLoader(config(root, [BatchKind(packed.PAIRS, ["mlm"])], num_workers=3), rank=0, world_size=2)
    with pytest.raises(ValueError, match="workers was 1 when saved, is 3 now"):
        other.load_state_dict(loader.state_dict())


def test_corrupt_and_truncated_shards_are_skipped_counted_and_leave_the_mixture_alone(tmp_path, caplog):
    write_task(str(tmp_path), packed.PAIRS, 4, 8)
    texts = write_task(str(tmp_path), packed.TEXTS, 2, 10)
    garble(str(tmp_path / packed.PAIRS / "00001.tar"))
    truncate(str(tmp_path / packed.PAIRS / "00002.tar"), 0.5)
    kinds = [BatchKind(packed.PAIRS, ["mlm"], 3), BatchKind(packed.TEXTS, ["mlm"], 1)]
    cfg = config(tmp_path, kinds, sort_buffer=64, unit_budget=10_000)
    loader = PackedLoader(cfg)
    with caplog.at_level(logging.WARNING, logger="unicorpus.training.data"):
        batches = take(loader, 60)
    stats = loader.stats
    epochs = {b.extra["epoch"] for b in batches if b.task == packed.PAIRS}
    assert stats["corrupt_shards"] == 2 * len(epochs)
    assert any("00001.tar" in name for name in stats["corrupt"])
    assert any("00002.tar" in name for name in stats["corrupt"])
    assert any("unreadable shard" in r.getMessage() for r in caplog.records)
    pairs_epoch0 = {k for b in batches if b.task == packed.PAIRS and b.extra["epoch"] == 0 for k in b.keys}
    assert not any(k.startswith("pairs-00001") for k in pairs_epoch0)
    assert {k for k in pairs_epoch0 if k.startswith("pairs-00000")} == {f"pairs-00000-{i:04d}" for i in range(8)}
    truncated = {k for k in pairs_epoch0 if k.startswith("pairs-00002")}
    assert 0 < len(truncated) < 8, "the truncated shard gives the samples before the cut"
    assert [b.task for b in batches] == [kinds[kind_for_step([3, 1], cfg.seed, s)].task for s in range(60)]
    assert {k for b in batches if b.task == packed.TEXTS for k in b.keys} == set(texts)
    # a resume across the corrupt shards continues exactly and counts each of them once
    first = PackedLoader(cfg)
    take(first, 25)
    restored = PackedLoader(cfg)
    restored.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert [fingerprint(b) for b in take(restored, 35)] == [fingerprint(b) for b in batches[25:]]
    assert restored.stats == stats


def test_a_sample_missing_a_member_is_dropped_and_counted(tmp_path):
    import webdataset as wds

    from tests.training.packed_fixture import make_sample

    folder = tmp_path / packed.PAIRS
    folder.mkdir()
    rng = np.random.default_rng(0)
    with wds.TarWriter(str(folder / "00000.tar"), mtime=0) as sink:
        for i in range(6):
            sample = make_sample(packed.PAIRS, f"k{i}", rng)
            if i == 2:
                del sample["txt"]
            if i == 4:
                meta = json.loads(sample["json"])
                del meta["phrases"]
                sample["json"] = json.dumps(meta).encode()
            sink.write(sample)
    loader = PackedLoader(config(tmp_path, [BatchKind(packed.PAIRS, ["mlm"])], unit_budget=10_000))
    batches = take(loader, 3)
    assert {k for b in batches for k in b.keys} == {"k0", "k1", "k3", "k5"}
    epochs = len({b.extra["epoch"] for b in batches})
    assert epochs == 3, "the whole shard fits one batch, so each batch is an epoch"
    assert loader.stats["bad_reasons"] == {"no_txt": epochs, "missing_fields": epochs}  # once per reading
    assert loader.stats["bad_samples"] == 2 * epochs


def test_config_errors_name_the_dotted_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.kinds\[0\]\.objectives\[1\]"):
        DataConfig(kinds=[BatchKind(packed.PAIRS, ["mlm", "nope"])]).validate()
    with pytest.raises(ConfigError, match=r"data\.kinds\[0\]\.objectives: \['mlm'\] corrupt"):
        DataConfig(kinds=[BatchKind(packed.PAIRS, ["mlm", "itm"])]).validate()
    with pytest.raises(ConfigError, match=r"data\.kinds\[1\]\.task"):
        DataConfig(kinds=[BatchKind(packed.PAIRS, ["mlm"]), BatchKind("pears", ["mlm"])]).validate()
    with pytest.raises(ConfigError, match=r"data\.kinds\[0\]\.objectives: p_mrtc needs"):
        DataConfig(kinds=[BatchKind(packed.PAIRS, ["p_mrtc"])]).validate()
    with pytest.raises(ConfigError, match=r"data\.masking\.mask_prob"):
        DataConfig(masking=MaskingConfig(mask_prob=0)).validate()
    with pytest.raises(ConfigError, match=r"data\.kinds\[0\]\.objectives: \['mrfr'\] need detector regions"):
        DataConfig(visual="patches").validate()
    with pytest.raises(FileNotFoundError, match="no shards of task 'pairs'"):
        take(PackedLoader(config(tmp_path, [BatchKind(packed.PAIRS, ["mlm"])])), 1)


def test_the_loader_leaves_the_global_generators_alone(shards):
    """The trainer's dropout draws from torch's generator; a resumed run must not see the loader in it."""
    import random

    import torch

    root, _ = shards
    cfg = config(root, [BatchKind(packed.PAIRS, ["mlm", "mrfr"])], num_workers=2)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    take(PackedLoader(cfg), 3)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert random.getstate() == before[1]
    assert (np.random.get_state()[1] == before[2]).all()


def test_every_task_streams_with_the_targets_its_objectives_need(tmp_path):
    aligned = packed.aligned_task(50)
    for task in (packed.PAIRS, packed.IMAGES, packed.TEXTS, packed.TAG_PAIRS, packed.WEAK_PAIRS, packed.CMCL,
                 aligned):
        write_task(str(tmp_path), task, 2, 6)
    needs = {  # (task, objectives, mlm_mode) -> Batch fields that must be set
        (packed.IMAGES, ("mrfr", "mrc"), "token"): ("region_masked", "region_feat_targets", "region_class_targets"),
        (packed.TEXTS, ("seq2seq",), "token"): ("lm_labels", "attention_pattern"),
        (packed.TEXTS, ("mlm",), "span"): ("mlm_labels",),
        (packed.PAIRS, ("itm", "wra"), "token"): ("itm_labels",),
        (packed.TAG_PAIRS, ("mlm",), "token"): ("mlm_labels",),
        (packed.WEAK_PAIRS, ("p_mrtc",), "token"): ("region_masked", "region_token_targets"),
        (packed.CMCL, ("cmcl",), "token"): ("positives", "negatives"),
        (aligned, ("itc",), "token"): ("input_ids", "region_feats"),
    }
    kinds = [BatchKind(task, list(objectives), 1, mode) for task, objectives, mode in needs]
    loader = PackedLoader(config(tmp_path, kinds, unit_budget=2000))
    seen = set()
    for batch in take(loader, 60):
        key = (
            batch.task,
            batch.objectives,
            next(
                k.mlm_mode
                for k in kinds
                if k.task == batch.task and tuple(k.objectives) == batch.objectives
            ),
        )
        seen.add(key)
        for name in needs[key]:
            assert getattr(batch, name) is not None, f"{key} lacks {name}"
        assert batch.input_ids.shape[0] == len(batch) == batch.region_feats.shape[0]
    assert seen == set(needs)
    assert loader.stats["bad_samples"] == 0 and loader.stats["corrupt_shards"] == 0


def test_a_task_with_nothing_usable_stops_with_the_reasons(tmp_path):
    write_task(str(tmp_path), packed.PAIRS, 2, 6)
    wrong_dim = config(tmp_path, [BatchKind(packed.PAIRS, ["mlm"])], region_dim=REGION_DIM * 2, max_bad_run=5)
    with pytest.raises(RuntimeError, match=r"5 unusable samples in a row .*region_shape.*data\.region_dim"):
        take(PackedLoader(wrong_dim), 1)
    for shard in ("00000.tar", "00001.tar"):
        garble(str(tmp_path / packed.PAIRS / shard))
    with pytest.raises(RuntimeError, match=r"no usable sample in 10 epochs .*00000\.tar@0"):
        take(PackedLoader(config(tmp_path, [BatchKind(packed.PAIRS, ["mlm"])])), 1)
