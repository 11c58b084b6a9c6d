"""The Beam shell of a sharded index build (``retrieval.index.ShardedJob``): the steps autofaiss runs on
Spark, here on any Beam runner.

``Create(parts) -> Reshuffle``, then (1) ``draw``: each part's rows of the training sample and of the
held-out queries, in a file -> one list -> ``train`` (once, on one worker; writes the trained empty index;
yields the queries); (2) ``fill``: per part, the trained index plus the part's vectors under their global ids,
written as a partial index, and the part's exact top k of the queries (the queries a side input); (3) the
partials -> one list -> ``merge`` (their inverted lists merged on disk, the merged index tuned). A worker holds
one part's vectors and the trained index; the runner (the launching process) carries only file names, the
queries and the top k lists. The parts travel as their descriptions (``EmbPart``: a path and counts), each
worker reads its own; FAISS files need a root every worker sees as a local path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipelines.runner import RunnerConfig, pipeline_options
from retrieval.index import Part, ShardedJob


def beam_runner(runner: RunnerConfig) -> Callable[[ShardedJob, Sequence[Part]], None]:
    """``run_sharded`` for ``retrieval.index.build_or_update``: the job as one Beam pipeline."""

    def run(job: ShardedJob, parts: Sequence[Part]) -> None:
        import apache_beam as beam  # only a sharded build pays for Beam's start-up

        with beam.Pipeline(options=pipeline_options(runner)) as pipeline:
            numbered = (pipeline | "parts" >> beam.Create(list(enumerate(parts)))
                        | "spread" >> beam.Reshuffle())
            queries = beam.pvalue.AsSingleton(
                numbered | "draw" >> beam.MapTuple(job.draw) | "sample" >> beam.combiners.ToList()
                | "train" >> beam.Map(job.train))
            _ = (numbered | "fill" >> beam.Map(lambda item, queries: job.fill(*item, queries), queries=queries)
                 | "partials" >> beam.combiners.ToList() | "merge" >> beam.Map(job.merge, queries=queries))

    return run
