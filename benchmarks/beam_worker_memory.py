"""Where a local Beam runner's SDK worker memory goes, with no clean logic: trivial pipelines of clean's shape
(shards -> Reshuffle -> many keyed elements -> a grouping) at two sizes, so a worker's growth can be told
apart as the runner's or the pipeline's (docs/BENCHMARKS.md, clean section).

    python -m benchmarks.beam_worker_memory --sizes 20000 80000 --workers 2

Each element is ``(key, payload)`` with a payload of ``--payload`` bytes (about a pickled clean ``Node``: 400)
or of an 8-byte id; the grouping is a ``GroupByKey`` (grouped by the runner) or a ``CombinePerKey`` (whose
lifted pre-combine keeps up to 100,000 keys' accumulators in the worker for a whole bundle).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

SHAPES = ("group", "combine", "combine-ids")
PER_SHARD = 1000


def _union_fn():
    import apache_beam as beam

    class Union(beam.CombineFn):
        """A set of the values, as clean's ``ClusterUnion`` keeps a set of nodes."""

        def create_accumulator(self):
            return set()

        def add_input(self, accumulator, value):
            accumulator.add(value)
            return accumulator

        def merge_accumulators(self, accumulators):
            return set().union(*accumulators)

        def extract_output(self, accumulator):
            return len(accumulator)

    return Union()


def run_once(shape: str, n: int, workers: int, payload: int) -> dict:
    """One pipeline of ``shape`` over ``n`` keyed elements (``n // PER_SHARD`` shards), in this process."""
    import apache_beam as beam

    from benchmarks.clean import ProcessPeaks
    from pipelines.runner import RunnerConfig, pipeline_options

    size = 8 if shape == "combine-ids" else payload

    def elements(shard: int):
        for i in range(shard * PER_SHARD, (shard + 1) * PER_SHARD):
            yield i, i.to_bytes(8, "big") * (size // 8)

    with ProcessPeaks() as peaks:
        started = time.perf_counter()
        with beam.Pipeline(options=pipeline_options(RunnerConfig(workers=workers))) as pipeline:
            keyed = (pipeline | beam.Create(range(n // PER_SHARD)) | beam.Reshuffle() | beam.FlatMap(elements))
            if shape == "group":
                grouped = keyed | beam.GroupByKey() | beam.MapTuple(lambda key, values: (key, len(list(values))))
            else:
                grouped = keyed | beam.CombinePerKey(_union_fn())
            _ = grouped | beam.combiners.Count.Globally()
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "worker_mib": peaks.largest_mib(service=False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 80000], help="keyed elements")
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--workers", type=int, default=2, help="direct runner worker processes")
    parser.add_argument("--payload", type=int, default=400, help="bytes per element's value")
    parser.add_argument("--once", nargs=2, metavar=("SHAPE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.once:
        print(json.dumps(run_once(args.once[0], int(args.once[1]), args.workers, args.payload)))
        return
    for shape in args.shapes:
        found = {}
        for n in args.sizes:  # each in a fresh process, so the peaks are its own
            out = subprocess.run([sys.executable, "-m", "benchmarks.beam_worker_memory", "--once", shape, str(n),
                                  "--workers", str(args.workers), "--payload", str(args.payload)],
                                 check=True, capture_output=True, text=True).stdout
            found[n] = json.loads(out.strip().splitlines()[-1])
        first = found[args.sizes[0]]["worker_mib"]
        print(f"{shape:<12} " + "  ".join(f"{n}: {got['worker_mib']:5.0f} MiB {got['seconds']:5.1f} s"
                                          for n, got in found.items())
              + f"  largest/smallest {found[args.sizes[-1]]['worker_mib'] / first:.2f}x")


if __name__ == "__main__":
    main()
