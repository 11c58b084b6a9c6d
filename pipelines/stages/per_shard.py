"""The Beam shell of every per-shard stage after clean: detect, parse, rewrite and embed (``ShardAnnotator``s
here), retrieve's linkers (``stages/retrieve.py``) and pack (``stages/pack.py``).

A stage supplies a ``ShardWork``. A job is one raw shard of a source with the digest of everything its
output depends on; the work turns a job into committed files (temporary names, renames, the file that
proves the job done last) and reads done-ness and counts back from those files. This module runs it:
every job's digest first (a missing input fails before any pipeline starts), then one pipeline per group of
sources, ``Create(jobs) -> Reshuffle -> ParDo``, the work set up once per worker (``DoFn.setup``: models,
indexes), finished jobs skipped, progress shown; then the counts are read back from the files (right on
every runner, and for jobs a rerun reused), summed into ``StageResult``s and recorded in ``corpus.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import apache_beam as beam
import pyarrow as pa

from pipelines import storage
from pipelines.manifest_io import update_manifest
from pipelines.progress import ShardProgress
from pipelines.raw_shard import ShardCounts, read_footer
from pipelines.results import StageResult, add_extras
from pipelines.runner import RunnerConfig, pipeline_options
from pipelines.sidecar_tables import (
    ShardInput,
    SidecarPaths,
    has_kept_modality,
    is_done,
    params_hash,
    raw_params_hash,
    raw_shards,
    read_shard_input,
    read_sidecar_counts,
    removal_folders,
    remove_temporaries,
    removed_keys,
    sidecar_folders,
    write_sidecar,
)
from schemas.config import CorpusConfig
from schemas.records import Reject


@dataclass
class Tally:
    """One job's share of one result (a source, a links table of a source, a pack task), from its files."""

    counts: ShardCounts
    extra: dict = field(default_factory=dict)  # stage-specific counts (``results.add_extras`` sums them)


class ShardWork:
    """What a per-shard stage defines. Picklable before ``setup``: it travels to the workers."""

    stage: str = ""  # its name in corpus.json
    unit: str = "units"  # what the progress bar counts
    root: str = ""

    def params(self) -> dict:
        """Everything that changes the output besides the raw shard (recorded in corpus.json)."""
        raise NotImplementedError

    def entry(self, name: str) -> dict:
        """Result ``name``'s corpus.json entry, less its shards and counts."""
        return {"params": self.params()}

    def label(self, sources: list[str]) -> str:
        return f"{self.stage} {', '.join(sources)}"

    def digest(self, source: str, shard: int, exists: Callable[[str], bool] = storage.exists) -> str:
        """What the job's files depend on; a ValueError naming a missing input (checked before any pipeline).
        ``exists``: the launcher, digesting every job at once, answers it from one listing of each of
        ``digest_folders``."""
        raise NotImplementedError

    def digest_folders(self, source: str) -> list[str]:
        """The folders of every file ``digest`` asks ``exists`` about (clean's removals, input tables); none
        (the default): the launcher calls ``digest`` without ``exists``, an existence check per file."""
        return []

    def prepare(self, runner: RunnerConfig) -> None:
        """Build what every worker reads (related items' TF-IDF collections), once, before the first pipeline
        that has jobs to run; nothing by default."""

    def setup(self) -> None:
        """Load models, indexes, collections; once per worker."""

    def teardown(self) -> None:
        """Close what ``setup`` opened."""

    def is_done(self, source: str, shard: int, digest: str, exists: Callable[[str], bool] = storage.exists) -> bool:
        """Whether the job's files are committed with ``digest``. ``exists``: the launcher, checking every job at
        once, answers it from one listing of each of ``folders``."""
        raise NotImplementedError

    def folders(self, source: str) -> list[str]:
        """The folders of every file ``is_done`` asks ``exists`` about; none (the default): the launcher calls
        ``is_done`` without ``exists``, an existence check per file."""
        return []

    def run(self, source: str, shard: int, digest: str) -> None:
        """Make the job's output and commit it, the proof of done-ness last."""
        raise NotImplementedError

    def committed(self, source: str) -> str:
        """The glob of the files a job of ``source`` commits last (the progress bar counts them)."""
        raise NotImplementedError

    def remove_temporaries(self, source: str) -> None:
        """Delete what a killed run left half-written (never read: only renamed files count)."""
        raise NotImplementedError

    def read_back(self, source: str, shard: int, size: Callable[[str], int] = storage.size) -> dict[str, Tally]:
        """The counts of a committed job per result name, in the order results are listed; a file's bytes from
        ``size``."""
        raise NotImplementedError

    def left_out(self, source: str, shard: int, exists: Callable[[str], bool] = storage.exists) -> int:
        """Samples of the shard ``clean`` removed, which the job left out. ``exists``: answered from one listing
        of the source's ``removal_folders``."""
        return len(removed_keys(self.root, source, shard, exists))

    def tally(self, source: str, shard: int, exists: Callable[[str], bool] = storage.exists,
              size: Callable[[str], int] = storage.size) -> tuple[int, dict[str, Tally]]:
        """``left_out`` and ``read_back`` of a committed job, as the launcher reads them back (``size``: answered
        from one listing of each of ``size_folders``); a work whose two would read the same file (pack's footer)
        overrides it, so each file is read once."""
        return self.left_out(source, shard, exists), self.read_back(source, shard, size)

    def size_folders(self, source: str) -> list[str]:
        """The folders of the files whose sizes ``tally`` asks ``size`` about; none (the default): ``size`` is
        ``storage.size``, a request per file."""
        return []


