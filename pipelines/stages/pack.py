"""``pack``: raw shards + their sidecars -> self-contained training shards under ``packed/<task>/``
(DESIGN.md "Training"; the contract is ``schemas/packed.py``; the logic ``pipelines/pack.py``).

One pipeline per source, ``Create(raw shard ids) -> Reshuffle -> ParDo``, like every per-shard stage. A
raw shard gives one tar per task (``packed/<task>/<source>-NNNNN.tar``, samples sorted by key, fixed tar
headers, written under a temporary name and renamed) and one ``rejects/pack/<source>/NNNNN.parquet``,
committed last: its footer holds the shard's parameters hash (the pack settings, the raw shard, the params
hash of every input table, clean's removals, the tables of other shards it reads) and its counts per task,
so a rerun skips finished shards and the summary, ``sizes.json`` and ``corpus.json`` are read back from the
files. ``units == packed + rejected`` is checked per task and shard before anything is committed.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise

import apache_beam as beam

from pipelines import storage
from pipelines.linkers import _fingerprint
from pipelines.manifest_io import update_manifest
from pipelines.pack import STAGE, PackSettings, ShardPacker, TaskShard, WeakEntry, check_tables
from pipelines.progress import ShardProgress
from pipelines.raw_shard import CountingWriter, ShardCounts, add_member, read_footer, write_table
from pipelines.runner import RunnerConfig, pipeline_options
from pipelines.sidecar_tables import params_hash, raw_params_hash, raw_shards, read_shard_input
from schemas import layout
from schemas import packed as contract
from schemas.config import CorpusConfig
from schemas.tables import PARAMS_KEY, RECORDS_IN_KEY, REJECTS

COUNTS_KEY = b"unicorpus.pack_counts"  # footer of rejects/pack/<source>/NNNNN.parquet: counts per task
_KEY = re.compile(r"[a-z0-9_-]+")


@dataclass
class PackResult:
    """One task over the packed sources, in the shape ``pipelines.summary.format_summary`` prints
    (read = units considered, written = samples packed)."""

    name: str
    counts: ShardCounts
    shards: int
    skipped_shards: int
    seconds: float


@dataclass
class PackRun:
    tasks: list[PackResult]
    left_out: dict[str, Counter] = field(default_factory=dict)  # source -> reason -> raw samples removed by clean


def pack_settings(config: CorpusConfig) -> PackSettings:
    pack, retrieve = config.pack, config.retrieval.retrieve
    names = pack.weak_pairs if pack.weak_pairs is not None else [w.name for w in retrieve.weak_pairs]
    weak = tuple(WeakEntry(w.name, tuple(w.images), tuple(w.texts), retrieve.phrase_regions)
                 for w in retrieve.weak_pairs if w.name in names)
    tasks = tuple(pack.tasks) + tuple(contract.aligned_task(x) for x in pack.aligned_ratios)
    return PackSettings(config.output, tasks, pack.cmcl, weak, tuple(config.sources))


def paths(root: str, source: str, shard: int, task: str | None = None) -> str:
    """A shard's rejects table (the proof it is done), or its tar of ``task``."""
    if task is None:
        return storage.join(root, layout.rejects(STAGE, source), layout.table_name(shard))
    return storage.join(root, layout.packed(task), layout.packed_shard(source, shard))


def read_pack_counts(root: str, source: str, shard: int) -> dict:
    return json.loads(read_footer(paths(root, source, shard))[COUNTS_KEY])


def is_done(root: str, source: str, shard: int, digest: str) -> bool:
    path = paths(root, source, shard)
    if not storage.exists(path):
        return False
    metadata = read_footer(path)
    if metadata.get(PARAMS_KEY, b"").decode() != digest:
        return False
    tasks = json.loads(metadata[COUNTS_KEY])["tasks"]
    return all(storage.exists(paths(root, source, shard, task)) for task, c in tasks.items() if c["packed"])


