"""Service latency: ``unicorpus serve`` under a fixed request rate on loopback vs the same queries called
in-process (``QueryEngine.search``, no HTTP), on the mini corpus indexed with MiniLM.

Open loop: request i is due at ``start + i / rate`` whatever happened before, and its latency counts from
that due time, so a slow answer that delays the next requests shows up in their latency too (no
coordinated omission). A fixed number of requests (rate x seconds), sent by a pool of client threads.

    python -m benchmarks.service --rate 50 --seconds 20 --repeat 2
    python -m benchmarks.service --threads 0     # torch's default thread count instead of 1
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

QUERIES = ["a red ball on the grass", "a yellow sun above a car", "two kites in a blue sky", "a house next to a tree",
           "an orange tent on the sand", "a white box", "a car on the road", "a green tree and a pink ball",
           "the children walked past the tents", "a small kite", "three things under a gray sky", "a blue house"]


def open_loop(call, rate: float, seconds: float, clients: int) -> tuple[list[float], list[str]]:
    """Latencies (s, from each request's due time) of the successful calls and the errors of the others."""
    total = int(rate * seconds)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = time.perf_counter() + 0.2

    def one(i: int) -> None:
        due = start + i / rate
        time.sleep(max(0.0, due - time.perf_counter()))
        try:
            call(QUERIES[i % len(QUERIES)])
        except Exception as e:  # counted and reported: an error is a result of this benchmark
            with lock:
                errors.append(f"{type(e).__name__}: {e}")
            return
        with lock:
            latencies.append(time.perf_counter() - due)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(total)))
    return latencies, errors


class HttpClient:
    """One keep-alive connection per client thread."""

    def __init__(self, port: int):
        self.port, self.local = port, threading.local()

    def __call__(self, query: str) -> None:
        if not hasattr(self.local, "connection"):
            self.local.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.local.connection.request("GET", "/api/search?" + urlencode({"q": query, "k": 10}))
        response = self.local.connection.getresponse()
        body = response.read()
        if response.status != 200 or not json.loads(body)["results"]:
            raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_corpus(work: str, threads: int | None) -> tuple[object, str]:
    """The mini corpus ingested and indexed like the tests' served corpus, ``retrieval.serve.threads`` set:
    (config, YAML path)."""
    import yaml

    from pipelines.minicorpus import generate
    from pipelines.runner import RunnerConfig
    from pipelines.stages.ingest import run_ingest
    from schemas.config import load_config
    from pipelines.minicorpus.served import build, write_config

    mini = generate(os.path.join(work, "mini"), seed=0, scale=1)
    config = dataclasses.replace(load_config(mini), output=os.path.join(work, "ingested"))
    run_ingest(config, list(config.sources), RunnerConfig(), show_progress=False)
    config, _ = build(config, os.path.join(work, "served"))
    serve = dataclasses.replace(config.retrieval.serve, threads=threads)
    config = dataclasses.replace(config, retrieval=dataclasses.replace(config.retrieval, serve=serve))
    path = write_config(mini, config)
    with open(path) as f:
        data = yaml.safe_load(f)
    data["retrieval"]["serve"] = {"threads": threads}
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return config, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50, help="requests per second")
    parser.add_argument("--seconds", type=float, default=20, help="per contender and round")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--clients", type=int, default=16, help="client threads")
    parser.add_argument("--threads", type=int, default=1, help="retrieval.serve.threads (0: torch's default)")
    parser.add_argument("--work", help="folder for the corpus (default: a temporary one)")
    args = parser.parse_args()

    from retrieval.query import QueryEngine
    from tests.conftest import free_port, wait_for_port

    work = args.work or tempfile.mkdtemp(prefix="bench-service-")
    config, path = build_corpus(work, args.threads or None)
    engine = QueryEngine(config)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--config", path, "--port", str(port)],
                              stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port, server, timeout=300)
        contenders = {"in-process QueryEngine.search": lambda q: engine.search(text=q, k=10),
                      "HTTP GET /api/search (loopback)": HttpClient(port)}
        for call in contenders.values():  # unmeasured warm-up: a fresh model's first calls are slow
            for query in QUERIES * 2:
                call(query)
        results: dict[str, tuple[list[float], list[str]]] = {name: ([], []) for name in contenders}
        for _ in range(args.repeat):
            for name, call in contenders.items():
                latencies, errors = open_loop(call, args.rate, args.seconds, args.clients)
                results[name][0].extend(latencies)
                results[name][1].extend(errors)
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"{args.rate:g} requests/s for {args.seconds:g} s x {args.repeat} interleaved rounds, {args.clients} client "
          f"threads, {os.cpu_count()} cores, torch threads {args.threads or 'default'}; k=10 over {sum(engine.catalog()['text'].values())} text vectors")
    print("| contender | requests | errors | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for name, (latencies, errors) in results.items():
        p50, p90, p99 = (1000 * percentile(latencies, q) for q in (0.5, 0.9, 0.99))
        summary[name] = (p50, p99)
        print(f"| {name} | {len(latencies) + len(errors)} | {len(errors)} | {p50:.1f} | {p90:.1f} | {p99:.1f} | "
              f"{1000 * max(latencies):.1f} |")
        for error in sorted(set(errors))[:3]:
            print(f"  error: {error}")
    (base50, base99), (http50, http99) = summary.values()
    print(f"HTTP / in-process: p50 {http50 / base50:.2f}x, p99 {http99 / base99:.2f}x")


if __name__ == "__main__":
    main()
