"""The Beam shell every per-shard stage after ingest shares (detect, parse, rewrite, embed).

A stage supplies a ``ShardAnnotator``: pure logic that turns one raw shard (``ShardInput``) into sidecar
rows and rejects. This module runs it: one pipeline per source, ``Create(shard ids) -> Reshuffle ->
ParDo``, the annotator built and its models loaded once per worker (``DoFn.setup``), finished shards
skipped, counts read back from the committed tables, progress shown, the manifest updated. The annotator
is built from a picklable factory, so nothing process-local has to travel to a portable runner's workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import apache_beam as beam
import pyarrow as pa

from pipelines import storage
from pipelines.manifest_io import update_manifest
from pipelines.progress import ShardProgress
from pipelines.raw_shard import ShardCounts, read_footer
from pipelines.runner import RunnerConfig, pipeline_options
from pipelines.sidecar_tables import (
    ShardInput,
    SidecarPaths,
    is_done,
    params_hash,
    raw_params_hash,
    raw_shards,
    read_shard_input,
    read_sidecar_counts,
    remove_temporaries,
    removed_keys,
    write_sidecar,
)
from pipelines.stages.ingest import SourceResult
from schemas.config import CorpusConfig
from schemas.records import Reject


class ShardAnnotator:
    """What a per-shard stage defines. ``annotate`` returns (rows, rejects, units considered), with
    ``units == accounted(rows, rejects)``: nothing a stage looks at is dropped silently."""

    stage: str = ""  # the name in rejects/ and the manifest
    folder: str = ""  # where the tables go, e.g. "ann/detect"
    schema: pa.Schema
    modalities: frozenset[str] = frozenset({"pair", "image", "text"})  # samples the stage looks at
    columns: list[str] | None = None  # raw index columns it needs (None: all)

    def params(self) -> dict:
        """Everything that changes the output (model paths, thresholds): part of the shard's hash."""
        raise NotImplementedError

    def setup(self) -> None:
        """Load models; called once per worker before the first shard."""

    def accounted(self, rows: list[dict], rejects: list[Reject]) -> int:
        """The units ``rows`` and ``rejects`` stand for: one row per unit here; a stage that writes several
        rows per unit (rewrite: many per caption) counts the units they belong to."""
        return len(rows) + len(rejects)

    def input_digest(self, root: str, source: str, shard: int) -> str:
        """The hash of the other sidecar tables a shard's output is made from (embed tags: ann/detect), so
        a redone input redoes this shard too; "" when the raw shard is the only input."""
        return ""

    def annotate(self, shard: ShardInput) -> tuple[list[dict], list[Reject], int]:
        raise NotImplementedError

    def table_metadata(self) -> dict[bytes, bytes]:
        """Extra footer metadata of the table of the shard just annotated (model name, vector dimension,
        the shard's own counts, ...)."""
        return {}

    def manifest_counts(self, footers: list[dict[bytes, bytes]]) -> dict:
        """Stage-specific counts for corpus.json, from the footers of a source's committed tables (rewrite:
        the WordNet refusals); none by default."""
        return {}


class _AnnotateShard(beam.DoFn):
    def __init__(self, factory: Callable[[], ShardAnnotator], root: str, source: str, overwrite: bool):
        self.factory, self.root, self.source, self.overwrite = factory, root, source, overwrite
        self.annotator: ShardAnnotator | None = None

    def setup(self) -> None:
        self.annotator = self.factory()
        self.annotator.setup()

    def process(self, element):
        shard, digest = element
        annotator = self.annotator
        paths = SidecarPaths.of(self.root, annotator.folder, annotator.stage, self.source, shard)
        if not self.overwrite and is_done(paths, digest):
            return
        shard_input = read_shard_input(self.root, self.source, shard, annotator.columns)
        try:
            rows, rejects, units = annotator.annotate(shard_input)
        finally:
            shard_input.close()
        accounted = annotator.accounted(rows, rejects)
        if units != accounted:
            raise RuntimeError(f"{annotator.stage} {self.source}/{shard}: {units} units in, {len(rows)} rows and "
                               f"{len(rejects)} rejects out account for {accounted}")
        write_sidecar(paths, annotator.stage, rows, rejects, annotator.schema, digest, units,
                      annotator.table_metadata(), units_written=annotator.accounted(rows, []))


