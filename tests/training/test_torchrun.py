"""Two processes under ``torchrun`` (gloo on the CPU): a run killed with SIGKILL, resumed, logs the same
losses step for step as an uninterrupted run."""

import os
import subprocess
import sys
import time

import psutil
import pytest

from tests.training.train_fixture import last_rows, train_args, write_packed
from training.checkpoint import latest_checkpoint, read_meta
from training.loop import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 24


def _command(packed, out, *extra):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "cli.main", *train_args("muvla", packed, out, f"schedule.steps={STEPS}", "checkpoint.every=4",
                                          "checkpoint.keep=10", *extra)]


def _kill_tree(pid):
    """SIGKILL torchrun and its workers at once (torchrun puts its workers in sessions of their own, so a
    process-group kill would leave them running)."""
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def _env():
    return {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    return write_packed(str(tmp_path_factory.mktemp("packed")))


def test_killed_run_resumes_with_the_same_losses(packed, tmp_path):
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    done = subprocess.run(_command(packed, whole), env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"train: {STEPS} steps" in done.stdout
    assert read_meta(latest_checkpoint(os.path.join(whole, "checkpoints")))["world_size"] == 2

    # the same run, killed (torchrun and both workers, SIGKILL) once its first checkpoint is complete
    proc = subprocess.Popen(_command(packed, killed), env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while latest_checkpoint(os.path.join(killed, "checkpoints")) is None:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    _kill_tree(proc.pid)
    proc.wait()
    killed_at = read_meta(latest_checkpoint(os.path.join(killed, "checkpoints")))["step"]
    assert killed_at < STEPS

    resumed = subprocess.run(_command(packed, killed, "--resume"), env=_env(), cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    start = int(resumed.stdout.split("resumed at step ")[1].split(",")[0])
    assert start >= killed_at and start % 4 == 0 and start < STEPS

    expected, got = last_rows(read_metrics(whole)), last_rows(read_metrics(killed))
    assert sorted(got) == sorted(expected) == list(range(1, STEPS + 1))
    for step in range(start + 1, STEPS + 1):
        losses = {k: v for k, v in expected[step].items() if k.startswith(("loss/", "curriculum/"))}
        assert losses and {k: got[step][k] for k in losses} == losses, step
