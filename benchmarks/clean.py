"""The whole clean: in the launching process (``run_clean``) vs as Beam pipelines (``run_clean_pipeline``) on
the direct runner's worker processes and through a Beam job service with an EXTERNAL worker pool (the way
Flink or Spark run Python workers). Time and peak memory of the launching process, the runner (the job
service, which buffers the data between stages like an engine's shuffle) and the largest SDK worker.

    python -m benchmarks.clean --sizes 20000 80000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

WAYS = ("in-process", "direct", "portable")


def peak_mib(pid: int | str = "self") -> float:
    """A process' peak RSS (``VmHWM``; ``getrusage`` would report at least the RSS of the parent at fork)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


class ProcessPeaks:
    """Peak RSS (``VmHWM``) of every process below this one, read every 0.2 s while it runs (Beam's workers
    exit before ``getrusage`` could see them): the job service apart, the largest of the others."""

    def __init__(self) -> None:
        self.peaks: dict[int, tuple[bool, float]] = {}  # pid -> (is the job service, MiB)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> ProcessPeaks:
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.done.set()
        self.thread.join()

    def _poll(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.done.wait(0.2):
            for child in me.children(recursive=True):
                try:
                    service = "job-service" in " ".join(child.cmdline())
                    mib = peak_mib(child.pid)
                except (OSError, StopIteration, psutil.Error):
                    continue
                self.peaks[child.pid] = (service, max(mib, self.peaks.get(child.pid, (service, 0))[1]))

    def largest_mib(self, service: bool) -> float:
        return max((mib for is_service, mib in self.peaks.values() if is_service == service), default=0)


@contextmanager
def local_cluster():
    """Beam's job service and worker pool on 127.0.0.1 (``pipelines.local_cluster``): the portable runner's
    config and the services' pids (whose memory and CPU a benchmark reads)."""
    from pipelines.runner import RunnerConfig
    from tests.conftest import free_port, wait_for_port

    ports = {"job-service": free_port(), "worker-pool": free_port()}
    processes = [subprocess.Popen([sys.executable, "-m", "pipelines.local_cluster", service, "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
                 for service, port in ports.items()]
    try:
        for process, port in zip(processes, ports.values(), strict=True):
            wait_for_port(port, process)
        yield (RunnerConfig("portable", job_endpoint=f"127.0.0.1:{ports['job-service']}",
                            worker_pool=f"127.0.0.1:{ports['worker-pool']}"),
               {service: process.pid for service, process in zip(ports, processes, strict=True)})
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def clean_once(way: str, root: str, shards: int, workers: int) -> dict:
    """One clean of the indexes under ``root`` (``write_clean_indexes``) in this process."""
    from pipelines.minicorpus.clean_indexes import indexes_config
    from pipelines.runner import RunnerConfig
    from pipelines.stages.clean import run_clean
    from pipelines.stages.clean_pipeline import run_clean_pipeline

    config = indexes_config(root, shards)
    with ProcessPeaks() as peaks:
        if way == "portable":
            with local_cluster() as (runner, _):
                started = time.perf_counter()
                results = run_clean_pipeline(config, runner)
                seconds = time.perf_counter() - started
        else:
            started = time.perf_counter()
            results = (run_clean(config)[0] if way == "in-process"
                       else run_clean_pipeline(config, RunnerConfig(workers=workers)))
            seconds = time.perf_counter() - started
    return {"seconds": seconds, "removed": sum(r.removed for r in results),
            "launcher_mib": peak_mib(),
            "service_mib": peaks.largest_mib(service=True), "worker_mib": peaks.largest_mib(service=False)}


def compare(sizes: list[int], ways: list[str], workers: int) -> None:
    """Per size, the indexes written once (shards of about 1,000 samples: a growing corpus has more shards,
    not larger ones), then each way in a fresh process (so the peaks are its own), one after the other."""
    from pipelines.minicorpus.clean_indexes import write_clean_indexes

    for n in sizes:
        root = tempfile.mkdtemp(prefix="bench-clean-")
        shards = max(4, n // 2500)
        try:
            output = write_clean_indexes(root, n, seed=0, shards=shards).output
            found = {}
            for way in ways:
                shutil.rmtree(os.path.join(output, "rejects"), ignore_errors=True)
                out = subprocess.run([sys.executable, "-m", "benchmarks.clean", "--once", way, root, str(shards),
                                      str(workers)], check=True, capture_output=True, text=True).stdout
                found[way] = json.loads(out.strip().splitlines()[-1])
        finally:
            shutil.rmtree(root, ignore_errors=True)
        base = found[ways[0]]
        print(f"{n} images + {n // 2} sentences in {shards} shards a source, {base['removed']} removed:")
        for way, got in found.items():
            assert got["removed"] == base["removed"], (way, got, base)
            print(f"  {way:<10} {got['seconds']:7.1f} s ({got['seconds'] / base['seconds']:5.1f}x)  launcher "
                  f"{got['launcher_mib']:5.0f} MiB ({got['launcher_mib'] / base['launcher_mib']:.2f}x)  job service "
                  f"{got['service_mib']:5.0f} MiB  largest worker {got['worker_mib']:5.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 80000], help="images (and half as many "
                                                                                       "sentences)")
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    parser.add_argument("--workers", type=int, default=2, help="direct runner worker processes")
    parser.add_argument("--once", nargs=4, metavar=("WAY", "ROOT", "SHARDS", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.once:
        way, root, shards, workers = args.once
        print(json.dumps(clean_once(way, root, int(shards), int(workers))))
    else:
        compare(args.sizes, args.ways, args.workers)


if __name__ == "__main__":
    main()
