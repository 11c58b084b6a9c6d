"""ingest: raw datasets in their own formats -> ``raw/<source>/`` shards and ``rejects/ingest/``.

The Beam graph per source: the reader's parts are spread over workers, each part is read into
candidates and rejects, handed on in batches split by shard (a function of the key), and ``WriteShards``
groups the batches by shard and writes each shard whole. Heavy work (image decoding) happens in the
writer, so it scales with the shard count. Counts for the summary and the manifest are read back from
the shard files, which works the same on every runner.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from dataclasses import asdict
from functools import partial

import apache_beam as beam

from pipelines import storage
from pipelines.card import forget_features, write_card, write_sizes
from pipelines.manifest_io import update_manifest
from pipelines.progress import ShardProgress
from pipelines.raw_shard import (
    SHARD_INDEX_PATTERN,
    ShardCounts,
    ShardPaths,
    has_failed_downloads,
    read_counts,
    read_footer,
)
from pipelines.results import StageResult
from pipelines.runner import RunnerConfig, pipeline_options
from pipelines.shard_transforms import WriteOptions, WriteShards, shard_batches
from pipelines.sources import Reader, SourceError, reader_for
from pipelines.sources.common import InputFile
from schemas import SCHEMA_VERSION, layout
from schemas.config import CorpusConfig, SourceConfig
from schemas.config_build import output_params
from schemas.keys import shard_of
from schemas.tables import PARAMS_KEY

STAGE = "ingest"
log = logging.getLogger(__name__)


def _read_part(part: str, reader: Reader, shards: int):
    return shard_batches(reader.read(part), shards)


def build_source(pipeline, name: str, source: SourceConfig, reader: Reader, parts: list[str],
                 root: str, options: WriteOptions) -> None:
    """Add one source's ingest to ``pipeline``."""
    (
        pipeline
        | f"{name}/Parts" >> beam.Create(parts)
        | f"{name}/Spread" >> beam.Reshuffle()
        | f"{name}/Read" >> beam.FlatMap(_read_part, reader, source.shards)
        | f"{name}/Shards" >> WriteShards(root, STAGE, name, options)
    )


def params_hashes(name: str, source: SourceConfig, config: CorpusConfig, parts: list[str],
                  inputs: list[InputFile]) -> tuple[str, ...]:
    """One hash per shard of everything that changes its bytes: the config, image and text settings, the
    parts, and the input files (name, size, mtime) it depends on: a file that is one sample (an image of
    a folder) only its own shard, other files (annotations, archives) every shard. So an added, removed or
    edited file redoes the shards it touches. Contents are not read (cheap on a cluster): an edit that
    keeps a file's size and mtime needs ``--overwrite``."""
    params = source_params(name, source, config)
    params["parts"] = parts
    params.pop("download")  # how images are fetched does not change what a finished shard holds
    base = json.dumps([params, [f.row() for f in inputs if f.key is None]], sort_keys=True)
    own: dict[int, list] = defaultdict(list)
    for f in inputs:
        if f.key is not None:
            own[shard_of(f.key, source.shards)].append(f.row())
    return tuple(hashlib.sha256((base + json.dumps(own[shard])).encode()).hexdigest()[:16]
                 for shard in range(source.shards))


def manifest_hash(hashes: tuple[str, ...]) -> str:
    """The source's parameters hash in ``corpus.json``: a digest of its shards' hashes."""
    return hashlib.sha256(" ".join(hashes).encode()).hexdigest()[:16]


def source_params(name: str, source: SourceConfig, config: CorpusConfig) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "stage": STAGE,
        "source": name,
        "kind": source.kind,
        "config": asdict(source),
        "image": asdict(config.image),
        "text": output_params(config.text),  # not text.nltk_data: where the data is, not what
        "download": asdict(config.download),
    }


def run_ingest(config: CorpusConfig, names: list[str], runner: RunnerConfig, overwrite: bool = False,
               show_progress: bool = True, retry_failed: bool = False) -> list[StageResult]:
    unknown = [n for n in names if n not in config.sources]
    if unknown:
        raise ValueError(f"--source {', '.join(unknown)}: not in the config (have: {', '.join(config.sources)})")
    storage.configure(pipeline_options(runner))
    results = [_run_source(config, name, runner, overwrite, show_progress, retry_failed) for name in names]
    write_card(config.output, list(config.sources))  # what HF datasets reads beside the shards
    return results


