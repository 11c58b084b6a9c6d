"""Scale benchmark: every stage at three (or more) corpus sizes, and how its time and memory grow.

For each size, a synthetic corpus (``benchmarks/scale_corpus.py``) is written and every stage runs through
its public command (``python -m cli.main <stage> --config ...``, as ``unicorpus <stage>``) in its own process,
with ``--workers N`` (Beam's DirectRunner in multi-processing mode) where the command takes it. Per stage and
size: wall time, CPU seconds (the stage process and its workers), samples/s, peak memory of the launching
process and of the largest worker, and the bytes the stage wrote. Per stage over the sizes: the growth
exponent of time and memory (slope of a least-squares line through log(value) vs log(size)) and the ratio of
worker memory at the largest size to the next one. With ``--runner portable`` each stage that takes
``--runner`` is sent to a Beam job service and an EXTERNAL worker pool started for it alone
(``pipelines.local_cluster``): its workers are the pool's SDK worker processes, and the job service (which
holds the data between steps, as an engine's shuffle would) is measured apart.

Memory is the kernel's high-water mark of resident memory (``VmHWM`` in ``/proc/PID/status``, so Linux only),
read every ``POLL_S`` seconds from the stage process ("launcher") and from each of its descendants
("worker": Beam's SDK worker processes); a worker's last reading before it exits is its peak up to that
tick. CPU seconds are each process' own user + system time at its last poll (at most ``POLL_S`` of a
process' CPU is missed). The model stages use the offline models of the tests and the demo
(``pipelines/minicorpus/models.py``: a tiny random-weight YOLO and Marian pairs; the real spaCy sm and MiniLM).

    python -m benchmarks.scale --sizes 2000 20000 200000 --out benchmarks/results/scale.json
    python -m benchmarks.scale --sizes 10000 100000 --stages ingest clean --runner portable
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

from benchmarks.scale_corpus import corpus_stats, weak_pairs, write_corpus

# Stage name -> its command words, in the order the stages must run.
STAGES = {
    "ingest": ["ingest"],
    "clean": ["clean"],
    "detect": ["annotate", "detect"],
    "parse": ["annotate", "parse"],
    "rewrite": ["annotate", "rewrite"],
    "embed": ["embed"],
    "index": ["index"],
    "retrieve": ["retrieve"],
    "pack": ["pack"],
}
MODEL_FREE = ("ingest", "clean")  # the stages that need no model built
POLL_S = 0.1
MB = 1 << 20


@dataclass(frozen=True)
class Measurement:
    stage: str
    samples: int
    wall_s: float
    cpu_s: float  # user + system of the stage process and of every descendant, as last polled
    samples_per_s: float
    launcher_peak_mb: float
    worker_peak_mb: float | None  # None: the stage started no worker process
    descendants_seen: int
    output_bytes: int  # bytes of the files the stage created or changed under the corpus output
    service_peak_mb: float | None = None  # the job service of a portable run (None: the stage ran without one)


def command_flags(words: list[str], workers: int, overwrite: bool = False, runner: str = "direct") -> list[str]:
    """``--workers N`` (or ``--runner portable``), ``--quiet`` and (to measure a stage again on a kept corpus)
    ``--overwrite`` for the commands that take them (read from the command's own help, so a stage that gains
    an option is measured with it). A portable stage's endpoints are added when its services start."""
    from cli.main import main

    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
        main([*words, "--help"])
    wanted = ({"--workers": ["--workers", str(workers)]} if runner == "direct"
              else {"--job-endpoint": ["--runner", runner]})
    wanted["--quiet"] = ["--quiet"]
    if overwrite:
        wanted["--overwrite"] = ["--overwrite"]
    return [word for option, words in wanted.items() if option in text.getvalue() for word in words]


def high_water_mb(pid: int) -> float | None:
    """The process' peak resident memory so far (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class ProcessTree:
    """Polls, in a thread until ``stop``, the memory high-water mark and the CPU seconds of a process and of
    each of its descendants. CPU is summed per process from its own counters: a Beam worker started under
    ``sh -c`` and killed is never waited for by the stage process, so ``RUSAGE_CHILDREN`` would miss it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.launcher = 0.0
        self.workers: dict[int, float] = {}
        self.cpu: dict[int, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self._done.is_set():
            with contextlib.suppress(psutil.Error):
                self._sample(root)
                for child in root.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        self._sample(child)
            self._done.wait(POLL_S)

    def _sample(self, process) -> None:
        times = process.cpu_times()
        self.cpu[process.pid] = times.user + times.system
        peak = high_water_mb(process.pid)
        if peak is None:
            return
        if process.pid == self.pid:
            self.launcher = max(self.launcher, peak)
        else:
            self.workers[process.pid] = max(self.workers.get(process.pid, 0.0), peak)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())