def applicable_sources(config: CorpusConfig, annotator: ShardAnnotator, names: list[str] | None) -> list[str]:
    """``names`` as given (checked), else every source with samples of the annotator's modalities."""
    if names:
        unknown = [n for n in names if n not in config.sources]
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not a source of the config (have: {', '.join(config.sources)})")
        return list(names)
    return [name for name in config.sources if has_modality(config.output, name, annotator.modalities)]


def has_modality(root: str, source: str, modalities: frozenset[str]) -> bool:
    """Whether any ingested sample of ``source`` is of one of ``modalities``."""
    return any(row["modality"] in modalities
               for shard in raw_shards(root, source)
               for row in read_shard_input(root, source, shard, ["modality"]).rows)


def run_sidecar_stage(config: CorpusConfig, factory: Callable[[], ShardAnnotator], names: list[str] | None,
                      runner: RunnerConfig, overwrite: bool = False, show_progress: bool = True) -> list[SourceResult]:
    """Run the stage over each source in turn; the results are read back from the committed tables."""
    storage.configure(pipeline_options(runner))
    annotator = factory()
    return [_run_source(config, factory, annotator, name, runner, overwrite, show_progress)
            for name in applicable_sources(config, annotator, names)]


def _run_source(config: CorpusConfig, factory, annotator: ShardAnnotator, name: str, runner: RunnerConfig,
                overwrite: bool, show_progress: bool) -> SourceResult:
    root, stage_params = config.output, annotator.params()
    shards = raw_shards(root, name)
    digests = {shard: params_hash(stage_params, raw_params_hash(root, name, shard)
                                  + annotator.input_digest(root, name, shard)) for shard in shards}
    paths = {shard: SidecarPaths.of(root, annotator.folder, annotator.stage, name, shard) for shard in shards}
    reused = [] if overwrite else [s for s in shards if is_done(paths[s], digests[s])]
    remove_temporaries(root, annotator.folder, annotator.stage, name)
    started = time.monotonic()
    pending = sorted((shard, digest) for shard, digest in digests.items() if shard not in reused)
    pattern = storage.join(root, annotator.folder, name, "[0-9]*.parquet")
    if pending:  # else no worker needs to start, nor load a model
        with ShardProgress(pattern, f"{annotator.stage} {name}", len(pending), enabled=show_progress,
                           reused=len(reused), unit="units"):
            with beam.Pipeline(options=pipeline_options(runner)) as pipeline:
                (
                    pipeline
                    | f"{name}/Shards" >> beam.Create(pending)
                    | f"{name}/Spread" >> beam.Reshuffle()
                    | f"{name}/Annotate" >> beam.ParDo(_AnnotateShard(factory, root, name, overwrite))
                )
    seconds = time.monotonic() - started
    per_shard = {s: read_sidecar_counts(paths[s]) for s in shards}
    counts = sum(per_shard.values(), ShardCounts())
    extra = annotator.manifest_counts([read_footer(paths[s].table) for s in shards])
    removed = len(removed_keys(root, name))
    update_manifest(root, annotator.stage, {name: {
        "params": stage_params,
        "shards": len(shards),
        "counts": {"units": counts.records_in, "written": counts.written, "rejected": counts.rejected_total,
                   "rejected_by_reason": dict(sorted(counts.rejected.items())), **extra,
                   "removed_by_clean": removed},
    }})
    fresh = sum((c for s, c in per_shard.items() if s not in reused), ShardCounts())
    return SourceResult(name, counts, len(shards), len(reused), seconds, fresh, removed)
