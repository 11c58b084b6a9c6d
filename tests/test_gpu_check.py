"""``make gpu-check``: a clean exit where there is no GPU, and its comparisons run end to end (CPU dry run)."""

import os
import subprocess
import sys

from benchmarks.gpu_check import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_without_a_gpu_it_says_so_and_exits_cleanly():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "torch sees no CUDA GPU" in done.stdout and "nothing to check" in done.stdout


def test_dry_run_compares_every_component(capsys):
    assert main(["--device", "cpu", "--quick"]) == 0
    out = capsys.readouterr().out
    for name in ("detector", "embedder", "faiss", "training"):
        assert any(line.startswith(name) and " ok " in line for line in out.splitlines()), out
    assert "loss cpu fp32" in out and "cpu bf16" in out and "units/s" in out
