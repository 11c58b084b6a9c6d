"""Beam shells around ``shards.py``: a deterministic WebDataset sink and a shard source.

``WriteShards`` groups records by ``shard_of(key)`` and writes each shard whole, skipping shards an
earlier run finished with the same parameters. ``ReadShards`` reads tars back as samples, one tar per
unit of work, from any Beam FileSystems pattern.
"""

from __future__ import annotations

import apache_beam as beam

from pipelines import io as fsio
from pipelines.shards import ShardPaths, is_complete, iter_samples, write_shard
from schemas.config import ImageConfig
from schemas.keys import shard_of
from schemas.records import shard_key


class _WriteShard(beam.DoFn):
    def __init__(self, root: str, stage: str, source: str, image: ImageConfig, params_hash: str, overwrite: bool):
        self.root, self.stage, self.source, self.image = root, stage, source, image
        self.params_hash, self.overwrite = params_hash, overwrite
        self.written = beam.metrics.Metrics.counter(stage, "shards_written")
        self.skipped = beam.metrics.Metrics.counter(stage, "shards_skipped")

    def process(self, element):
        shard, records = element
        paths = ShardPaths.of(self.root, self.stage, self.source, shard)
        if not self.overwrite and is_complete(paths, self.params_hash):
            self.skipped.inc()
            return
        write_shard(paths, self.stage, records, self.image, self.params_hash)
        self.written.inc()


class WriteShards(beam.PTransform):
    """Candidates and rejects in; ``raw/<source>/NNNNN.{tar,parquet}`` and ``rejects/`` out."""

    def __init__(self, root: str, stage: str, source: str, shards: int, image: ImageConfig,
                 params_hash: str, overwrite: bool = False):
        super().__init__()
        self.shards = shards
        self.write = _WriteShard(root, stage, source, image, params_hash, overwrite)

    def expand(self, records):
        shards = self.shards
        return (
            records
            | "ShardOf" >> beam.Map(lambda record: (shard_of(shard_key(record), shards), record))
            | "Group" >> beam.GroupByKey()
            | "Write" >> beam.ParDo(self.write)
        )


class ReadShards(beam.PTransform):
    """Samples (``{"__key__", "jpg", "txt", "json", ...}``) of every tar matching ``pattern``."""

    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = pattern

    def expand(self, pipeline):
        return (
            pipeline
            | "Pattern" >> beam.Create([self.pattern])
            | "Match" >> beam.FlatMap(fsio.glob)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.FlatMap(iter_samples)
        )