class _RunJob(beam.DoFn):
    def __init__(self, work: ShardWork, overwrite: bool):
        self.work, self.overwrite = work, overwrite

    def setup(self) -> None:
        self.work.setup()

    def teardown(self) -> None:
        self.work.teardown()

    def process(self, job):
        source, shard, digest = job
        if self.overwrite or not self.work.is_done(source, shard, digest):
            self.work.run(source, shard, digest)


def run_shards(work: ShardWork, groups: list[list[str]], runner: RunnerConfig, overwrite: bool = False,
               show_progress: bool = True) -> list[StageResult]:
    """Run ``work`` over every raw shard of the sources, one pipeline per group (a source, or every query
    source of a linker, whose workers share one setup); results read back from the files."""
    storage.configure(pipeline_options(runner))
    work.params()  # once, before the digests that use it are computed in many threads
    jobs = [_with_digests(work, [(source, shard) for source in group for shard in raw_shards(work.root, source)])
            for group in groups]
    done = set() if overwrite else _finished(work, [job for group in jobs for job in group])
    seconds, prepared = [], False
    for group, group_jobs in zip(groups, jobs, strict=True):
        for source in group:
            work.remove_temporaries(source)
        pending = [job for job in group_jobs if job not in done]
        started = time.monotonic()
        if pending:  # else no worker needs to start, nor load a model
            if not prepared:
                work.prepare(runner)
                prepared = True
            label = work.label(group)
            with ShardProgress([work.committed(s) for s in group], label, len(pending), enabled=show_progress,
                               reused=len(group_jobs) - len(pending), unit=work.unit):
                with beam.Pipeline(options=pipeline_options(runner)) as pipeline:
                    (
                        pipeline
                        | f"{label}/Jobs" >> beam.Create(pending)  # in order: sources as given, shards ascending
                        | f"{label}/Spread" >> beam.Reshuffle()
                        | f"{label}/Run" >> beam.ParDo(_RunJob(work, overwrite))
                    )
        seconds.append(time.monotonic() - started)
    results = _read_back(work, jobs, done, seconds)
    update_manifest(work.root, work.stage, {r.name: {**work.entry(r.name), "shards": r.shards,
                                                     "counts": r.counts_record()} for r in results})
    return results


def _with_digests(work: ShardWork, jobs: list[tuple[str, int]]) -> list[tuple[str, int, str]]:
    """``(source, shard, digest)`` of each job: which removals and input tables exist from one listing per
    folder (``digest_folders``; a glob or ``exists`` per shard file was 2-4 requests a shard on S3), the footers
    and removals read concurrently."""
    digests = _for_each(work.digest, work.digest_folders, jobs)
    return [(*job, digest) for job, digest in zip(jobs, digests, strict=True)]


def _finished(work: ShardWork, jobs: list[tuple[str, int, str]]) -> set[tuple[str, int, str]]:
    """The jobs an earlier run finished: which files exist from one listing per folder (not one request per
    file: ~40 ms each on S3, for every shard of the corpus), the footers of the jobs with all their files
    read concurrently."""
    done = _for_each(work.is_done, work.folders, jobs)
    return {job for job, finished in zip(jobs, done, strict=True) if finished}


def _for_each(call: Callable, folders_of: Callable[[str], list[str]], jobs: list[tuple]) -> list:
    """``call(*job)`` of each job, ``storage.READ_THREADS`` at a time, with ``exists=`` answered from one listing
    of each of ``folders_of(source)`` over the jobs' sources; without ``exists`` if there are no such folders."""
    folders = [folder for source in dict.fromkeys(job[0] for job in jobs) for folder in folders_of(source)]
    if not folders:
        return storage.read_all(lambda job: call(*job), jobs)
    exists = partial(storage.listed, storage.names_in(folders))
    return storage.read_all(lambda job: call(*job, exists=exists), jobs)


