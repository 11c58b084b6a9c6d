import hashlib
import os
import socket

import pytest


@pytest.fixture(scope="session")
def mini_corpus(tmp_path_factory):
    """The generated mini corpus in every raw format: (config path, expected counts)."""
    import json

    from pipelines.minicorpus import generate

    config_path = generate(str(tmp_path_factory.mktemp("mini")), seed=0, scale=1)
    with open(os.path.join(os.path.dirname(config_path), "expected.json")) as f:
        return config_path, json.load(f)


@pytest.fixture(scope="session")
def ingested(mini_corpus, tmp_path_factory):
    """The mini corpus ingested once through the in-process DirectRunner: (config, expected, results)."""
    import dataclasses

    from pipelines.runner import RunnerConfig
    from pipelines.stages.ingest import run_ingest
    from schemas.config import load_config

    config_path, expected = mini_corpus
    config = dataclasses.replace(load_config(config_path), output=str(tmp_path_factory.mktemp("corpus")))
    results = run_ingest(config, list(config.sources), RunnerConfig(), show_progress=False)
    return config, expected, results


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """(config, printed output) of one `unicorpus demo` run: every stage on the mini corpus, once per session
    (the demo tests, the outside clients and the report page read it)."""
    import contextlib
    import io

    from cli.main import main
    from schemas.config import load_config

    out = tmp_path_factory.mktemp("demo")
    capture = io.StringIO()
    with contextlib.redirect_stdout(capture):
        assert main(["demo", "--out", str(out), "--quiet"]) == 0
    return load_config(str(out / "corpus.yaml")), capture.getvalue()


def tree_digest(root) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``."""
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process, timeout: float = 60) -> None:
    """Until something listens on 127.0.0.1:port; fails early if ``process`` died."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server exited with code {process.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")
