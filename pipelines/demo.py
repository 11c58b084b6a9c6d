"""The end-to-end demo: the mini corpus in every raw format (and a URL list served from a local HTTP
server), ingested, cleaned, and checked against what the generator planted."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

from pipelines.runner import RunnerConfig


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per request would drown the summary
        pass


@contextlib.contextmanager
def static_server(directory: str) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=directory))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_demo(out: str, seed: int, scale: int, runner: RunnerConfig, overwrite: bool, show_progress: bool) -> int:
    from pipelines.minicorpus import generate
    from pipelines.stages.clean import run_clean
    from pipelines.stages.ingest import run_ingest
    from pipelines.summary import format_clean_summary, format_summary
    from schemas.config import load_config

    with static_server(os.path.join(out, "datasets", "web")) as url_base:
        config_path = generate(out, seed=seed, scale=scale, url_base=url_base)
        print(f"mini corpus in every raw format under {out}/datasets (URL list served at {url_base}), "
              f"config {config_path}")
        config = load_config(config_path)
        ingested = run_ingest(config, list(config.sources), runner, overwrite=overwrite, show_progress=show_progress)
    print(format_summary(ingested))
    cleaned, duplicates, contaminations = run_clean(config)
    print(format_clean_summary(cleaned))
    print(f"corpus written to {config.output}")
    with open(os.path.join(os.path.dirname(config_path), "expected.json"), encoding="utf-8") as f:
        expected = json.load(f)
    problems = check_ingest(expected, ingested, config.output) + check_clean(expected["_clean"], duplicates,
                                                                          contaminations)
    for problem in problems:
        print(f"MISMATCH {problem}")
    print("all counts match the generator's ground truth" if not problems else f"{len(problems)} mismatches")
    return 1 if problems else 0


def check_ingest(expected: dict, results, root: str) -> list[str]:
    problems = []
    for result in results:
        want = expected[result.name]
        got = {"samples": result.counts.written, "rejects": dict(result.counts.rejected)}
        if got["samples"] != want["samples"] or got["rejects"] != want["rejects"]:
            problems.append(f"{result.name}: expected {want['samples']} samples, rejects {want['rejects']}; "
                            f"got {got['samples']}, {got['rejects']}")
        if "url_status" in want and url_statuses(root, result.name) != want["url_status"]:
            problems.append(f"{result.name}: URL statuses {url_statuses(root, result.name)}, "
                            f"expected {want['url_status']}")
    return problems


def url_statuses(root: str, source: str) -> dict[str, int]:
    """status -> number of URLs, over the source's download status tables."""
    import pyarrow.parquet as pq

    from pipelines import io as fsio

    counts: dict[str, int] = {}
    for path in fsio.glob(fsio.join(root, "raw", source, "*.urls.parquet")):
        with fsio.open_read(path) as f:
            for status in pq.read_table(f, columns=["status"]).column("status").to_pylist():
                counts[status] = counts.get(status, 0) + 1
    return counts


def check_clean(expected: dict, duplicates, contaminations) -> list[str]:
    """Duplicates and contamination must be exactly what the generator planted."""
    want = {(d["key"], d["duplicate_of"], d["kind"]) for d in expected["duplicates"]}
    got = {(d.key, d.duplicate_of, d.kind) for d in duplicates}
    problems = [f"planted duplicate not found: {k}" for k in sorted(want - got)]
    problems += [f"unexpected duplicate: {k}" for k in sorted(got - want)]
    want = {(c["key"], c["eval_set"], c["matched_by"]) for c in expected["contaminated"]}
    got = {(c.key, c.eval_set, c.matched_by) for c in contaminations}
    problems += [f"contaminated sample not found: {k}" for k in sorted(want - got)]
    problems += [f"unexpected contamination: {k}" for k in sorted(got - want)]
    return problems