def _tally(work: ShardWork, source: str, shard: int, digest: str, exists: Callable[[str], bool] = storage.exists,
           size: Callable[[str], int] = storage.size) -> tuple[int, dict[str, Tally]]:
    """A committed job's samples left out (which removal tables exist: one listing of clean's folders) and counts."""
    return work.tally(source, shard, exists, size)


def _sizes(work: ShardWork, jobs: list[tuple]) -> Callable[[str], int]:
    """A file's bytes from one listing of each of ``work.size_folders`` over the jobs' sources (a ``size`` per
    file was a request each); ``storage.size`` for a file the listings did not find."""
    folders = [folder for source in dict.fromkeys(job[0] for job in jobs) for folder in work.size_folders(source)]
    if not folders:
        return storage.size
    sizes = {path: size for folder in dict.fromkeys(folders)
             for path, size, _ in storage.listing(storage.join(folder, "*"))}
    return lambda path: sizes[path] if path in sizes else storage.size(path)


def _read_back(work: ShardWork, jobs: list[list[tuple]], done: set, seconds: list[float]) -> list[StageResult]:
    """Every job's counts summed per result name; a result's time is that of the pipelines it ran in. The files
    are read concurrently (a few requests per job), summed in job order."""
    results: dict[str, StageResult] = {}
    order: dict[str, tuple] = {}
    groups: dict[str, set[int]] = {}
    every_job = [job for group_jobs in jobs for job in group_jobs]
    tallies = iter(_for_each(partial(_tally, work, size=_sizes(work, every_job)), partial(removal_folders, work.root),
                             every_job))
    for g, group_jobs in enumerate(jobs):
        for i, job in enumerate(group_jobs):
            source, shard, _ = job
            left_out, tally_of = next(tallies)
            for position, (name, tally) in enumerate(tally_of.items()):
                if name not in results:
                    results[name] = StageResult(name, ShardCounts(), 0, 0, 0.0, ShardCounts())
                    order[name], groups[name] = (position, g, i), set()
                result = results[name]
                result.counts += tally.counts
                result.extra = add_extras(result.extra, tally.extra)
                result.shards += 1
                if job in done:
                    result.skipped_shards += 1
                else:
                    result.fresh += tally.counts
                result.removed[source] = result.removed.get(source, 0) + left_out
                groups[name].add(g)
    for name, result in results.items():
        result.seconds = sum(seconds[g] for g in groups[name])
    return sorted(results.values(), key=lambda r: order[r.name])


# --- the annotators: one sidecar table per raw shard --------------------------------------------------------


class ShardAnnotator:
    """The pure logic of a stage with one table per raw shard. ``annotate`` returns (rows, rejects, units
    considered), with ``units == accounted(rows, rejects)``: nothing a stage looks at is dropped silently."""

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

    def input_digest(self, root: str, source: str, shard: int, exists: Callable[[str], bool] = storage.exists) -> str:
        """The hash of the other sidecar tables a shard's output is made from (embed tags: ann/detect), so
        a redone input redoes this shard too; "" when the raw shard is the only input. ``exists``: answered
        from one listing of each of ``input_folders``."""
        return ""

    def input_folders(self, root: str, source: str) -> list[str]:
        """The folders of the tables ``input_digest`` asks ``exists`` about."""
        return []

    def annotate(self, shard: ShardInput) -> tuple[list[dict], list[Reject], int]:
        raise NotImplementedError

    def table_metadata(self) -> dict[bytes, bytes]:
        """Extra footer metadata of the table of the shard just annotated (model name, vector dimension,
        the shard's own counts, ...)."""
        return {}

    def extra_counts(self, footer: dict[bytes, bytes]) -> dict:
        """Stage-specific counts of one committed table, from its footer (rewrite: the WordNet refusals);
        summed over shards into the result. None by default."""
        return {}