def file_sizes(root: str) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every file under ``root``."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            stat = os.stat(os.path.join(folder, name))
            found[os.path.join(folder, name)] = (stat.st_size, stat.st_mtime_ns)
    return found


def written_bytes(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> int:
    """Bytes of the files that are new or changed in ``after``."""
    return sum(size for path, (size, mtime) in after.items() if before.get(path) != (size, mtime))


def own_cpu_seconds(pid: int) -> float:
    """User + system seconds of one process so far (not of its children)."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run_stage(stage: str, config: str, output: str, samples: int, flags: list[str]) -> Measurement:
    """Run one stage's command to completion and measure it; a failing stage stops the benchmark. A stage
    sent to the portable runner gets a job service and worker pool of its own, so their peaks are its own."""
    if "--runner" not in flags:
        return measure_stage(stage, config, output, samples, flags, {})
    from benchmarks.clean import local_cluster

    with local_cluster() as (cluster, services):
        endpoints = ["--job-endpoint", cluster.job_endpoint, "--worker-pool", cluster.worker_pool]
        return measure_stage(stage, config, output, samples, [*flags, *endpoints], services)


def measure_stage(stage: str, config: str, output: str, samples: int, flags: list[str],
                  services: dict[str, int]) -> Measurement:
    """One stage's command measured with the running ``services`` (name -> pid): the worker pool's SDK workers
    count as workers, the job service apart, and their CPU from the stage's start on."""
    before = file_sizes(output)
    idle_cpu = sum(own_cpu_seconds(pid) for pid in services.values())
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "cli.main", *STAGES[stage], "--config", config, *flags],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tree = ProcessTree(process.pid)
    service_trees = {name: ProcessTree(pid) for name, pid in services.items()}
    log, _ = process.communicate()
    for watched in [tree, *service_trees.values()]:
        watched.stop()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{stage} on {config} exited {process.returncode}:\n{log[-4000:]}")
    workers = {**tree.workers, **(service_trees["worker-pool"].workers if services else {})}
    cpu = tree.cpu_seconds + sum(t.cpu_seconds for t in service_trees.values()) - idle_cpu
    return Measurement(stage, samples, round(wall, 3), round(cpu, 3), round(samples / wall, 3),
                       round(tree.launcher, 1), round(max(workers.values()), 1) if workers else None,
                       len(workers), written_bytes(before, file_sizes(output)),
                       round(service_trees["job-service"].launcher, 1) if services else None)


def model_sections(folder: str, seed: int) -> dict:
    """Build the tiny offline models once under ``folder/models``; the config sections naming them."""
    from pipelines.minicorpus.models import build_models, stage_sections

    build_models(folder, seed)
    sections = stage_sections()
    sections["retrieval"]["retrieve"] = {"weak_pairs": weak_pairs()}
    return sections


def run_size(out: str, samples: int, stages: list[str], sections: dict, seed: int, flags: dict,
             reuse: bool = False) -> dict:
    """Write the corpus of ``samples`` (replacing an earlier one) and run ``stages`` on it in order; with
    ``reuse``, run them again (``--overwrite``) on the corpus an earlier run left, earlier stages' outputs
    included, so that one changed stage is measured without redoing the others."""
    folder = os.path.join(out, f"size-{samples}")
    config = os.path.join(folder, "corpus.yaml")
    if reuse:
        if not os.path.exists(config):
            raise FileNotFoundError(f"--reuse: no corpus of {samples} samples at {folder}; run without --reuse first")
    else:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        if sections:  # the config names models/ beside itself: the one folder of models every size shares
            os.symlink(os.path.join("..", "models"), os.path.join(folder, "models"))
        config = write_corpus(folder, samples, seed, sections)
    output = os.path.join(folder, "corpus")
    measured = []
    for stage in stages:
        measured.append(run_stage(stage, config, output, samples, flags[stage]))
        print(f"  {samples:>8} {stage:<9} {json.dumps(asdict(measured[-1]))}", flush=True)  # a record per stage
    return {"samples": samples, "corpus": corpus_stats(folder), "stages": [asdict(m) for m in measured]}


def exponent(sizes: list[int], values: list[float | None]) -> float | None:
    """Slope of log(value) over log(size), least squares (None when a value is missing or not positive)."""
    import numpy as np

    if len(sizes) < 2 or any(v is None or v <= 0 for v in values):
        return None
    return round(float(np.polyfit(np.log(sizes), np.log(values), 1)[0]), 3)


def marginal(sizes: list[int], values: list[float]) -> float:
    """What one more sample costs between the two largest sizes: the slope without the fixed start-up cost
    (model loading, worker start) that flattens the log-log exponent at small sizes."""
    return round((values[-1] - values[-2]) / (sizes[-1] - sizes[-2]), 3)