def write_packed(root: str, source: str, shard: int, digest: str, out: dict[str, TaskShard], left_out: Counter) -> dict:
    """Commit one raw shard: each task's tar (or none when it has no sample), then the rejects table with the
    digest and counts, last. Returns the counts."""
    counts = {"tasks": {}, "left_out": dict(sorted(left_out.items()))}
    for task, shard_out in out.items():
        if shard_out.units != len(shard_out.samples) + len(shard_out.rejects):
            raise RuntimeError(f"pack {task} {source}/{shard}: {shard_out.units} units in, {len(shard_out.samples)} "
                               f"samples and {len(shard_out.rejects)} rejects out")
        tar = paths(root, source, shard, task)
        size = _write_tar(tar, shard_out.samples) if shard_out.samples else 0
        if not shard_out.samples and storage.exists(tar):
            storage.delete([tar])  # an earlier run's samples that this one does not pack
        counts["tasks"][task] = {"units": shard_out.units, "packed": len(shard_out.samples), "bytes": size,
                                 "rejected": dict(sorted(Counter(r.reason.value for r in shard_out.rejects).items()))}
    rows = sorted(({"stage": f"{STAGE}/{task}", "source": r.source, "key": r.key, "location": r.location,
                    "reason": r.reason.value, "detail": r.detail} for task, o in out.items() for r in o.rejects),
                  key=lambda r: (r["stage"], r["key"] or "", r["location"], r["reason"], r["detail"]))
    path = paths(root, source, shard)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    units = sum(task["units"] for task in counts["tasks"].values())  # what the progress bar counts
    write_table(tmp, rows, REJECTS, {PARAMS_KEY: digest.encode(), RECORDS_IN_KEY: str(units).encode(),
                                     COUNTS_KEY: json.dumps(counts, sort_keys=True).encode()})
    storage.rename(tmp, path)
    return counts


