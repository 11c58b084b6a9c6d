"""``unicorpus train`` on the CPU: every seed config's tiny form, curricula, checkpoints, refusals."""

import glob
import math
import os
import shutil

import pytest
import torch

from cli.main import main
from tests.training.packed_fixture import write_task
from tests.training.train_fixture import SEEDS, last_rows, train_args, write_packed
from training.checkpoint import list_checkpoints, load_state, read_meta
from training.loop import read_metrics


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    return write_packed(str(tmp_path_factory.mktemp("packed")))


@pytest.mark.parametrize("seed", SEEDS)
def test_every_seed_config_trains_a_few_steps(seed, packed, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(train_args(seed, packed, out)) == 0
    summary = capsys.readouterr().out
    assert "train: 4 steps" in summary and "checkpoint:" in summary
    rows = last_rows(read_metrics(out))
    assert sorted(rows) == [1, 2, 3, 4]
    losses = {k: v for row in rows.values() for k, v in row.items() if k.startswith("loss/")}
    assert losses and all(math.isfinite(v) for v in losses.values())
    for key in losses:                                   # "loss/<task>/<objective>" per the seed's batch kinds
        assert key.count("/") == 2
    for row in rows.values():
        assert row["throughput/samples_per_s"] > 0 and row["throughput/units_per_s"] > 0
        assert 0 <= row["throughput/data_wait_fraction"] <= 1 and row["lr"] > 0
    assert [step for step, _ in list_checkpoints(os.path.join(out, "checkpoints"))] == [2, 4]
    meta = read_meta(os.path.join(out, "checkpoints", "step-00000004"))
    assert meta["paper"] and meta["world_size"] == 1 and meta["step"] == 4
    assert glob.glob(os.path.join(out, "tensorboard", "events.out.tfevents.*"))


def _params(path):
    return load_state(path)["model"]


def test_vlmo_stages_draw_their_tasks_and_freeze_the_vision_side(packed, tmp_path):
    """VLMo §3.4: the text-only stage (2 steps) trains on texts with attention and vision experts fixed."""
    out = str(tmp_path / "run")
    assert main(train_args("vlmo", packed, out, "checkpoint.every=1", "checkpoint.keep=10")) == 0
    rows = last_rows(read_metrics(out))
    for step in (1, 2):
        assert {k.split("/")[1] for k in rows[step] if k.startswith("loss/")} == {"texts"}
        assert rows[step]["curriculum/stage"] == 0
    assert {k.split("/")[1] for s in (3, 4) for k in rows[s] if k.startswith("loss/")} == {"pairs"}
    assert rows[4]["curriculum/stage"] == 1
    ckpt = os.path.join(out, "checkpoints", "step-{:08d}")
    one, two, four = (_params(ckpt.format(s)) for s in (1, 2, 4))
    frozen = [n for n in one if ".qkv." in n or ".ffn.v." in n or n.startswith("model.visual_embeddings.")]
    trained = [n for n in one if ".ffn.l." in n]
    assert frozen and trained
    for name in frozen:
        assert torch.equal(one[name], two[name]), name                 # stage 1: never moved
    assert any(not torch.equal(one[n], two[n]) for n in trained)       # ... while the language expert did
    assert any(not torch.equal(two[n], four[n]) for n in frozen)       # stage 2 trains them


def test_unimo2_pairs_first_then_all_corpora(packed, tmp_path):
    out = str(tmp_path / "run")
    assert main(train_args("unimo2", packed, out, "schedule.steps=8")) == 0
    rows = last_rows(read_metrics(out))
    first = {k.split("/")[1] for s in (1, 2) for k in rows[s] if k.startswith("loss/")}
    assert first == {"pairs"}
    assert rows[3]["curriculum/stage"] == 1


def test_muvla_weights_weak_pairs_by_itm_after_m_epochs(packed, tmp_path):
    """mu-VLA §3.4: no ITM weighting before m epochs of weak pairs (tiny: 0.2), per-pair ITM scores after."""
    out = str(tmp_path / "run")
    assert main(train_args("muvla", packed, out, "schedule.steps=8")) == 0
    rows = [last_rows(read_metrics(out))[s] for s in range(1, 9)]
    weak = [row for row in rows if any(k.startswith("loss/weak_pairs/") for k in row)]
    assert weak and "curriculum/w_itm" not in weak[0]         # the first weak-pairs batch: epoch 0 < m
    weighted = [row["curriculum/w_itm"] for row in rows if "curriculum/w_itm" in row]
    assert weighted and all(0 < w < 1 for w in weighted)
    assert all("curriculum/w_itm" not in row for row in rows if "loss/weak_pairs/mlm" not in row
               and "loss/weak_pairs/itm" not in row and "loss/weak_pairs/p_mrtc" not in row)


def test_resume_refuses_other_data_and_another_model_shape(packed, tmp_path, capsys):
    data = str(tmp_path / "packed")
    shutil.copytree(packed, data)
    out = str(tmp_path / "run")
    assert main(train_args("uniter", data, out, "schedule.steps=2")) == 0
    assert main(train_args("uniter", data, out, "schedule.steps=2", "model.intermediate=48", "--resume")) == 2
    assert "the model's shape changed since the checkpoint" in capsys.readouterr().err
    write_task(data, "pairs", 3, 12, seed=1)                  # repacked: 3 shards now
    assert main(train_args("uniter", data, out, "schedule.steps=4", "--resume")) == 2
    err = capsys.readouterr().err
    assert "different packed data (pairs: 2 shards, 24 samples -> 3 shards, 36 samples)" in err
    assert [s for s, _ in list_checkpoints(os.path.join(out, "checkpoints"))] == [2]   # nothing was trained


def test_resume_continues_from_the_latest_checkpoint(packed, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(train_args("uniter", packed, out)) == 0
    capsys.readouterr()
    assert main(train_args("uniter", packed, out, "--resume")) == 0                 # finished: nothing to do
    assert "resumed at step 4, 4 steps" in capsys.readouterr().out
    assert main(train_args("uniter", packed, out, "schedule.steps=6", "--resume")) == 0   # a longer run
    assert "resumed at step 4, 6 steps" in capsys.readouterr().out
    assert sorted(last_rows(read_metrics(out))) == [1, 2, 3, 4, 5, 6]
    assert main(train_args("uniter", packed, out)) == 0                             # no --resume: from scratch
    assert "resumed" not in capsys.readouterr().out


def test_a_bad_config_fails_before_any_step(packed, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(train_args("uniter", packed, out, "optim.lr=fast")) == 2
    assert "optim.lr: expected float, got str 'fast'" in capsys.readouterr().err
    assert main(train_args("uniter", packed, out, "data.kinds=[{task: pairs, objectives: [mlm, itm]}]")) == 2
    assert "data.kinds[0].objectives" in capsys.readouterr().err
    assert main(train_args("uniter", packed, out, "model.visual.region_feat_dim=16")) == 2
    assert "data.region_dim: 8 does not match model.visual.region_feat_dim 16" in capsys.readouterr().err
    assert not os.path.exists(out)


@pytest.mark.parametrize("head", ["itc", "itm"])
def test_zero_shot_retrieval_every_n_steps(packed, tmp_path, capsys, head):
    out = str(tmp_path / "run")
    assert main(train_args("uniter", packed, out, "eval.every=2", f"eval.head={head}")) == 0
    assert "eval (zero-shot retrieval): " in capsys.readouterr().out
    evals = last_rows(read_metrics(out), kind="eval")
    assert sorted(evals) == [2, 4]
    for row in evals.values():
        recalls = {k: v for k, v in row.items() if k.startswith("eval/")}
        assert {"eval/i2t_r1", "eval/t2i_r1", "eval/i2t_r10"} <= set(recalls)
        assert all(0 <= v <= 1 for v in recalls.values())
        assert row["eval/i2t_r1"] <= row["eval/i2t_r5"] <= row["eval/i2t_r10"]