def growth(runs: list[dict], stages: list[str]) -> dict[str, dict]:
    """Per stage: time, CPU, memory and output exponents over the sizes, the worker memory largest/middle ratio,
    and the marginal CPU and bytes per sample."""
    runs = sorted(runs, key=lambda r: r["samples"])
    sizes = [r["samples"] for r in runs]
    table = {}
    for stage in stages:
        rows = [next(m for m in r["stages"] if m["stage"] == stage) for r in runs]
        workers = [row["worker_peak_mb"] for row in rows]
        table[stage] = {
            "time_exponent": exponent(sizes, [row["wall_s"] for row in rows]),
            "cpu_exponent": exponent(sizes, [row["cpu_s"] for row in rows]),
            "launcher_memory_exponent": exponent(sizes, [row["launcher_peak_mb"] for row in rows]),
            "worker_memory_exponent": exponent(sizes, workers),
            "worker_memory_ratio": (round(workers[-1] / workers[-2], 3)
                                    if len(workers) > 1 and None not in workers[-2:] else None),
            "output_bytes_exponent": exponent(sizes, [row["output_bytes"] for row in rows]),
            "marginal_cpu_ms_per_sample": marginal(sizes, [row["cpu_s"] * 1000 for row in rows]),
            "marginal_output_bytes_per_sample": marginal(sizes, [row["output_bytes"] for row in rows]),
        }
    return table


def format_table(result: dict) -> str:
    """The measurements per stage and size, then the exponents per stage (markdown)."""
    lines = ["| stage | samples | wall s | CPU s | samples/s | launcher MB | worker MB | job service MB | output MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for stage in result["growth"]:
        for run in result["runs"]:
            m = next(m for m in run["stages"] if m["stage"] == stage)
            worker, service = ("-" if m.get(name) is None else f"{m[name]:.0f}"
                               for name in ("worker_peak_mb", "service_peak_mb"))
            lines.append(f"| {stage} | {m['samples']:,} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | "
                         f"{m['samples_per_s']:,.1f} | {m['launcher_peak_mb']:.0f} | {worker} | {service} | "
                         f"{m['output_bytes'] / MB:,.2f} |")
    lines += ["", "| stage | time exp. | CPU exp. | launcher mem. exp. | worker mem. exp. | worker mem. "
              "largest/middle | output exp. | marginal CPU ms/sample | marginal bytes/sample |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for stage, g in result["growth"].items():
        cells = [g["time_exponent"], g["cpu_exponent"], g["launcher_memory_exponent"], g["worker_memory_exponent"],
                 g["worker_memory_ratio"], g["output_bytes_exponent"], g["marginal_cpu_ms_per_sample"],
                 g["marginal_output_bytes_per_sample"]]
        lines.append(f"| {stage} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
    return "\n".join(lines)


def run_benchmark(out: str, sizes: list[int], stages: list[str], workers: int, seed: int,
                  reuse: bool = False, runner: str = "direct") -> dict:
    """Every size in increasing order, the stages in pipeline order; the measurements and their growth."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"--stages: unknown {unknown}; expected some of {list(STAGES)}")
    if len(set(sizes)) < 2 or min(sizes) < 3:
        raise ValueError(f"--sizes: expected at least two different sizes of 3 samples or more, got {sizes}")
    stages = [s for s in STAGES if s in stages]
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    sections = {} if reuse or set(stages) <= set(MODEL_FREE) else model_sections(out, seed)
    flags = {stage: command_flags(STAGES[stage], workers, overwrite=reuse, runner=runner) for stage in stages}
    runs = [run_size(out, n, stages, sections, seed, flags, reuse) for n in sorted(set(sizes))]
    return {"sizes": sorted(set(sizes)), "runner": runner, "workers": workers, "seed": seed, "reused": reuse,
            "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()], "runs": runs,
            "growth": growth(runs, stages)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 3000, 30000], help="samples per corpus")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), help=f"some of {list(STAGES)}")
    parser.add_argument("--workers", type=int, default=2, help="Beam worker processes of each stage (direct)")
    parser.add_argument("--runner", choices=["direct", "portable"], default="direct",
                        help="portable: each stage through its own job service and EXTERNAL worker pool")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="bench-scale", help="folder for the corpora (replaced per size)")
    parser.add_argument("--out", default="benchmarks/results/scale.json", help="JSON of every measurement")
    parser.add_argument("--reuse", action="store_true",
                        help="measure --stages again (with --overwrite) on the corpora an earlier run left in --work")
    args = parser.parse_args(argv)
    result = run_benchmark(args.work, args.sizes, args.stages, args.workers, args.seed, args.reuse, args.runner)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(format_table(result))
    print(f"\nmeasurements: {args.out}")
    return exit_code(result)


def exit_code(result: dict) -> int:
    """0 when every stage's time exponent was fitted (0.0, a flat stage, is a fit), else 1."""
    fitted = [g["time_exponent"] for g in result["growth"].values()]
    return 0 if all(e is not None and math.isfinite(e) for e in fitted) else 1


if __name__ == "__main__":
    sys.exit(main())