def _write_tar(path: str, samples: list) -> int:
    """Samples sorted by key, fixed headers, under a temporary name then renamed; returns the bytes written."""
    samples = sorted(samples, key=lambda s: s.key)
    for previous, sample in pairwise(samples):
        if previous.key == sample.key:
            raise RuntimeError(f"{path}: two packed samples with key {sample.key}")
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with storage.create(tmp) as f:
        writer = CountingWriter(f)
        with tarfile.open(fileobj=writer, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for sample in samples:
                if not _KEY.fullmatch(sample.key):
                    raise RuntimeError(f"{path}: packed key {sample.key!r} is not a WebDataset key ([a-z0-9_-])")
                for extension, data in sample.members:
                    add_member(tar, f"{sample.key}.{extension}", data)
    storage.rename(tmp, path)
    return writer.tell()


class _PackShard(beam.DoFn):
    def __init__(self, settings: PackSettings, overwrite: bool):
        self.settings, self.overwrite = settings, overwrite
        self.packer: ShardPacker | None = None

    def setup(self) -> None:
        self.packer = ShardPacker(self.settings)
        self.packer.setup()

    def teardown(self) -> None:
        if self.packer is not None:
            self.packer.close()

    def process(self, element):
        source, shard, digest = element
        root = self.settings.root
        if not self.overwrite and is_done(root, source, shard, digest):
            return
        out, left_out = self.packer.pack(source, shard)
        write_packed(root, source, shard, digest, out, left_out)


def _removals_digest(root: str, sources: tuple[str, ...]) -> str:
    """What ``clean`` removed, over every source (a removal anywhere may drop a related item here)."""
    digest = hashlib.sha256()
    for source in sources:
        for stage in ("dedup", "decontam"):
            for path in storage.glob(storage.join(root, layout.rejects(stage, source), "*.parquet")):
                digest.update(path.rsplit("/", 3)[-3].encode() + storage.read_bytes(path))
    return digest.hexdigest()[:16]


def shard_digest(settings: PackSettings, source: str, shard: int, shared: dict) -> str:
    """The pack settings, the raw shard, every input table of the shard (their params hashes, which cover
    their own inputs: the related-items tables cover their collections) and ``shared`` (clean's removals,
    the parses of the weak pairs' text sources). Raises ValueError naming a missing input table."""
    modalities = {row["modality"] for row in read_shard_input(settings.root, source, shard, ["modality"]).rows}
    inputs = {
        path.rsplit("/", 3)[-3] + "/" + path.rsplit("/", 3)[-2]: read_footer(path).get(PARAMS_KEY, b"").decode()
        for path in check_tables(settings, source, shard, modalities)
    }
    return params_hash({**settings.params(), "inputs": inputs, **shared}, raw_params_hash(settings.root, source, shard))


def _shared_inputs(settings: PackSettings) -> dict:
    root = settings.root
    shared = {"removed": _removals_digest(root, settings.sources)}
    if contract.WEAK_PAIRS in settings.tasks and settings.weak:
        texts = sorted({name for w in settings.weak for name in w.texts})
        for name in texts:
            for shard in raw_shards(root, name):
                check_parse = storage.join(root, layout.ann("parse"), name, layout.table_name(shard))
                if not storage.exists(check_parse):
                    raise ValueError(f"pack weak_pairs: no {check_parse} (the retrieved sentences' noun phrases); "
                                     f"run `unicorpus annotate parse` first, or leave weak_pairs out of pack.tasks")
        shared["weak_texts_parse"] = _fingerprint(root, layout.ann("parse"), texts)
    return shared


def run_pack(config: CorpusConfig, names: list[str] | None, runner: RunnerConfig, overwrite: bool = False,
             show_progress: bool = True) -> PackRun:
    """Pack every source (``names``, else ``pack.sources``, else all); results read back from the files."""
    storage.configure(pipeline_options(runner))
    settings = pack_settings(config)
    sources = list(names or config.pack.sources or config.sources)
    unknown = [name for name in sources if name not in config.sources]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a source of the config (have: {', '.join(config.sources)})")
    root = config.output
    shared = _shared_inputs(settings)
    jobs = {
        source: [(source, shard, shard_digest(settings, source, shard, shared)) for shard in raw_shards(root, source)]
        for source in sources
    }  # every input checked before any pipeline starts
    seconds: dict[str, float] = {}
    reused: dict[str, int] = {}
    for source in sources:
        pending = [job for job in jobs[source] if overwrite or not is_done(root, *job)]
        reused[source] = len(jobs[source]) - len(pending)
        _remove_temporaries(root, settings, source)
        started = time.monotonic()
        if pending:
            pattern = storage.join(root, layout.rejects(STAGE, source), "[0-9]*.parquet")
            with ShardProgress(pattern, f"pack {source}", len(pending), enabled=show_progress,
                               reused=reused[source], unit="units"):
                with beam.Pipeline(options=pipeline_options(runner)) as pipeline:
                    (
                        pipeline
                        | f"{source}/Shards" >> beam.Create(sorted(pending))
                        | f"{source}/Spread" >> beam.Reshuffle()
                        | f"{source}/Pack" >> beam.ParDo(_PackShard(settings, overwrite))
                    )
        seconds[source] = time.monotonic() - started
    result = _results(root, settings, jobs, reused, seconds)
    write_sizes(root, settings.tasks)
    _record(root, settings, result, jobs)
    return result


def _remove_temporaries(root: str, settings: PackSettings, source: str) -> None:
    patterns = [storage.join(root, layout.packed(task), f"{source}-*.tmp-*") for task in settings.tasks]
    patterns.append(storage.join(root, layout.rejects(STAGE, source), "*.tmp-*"))
    for pattern in patterns:
        storage.delete(storage.glob(pattern))


def _results(root: str, settings: PackSettings, jobs: dict, reused: dict, seconds: dict) -> PackRun:
    totals = {task: ShardCounts() for task in settings.tasks}
    left_out: dict[str, Counter] = {}
    for source, source_jobs in jobs.items():
        left_out[source] = Counter()
        for _, shard, _ in source_jobs:
            counts = read_pack_counts(root, source, shard)
            left_out[source].update(counts["left_out"])
            for task, c in counts["tasks"].items():
                totals[task] += ShardCounts(c["units"], c["packed"], c["bytes"], Counter(c["rejected"]))
    shards, total_seconds = sum(len(j) for j in jobs.values()), sum(seconds.values())
    return PackRun([PackResult(task, totals[task], shards, sum(reused.values()), total_seconds)
                    for task in settings.tasks], left_out)


def write_sizes(root: str, tasks: tuple[str, ...]) -> None:
    """``packed/<task>/sizes.json``: every tar of the folder -> its sample count (the open_clip convention),
    from the footers of the shards that wrote them."""
    for task in tasks:
        folder = storage.join(root, layout.packed(task))
        sizes = {}
        for tar in storage.glob(storage.join(folder, "*.tar")):
            name = tar.rsplit("/", 1)[-1]
            source, _, number = name[: -len(".tar")].rpartition("-")
            sizes[name] = read_pack_counts(root, source, int(number))["tasks"][task]["packed"]
        path = storage.join(folder, contract.SIZES_FILE)
        storage.write_bytes(path + ".tmp", (json.dumps(sizes, indent=1, sort_keys=True) + "\n").encode())
        storage.rename(path + ".tmp", path)


def _record(root: str, settings: PackSettings, result: PackRun, jobs: dict) -> None:
    entries = {r.name: {"params": settings.params(), "sources": sorted(jobs), "shards": r.shards,
                        "counts": {"units": r.counts.records_in, "packed": r.counts.written,
                                   "rejected": r.counts.rejected_total,
                                   "rejected_by_reason": dict(sorted(r.counts.rejected.items()))}}
               for r in result.tasks}
    entries["left_out"] = {source: dict(sorted(c.items())) for source, c in sorted(result.left_out.items())}
    update_manifest(root, STAGE, entries)


def format_left_out(run: PackRun) -> str:
    """Raw samples that no task packed because ``clean`` removed them, per source and reason."""
    lines = [f"  {source}: " + ", ".join(f"{reason} {n}" for reason, n in sorted(c.items()))
             for source, c in sorted(run.left_out.items()) if c]
    return ("left out (removed by clean):\n" + "\n".join(lines)) if lines else "left out (removed by clean): none"