def _run_source(config: CorpusConfig, name: str, runner: RunnerConfig, overwrite: bool,
                show_progress: bool, retry_failed: bool) -> StageResult:
    source = config.sources[name]
    reader = reader_for(name, source, config.text)
    parts = reader.parts()
    hashes = params_hashes(name, source, config, parts, reader.inputs(parts))
    forget_features(config.output, name)  # its shards may change below: the card reads them again
    _remove_temporaries(config.output, name)
    reused = frozenset() if overwrite else frozenset(_reusable_shards(config.output, name, hashes, retry_failed))
    started = time.monotonic()
    pattern = storage.join(config.output, layout.raw(name), SHARD_INDEX_PATTERN)
    with ShardProgress(pattern, name, source.shards - len(reused), enabled=show_progress, reused=len(reused),
                       unit="records"):
        with beam.Pipeline(options=pipeline_options(runner)) as pipeline:
            options = WriteOptions(config.image, hashes, config.download, overwrite, retry_failed, reused)
            build_source(pipeline, name, source, reader, parts, config.output, options)
    seconds = time.monotonic() - started
    params = _footer_params(config.output, name, [s for s in _shard_ids(config.output, name) if s not in reused])
    stale = _stale(params, hashes)
    if not reused and len(stale) == len(params):
        # every record lands in a shard: none with these parameters (reused or written now) means none was
        # read (checked before the shards of an earlier run, with other parameters, are removed as stale)
        raise SourceError(f"source {name}: no record read from {reader.looked_in(parts)}; check sources.{name} "
                          f"(kind {source.kind}) against the release's layout (docs/SOURCES.md)")
    _remove_stale_shards(config.output, name, stale)
    shards = _shard_ids(config.output, name)
    counts = dict(zip(shards, storage.read_all(lambda s: read_counts(ShardPaths.of(config.output, STAGE, name, s)),
                                               shards), strict=True))  # READ_THREADS at a time
    fresh = sum((c for s, c in counts.items() if s not in reused), ShardCounts())
    result = StageResult(name, sum(counts.values(), ShardCounts()), len(shards), len(reused), seconds, fresh)
    _record_in_manifest(config, name, source, manifest_hash(hashes), result)
    write_sizes(config.output, name, {s: c.written for s, c in counts.items()})  # open_clip reads it beside them
    return result


def _shard_ids(root: str, name: str) -> list[int]:
    indexes = storage.glob(storage.join(root, layout.raw(name), SHARD_INDEX_PATTERN))
    return sorted(int(p.rsplit("/", 1)[-1].split(".")[0]) for p in indexes)


def _reusable_shards(root: str, name: str, hashes: tuple[str, ...], retry_failed: bool) -> list[int]:
    """Shards this run will leave as they are: finished with these parameters, and not up for a retry. Which
    files exist comes from one listing per folder; then only the footers of shards with all their files are read
    (concurrently), and with ``retry_failed`` their URL status tables."""
    raw, rejects, urls = (storage.join(root, folder) for folder in (layout.raw(name), layout.rejects(STAGE, name),
                                                                    layout.urls(name)))
    names = storage.names_in([raw, rejects, *([urls] if retry_failed else [])])
    committed = committed_shards(names[raw], names[rejects], len(hashes))
    params = _footer_params(root, name, committed)
    same = [s for s in committed if params[s] == hashes[s]]
    if not retry_failed:
        return same
    exists = partial(storage.listed, names)
    failed = storage.read_all(lambda paths: has_failed_downloads(paths, exists),
                              [ShardPaths.of(root, STAGE, name, s) for s in same])
    return [s for s, f in zip(same, failed, strict=True) if not f]


def committed_shards(raw: frozenset[str], rejects: frozenset[str], count: int) -> list[int]:
    """Shards below ``count`` whose index and tar are among ``raw`` (the file names in ``raw/<source>/``) and
    whose rejects table is among ``rejects`` (in ``rejects/ingest/<source>/``): the only ones whose footer is
    worth reading. (Temporaries of a killed run have other names.)"""
    return [s for s in range(count)
            if layout.table_name(s) in raw and layout.tar_name(s) in raw and layout.table_name(s) in rejects]


def _remove_temporaries(root: str, name: str) -> None:
    """Files a killed run left half-written; never read, since only renamed files count."""
    for folder in (storage.join(root, layout.raw(name)), storage.join(root, layout.rejects(STAGE, name))):
        storage.delete(storage.glob(storage.join(folder, "*.tmp-*")))


def _footer_params(root: str, name: str, shards: list[int]) -> dict[int, str]:
    """The parameters hash in each of these shards' index footers: one read each, concurrently."""
    digests = storage.read_all(lambda path: read_footer(path).get(PARAMS_KEY, b"").decode(),
                               [ShardPaths.of(root, STAGE, name, s).index for s in shards])
    return dict(zip(shards, digests, strict=True))


def _stale(params: dict[int, str], hashes: tuple[str, ...]) -> list[int]:
    """Of the shards whose footers hold ``params``, those written with other parameters than this run's
    ``hashes`` (or beyond its shard count)."""
    return [s for s, digest in params.items() if digest != (hashes[s] if s < len(hashes) else None)]


def _remove_stale_shards(root: str, name: str, shards: list[int]) -> None:
    """Shards of an earlier run with other parameters that this run did not rewrite (no records now)."""
    for shard in shards:
        paths = ShardPaths.of(root, STAGE, name, shard)
        log.warning("removing stale shard %s (written with other parameters)", paths.index)
        storage.delete([p for p in (*paths.all(), paths.urls) if storage.exists(p)])


def _record_in_manifest(config: CorpusConfig, name: str, source: SourceConfig, digest: str,
                        result: StageResult) -> None:
    update_manifest(config.output, STAGE, {name: {
        "kind": source.kind,
        "params": source_params(name, source, config),
        "params_hash": digest,
        "shards": result.shards,
        "counts": result.counts_record(),
    }})