class AnnotatorWork(ShardWork):
    """A ``ShardAnnotator`` as per-shard work: its table and rejects per raw shard. The annotator is built
    from a picklable factory, so nothing process-local has to travel to a portable runner's workers."""

    def __init__(self, factory: Callable[[], ShardAnnotator], root: str):
        self.factory, self.root = factory, root
        self.annotator = factory()  # unloaded: names, parameters; ``setup`` makes the worker's own
        self.stage = self.annotator.stage
        self._params: dict | None = None

    def params(self) -> dict:
        if self._params is None:  # once: a model's digest reads its weights
            self._params = self.annotator.params()
        return self._params

    def paths(self, source: str, shard: int) -> SidecarPaths:
        return SidecarPaths.of(self.root, self.annotator.folder, self.stage, source, shard)

    def digest(self, source: str, shard: int, exists: Callable[[str], bool] = storage.exists) -> str:
        inputs = self.annotator.input_digest(self.root, source, shard, exists)
        return params_hash(self.params(), raw_params_hash(self.root, source, shard, exists) + inputs)

    def digest_folders(self, source: str) -> list[str]:
        return [*removal_folders(self.root, source), *self.annotator.input_folders(self.root, source)]

    def setup(self) -> None:
        self.annotator = self.factory()
        self.annotator.setup()

    def folders(self, source: str) -> list[str]:
        return sidecar_folders(self.root, self.annotator.folder, self.stage, source)

    def is_done(self, source: str, shard: int, digest: str, exists: Callable[[str], bool] = storage.exists) -> bool:
        return is_done(self.paths(source, shard), digest, exists)

    def run(self, source: str, shard: int, digest: str) -> None:
        annotator = self.annotator
        shard_input = read_shard_input(self.root, source, shard, annotator.columns)
        try:
            rows, rejects, units = annotator.annotate(shard_input)
        finally:
            shard_input.close()
        accounted = annotator.accounted(rows, rejects)
        if units != accounted:
            raise RuntimeError(f"{self.stage} {source}/{shard}: {units} units in, {len(rows)} rows and "
                               f"{len(rejects)} rejects out account for {accounted}")
        write_sidecar(self.paths(source, shard), self.stage, rows, rejects, annotator.schema, digest, units,
                      annotator.table_metadata(), units_written=annotator.accounted(rows, []))

    def committed(self, source: str) -> str:
        return storage.join(self.root, self.annotator.folder, source, "[0-9]*.parquet")

    def remove_temporaries(self, source: str) -> None:
        remove_temporaries(self.root, self.annotator.folder, self.stage, source)

    def read_back(self, source: str, shard: int, size: Callable[[str], int] = storage.size) -> dict[str, Tally]:
        """The table's footer read once (its counts and the stage's extra counts); its bytes from ``size``."""
        paths = self.paths(source, shard)
        footer = read_footer(paths.table)
        return {source: Tally(read_sidecar_counts(paths, footer, size), self.annotator.extra_counts(footer))}

    def size_folders(self, source: str) -> list[str]:
        return [storage.join(self.root, self.annotator.folder, source)]


def applicable_sources(config: CorpusConfig, annotator: ShardAnnotator, names: list[str] | None) -> list[str]:
    """``names`` as given (checked), else every source with samples of the annotator's modalities."""
    if names:
        unknown = [n for n in names if n not in config.sources]
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not a source of the config (have: {', '.join(config.sources)})")
        return list(names)
    return [name for name in config.sources if has_modality(config.output, name, annotator.modalities)]


_MODALITY_ROUND = 1000  # the most shards ``has_modality`` reads before it looks at their answers


def has_modality(root: str, source: str, modalities: frozenset[str]) -> bool:
    """Whether any ingested sample of ``source`` is of one of ``modalities`` (that ``clean`` kept). The shards'
    indexes are read ``storage.READ_THREADS`` at a time in rounds, the first ``READ_THREADS`` shards, each next
    round twice the last up to ``_MODALITY_ROUND``: a source that has one stops after its first round, mostly,
    and one that has none has each of its index footers read once, which rules it out without a row read
    (``has_kept_modality``). Clean's removals from one listing."""
    exists = partial(storage.listed, storage.names_in(removal_folders(root, source)))
    shards = raw_shards(root, source)
    read = partial(has_kept_modality, root, source, modalities=modalities, exists=exists)
    start, size = 0, storage.READ_THREADS
    while start < len(shards):
        if any(storage.read_all(read, shards[start:start + size])):
            return True
        start, size = start + size, min(2 * size, _MODALITY_ROUND)
    return False


def run_sidecar_stage(config: CorpusConfig, factory: Callable[[], ShardAnnotator], names: list[str] | None,
                      runner: RunnerConfig, overwrite: bool = False, show_progress: bool = True) -> list[StageResult]:
    """Run an annotator over each source in turn (a pipeline each); results read back from the tables."""
    storage.configure(pipeline_options(runner))
    work = AnnotatorWork(factory, config.output)
    sources = applicable_sources(config, work.annotator, names)
    return run_shards(work, [[name] for name in sources], runner, overwrite, show_progress)
