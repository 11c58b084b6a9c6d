"""Service under load: ``unicorpus serve`` from one or more checkouts (e.g. the standard-library server of
an older commit beside this one), each in its own process on loopback, over the mini corpus indexed with
MiniLM. Every server gets the same two tests, in interleaved rounds:

1. concurrent clients, closed loop: C client threads each send their share of a fixed number of
   ``GET /api/search`` requests, each on a fresh connection (as many users' browsers and scripts do), with a
   10 s timeout; errors and p50/p99 latency. A listen backlog too short for C shows as SYN retries
   (p99 of seconds) and then timeouts.
2. the highest rate whose p99 stays under a bound: open loop at increasing rates (request i is due at
   ``start + i / rate`` whatever happened before, latency counted from that due time, so a queue that builds
   shows: no coordinated omission), a fixed number of requests per rate; the last rate with no error and
   p99 under ``--p99-ms``.

    python -m benchmarks.service --server stdlib=/path/to/old/checkout --server starlette=.
    python -m benchmarks.service --server new=. --clients 100,200 --requests-per-client 10
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import statistics
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


def search(port: int, query: str, timeout: float = 10.0) -> None:
    """One search on a fresh connection; raises on anything but a 200 with results."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/api/search?" + urlencode({"q": query, "k": 10}))
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200 or not json.loads(body)["results"]:
        raise RuntimeError(f"HTTP {response.status}: {body[:200]!r}")


def closed_loop(call, clients: int, requests: int) -> tuple[list[float], list[str]]:
    """``requests`` calls from ``clients`` threads, each starting its next call when the last one ended:
    (latencies of the successful calls in s, errors of the others)."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(c: int) -> None:
        barrier.wait()  # all clients start together: the burst a backlog must hold
        for i in range(c, requests, clients):
            started = time.perf_counter()
            try:
                call(QUERIES[i % len(QUERIES)])
            except Exception as e:  # counted and reported: an error is a result of this benchmark
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return latencies, errors


def open_loop(call, rate: float, total: int, clients: int) -> tuple[list[float], list[str]]:
    """``total`` calls, call i due at ``start + i / rate``; latency from the due time."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = time.perf_counter() + 0.2

    def one(i: int) -> None:
        due = start + i / rate
        time.sleep(max(0.0, due - time.perf_counter()))
        try:
            call(QUERIES[i % len(QUERIES)])
        except Exception as e:
            with lock:
                errors.append(f"{type(e).__name__}: {e}")
            return
        with lock:
            latencies.append(time.perf_counter() - due)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(total)))
    return latencies, errors


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_corpus(work: str) -> str:
    """The mini corpus ingested and indexed like the tests' served corpus; the YAML path. Reused when
    ``work`` already holds it."""
    from pipelines.minicorpus import generate, served
    from pipelines.runner import RunnerConfig
    from pipelines.stages.ingest import run_ingest
    from schemas.config import load_config

    path = os.path.join(work, "served", "corpus.yaml")
    if os.path.exists(path):
        return path
    mini = generate(os.path.join(work, "mini"), seed=0, scale=1)
    config = dataclasses.replace(load_config(mini), output=os.path.join(work, "ingested"))
    run_ingest(config, list(config.sources), RunnerConfig(), show_progress=False)
    config, _ = served.build(config, os.path.join(work, "served"))
    return served.write_config(mini, config)


def start_server(checkout: str, config: str) -> tuple[subprocess.Popen, int]:
    """``unicorpus serve`` with ``checkout`` first on the path (its code, this venv), on a free port."""
    from tests.conftest import free_port, wait_for_port

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout)}
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--config", config, "--port", str(port)],
                               cwd=os.path.abspath(checkout), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_for_port(port, process, timeout=300)
    return process, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", action="append", default=[], metavar="NAME=CHECKOUT",
                        help="a contender: `unicorpus serve` run from this checkout (repeatable; default: this one)")
    parser.add_argument("--clients", default="100,200", help="concurrent clients of the closed-loop test")
    parser.add_argument("--requests-per-client", type=int, default=10)
    parser.add_argument("--rates", default="10,20,40,60,80,100,130,160,200,250,300",
                        help="requests/s of the open-loop sweep, ascending")
    parser.add_argument("--requests-per-rate", type=int, default=400)
    parser.add_argument("--p99-ms", type=float, default=50.0)
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds")
    parser.add_argument("--work", help="folder for the corpus (default: a temporary one; reused if built)")
    args = parser.parse_args()

    servers = dict(item.split("=", 1) for item in args.server) or {"this": "."}
    clients = [int(c) for c in args.clients.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    config = build_corpus(args.work or tempfile.mkdtemp(prefix="bench-service-"))
    running = {}
    try:
        for name, checkout in servers.items():
            running[name] = start_server(checkout, config)
            for query in QUERIES * 2:  # unmeasured warm-up: a fresh model's first calls are slow
                search(running[name][1], query, timeout=60)
        concurrent = {(name, c): ([], [], []) for name in servers for c in clients}
        best: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(args.repeat):
            for name, (_, port) in running.items():
                call = lambda q, port=port: search(port, q)  # noqa: E731
                for c in clients:
                    started = time.perf_counter()
                    latencies, errors = closed_loop(call, c, c * args.requests_per_client)
                    concurrent[(name, c)][0].extend(latencies)
                    concurrent[(name, c)][1].extend(errors)
                    concurrent[(name, c)][2].append(len(latencies) / (time.perf_counter() - started))
                passed = 0.0
                for rate in rates:
                    latencies, errors = open_loop(call, rate, args.requests_per_rate, 64)
                    p99 = 1000 * percentile(latencies, 0.99)
                    print(f"  {name} {rate:g}/s: p99 {p99:.1f} ms, {len(errors)} errors", flush=True)
                    if errors or not p99 < args.p99_ms:
                        break
                    passed = rate
                best[name].append(passed)
    finally:
        for process, _ in running.values():
            process.terminate()
            process.wait(timeout=30)

    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; search k=10, a fresh connection "
          f"per request, 10 s timeout; {args.repeat} interleaved round(s)")
    print("| server | clients | requests | errors | answers/s | fair-queue wait ms (clients / answers/s) "
          "| p50 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (name, c), (latencies, errors, throughputs) in concurrent.items():
        p50, p99 = (1000 * percentile(latencies, q) for q in (0.5, 0.99))
        top = 1000 * max(latencies) if latencies else float("nan")
        rate = statistics.median(throughputs)
        print(f"| {name} | {c} | {len(latencies) + len(errors)} | {len(errors)} | {rate:.1f} | {1000 * c / rate:.0f} "
              f"| {p50:.1f} | {p99:.1f} | {top:.1f} |")
        for error in sorted(set(errors))[:2]:
            print(f"  error: {error}")
    print(f"highest open-loop rate (of {args.rates}) with no error and p99 < {args.p99_ms:g} ms, "
          f"{args.requests_per_rate} requests per rate, per round:")
    for name, passed in best.items():
        print(f"  {name}: {', '.join(f'{r:g}/s' for r in passed)}")


if __name__ == "__main__":
    main()
