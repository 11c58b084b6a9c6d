"""Beam shells around ``raw_shard.py``: a deterministic WebDataset sink and a shard source.

``WriteShards`` groups batches of records by ``shard_of(key)`` (``shard_batches``) and writes each
shard whole, skipping shards an earlier run finished with the same parameters. ``ReadShards`` reads tars
back as samples, one tar per unit of work, from any Beam FileSystems pattern.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain

import apache_beam as beam

from pipelines import storage
from pipelines.raw_shard import ShardJob, ShardPaths, has_failed_downloads, is_complete, iter_samples, load_reusable
from pipelines.shard_downloads import ShardWriter
from schemas.config import DownloadConfig, ImageConfig
from schemas.keys import shard_of
from schemas.records import Candidate, Reject, shard_key

BATCH_RECORDS = 256  # records a reader holds before handing them on, split by shard


def shard_batches(records: Iterable[Candidate | Reject], shards: int,
                  size: int = BATCH_RECORDS) -> Iterator[tuple[int, list[Candidate | Reject]]]:
    """``(shard, records)`` for every ``size`` records read, one pair per shard they fall in: the grouping
    then moves a few lists, not every record on its own (Beam's own work per element was about 27 us a
    record, docs/BENCHMARKS.md). A shard's records are the same whatever the split, and the writer sorts
    them, so the bytes do not depend on ``size``; it bounds what a reader holds (records of sources that
    carry their image bytes, img2dataset's say, hold ``size`` images)."""
    groups: dict[int, list] = defaultdict(list)
    for count, record in enumerate(records, 1):
        groups[shard_of(shard_key(record), shards)].append(record)
        if count % size == 0:
            yield from groups.items()
            groups = defaultdict(list)
    yield from groups.items()


@dataclass(frozen=True)
class WriteOptions:
    image: ImageConfig
    params_hashes: tuple[str, ...]  # one per shard (``stages.ingest.params_hashes``)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    overwrite: bool = False  # redo finished shards
    retry_failed: bool = False  # redo finished shards with failed downloads, fetching only those
    reused: frozenset[int] = frozenset()  # shards the launching process found finished and leaves: not read again


class _WriteShard(beam.DoFn):
    """Writes the shards of a bundle; those that download share one pool (``shard_downloads``), so a
    shard is written as soon as its last URL is in, whatever its neighbours still wait for."""

    def __init__(self, root: str, stage: str, source: str, options: WriteOptions):
        self.root, self.stage, self.source, self.options = root, stage, source, options
        self.written = beam.metrics.Metrics.counter(stage, "shards_written")
        self.skipped = beam.metrics.Metrics.counter(stage, "shards_skipped")
        self.writer: ShardWriter | None = None

    def start_bundle(self):
        self.writer = ShardWriter(self.options.image, self.options.download)

    def process(self, element):
        shard, batches = element
        records = chain.from_iterable(batches)
        paths = ShardPaths.of(self.root, self.stage, self.source, shard)
        options, reuse = self.options, None
        digest = options.params_hashes[shard]
        if shard in options.reused:
            self.skipped.inc()
            return
        if not options.overwrite and is_complete(paths, digest):  # up for a retry, or finished since the launch
            if not (options.retry_failed and has_failed_downloads(paths)):
                self.skipped.inc()
                return
            reuse = load_reusable(paths)
        self.written.inc(len(self.writer.add(ShardJob.of(paths, self.stage, records, digest, reuse))))

    def finish_bundle(self):
        self.written.inc(len(self.writer.finish()))

    def teardown(self):
        if self.writer is not None:  # a failed bundle: stop its downloads
            self.writer.close()


class WriteShards(beam.PTransform):
    """``(shard, [candidates and rejects])`` batches in (``shard_batches``); ``raw/<source>/NNNNN.{tar,parquet}``
    and ``rejects/`` out."""

    def __init__(self, root: str, stage: str, source: str, options: WriteOptions):
        super().__init__()
        self.write = _WriteShard(root, stage, source, options)

    def expand(self, batches):
        return batches | "Group" >> beam.GroupByKey() | "Write" >> beam.ParDo(self.write)


class ReadShards(beam.PTransform):
    """Samples (``{"__key__", "jpg", "txt", "json", ...}``) of every tar matching ``pattern``, less the
    keys in ``exclude`` (e.g. what ``clean`` removed: ``pipelines.stages.clean.removed_keys``)."""

    def __init__(self, pattern: str, exclude: frozenset[str] = frozenset()):
        super().__init__()
        self.pattern, self.exclude = pattern, frozenset(exclude)

    def expand(self, pipeline):
        exclude = self.exclude
        return (
            pipeline
            | "Pattern" >> beam.Create([self.pattern])
            | "Match" >> beam.FlatMap(storage.glob)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.FlatMap(lambda path: (s for s in iter_samples(path) if s["__key__"] not in exclude))
        )
