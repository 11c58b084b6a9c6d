"""``pack``: raw shards + their sidecars -> self-contained training shards under ``packed/<task>/``
(DESIGN.md "Training"; the contract is ``schemas/packed.py``; the logic ``pipelines/pack.py``).

``PackWork`` is the stage's per-shard work on the shell of every per-shard stage (``stages/per_shard.py``): one
pipeline per source, ``Create(raw shard jobs) -> Reshuffle -> ParDo``. A raw shard gives one tar per task
(``packed/<task>/<source>-NNNNN.tar``, samples sorted by key, fixed tar headers, written under a temporary name and
renamed) and one ``rejects/pack/<source>/NNNNN.parquet``, committed last: its footer holds the shard's parameters
hash (the pack settings, the raw shard, the params hash of every input table, clean's removals, the tables of other
shards it reads) and its counts per task, so a rerun skips finished shards and the summary (a result per task: read
= units, written = samples packed, bytes of its tars), ``sizes.json`` and ``corpus.json`` are read back from the
files. ``units == packed + rejected`` is checked per task and shard before anything is committed.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial
from itertools import pairwise

from pipelines import storage
from pipelines.linkers import _fingerprint
from pipelines.manifest_io import read_manifest, update_manifest
from pipelines.pack import STAGE, PackSettings, ShardPacker, TaskShard, WeakEntry, check_tables, table_folders
from pipelines.raw_shard import CountingWriter, ShardCounts, add_member, read_footer, write_table
from pipelines.results import StageResult
from pipelines.runner import RunnerConfig, pipeline_options
from pipelines.sidecar_tables import (
    params_hash,
    raw_shards,
    read_shard_input,
    removal_folders,
    table_path,
)
from pipelines.stages.per_shard import ShardWork, Tally, run_shards
from schemas import layout
from schemas import packed as contract
from schemas.config import CorpusConfig
from schemas.tables import PARAMS_KEY, RECORDS_IN_KEY, REJECTS

COUNTS_KEY = b"unicorpus.pack_counts"  # footer of rejects/pack/<source>/NNNNN.parquet: counts per task
_KEY = re.compile(r"[a-z0-9_-]+")


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


def is_done(root: str, source: str, shard: int, digest: str, exists: Callable[[str], bool] = storage.exists) -> bool:
    path = paths(root, source, shard)
    if not exists(path):
        return False
    metadata = read_footer(path)
    if metadata.get(PARAMS_KEY, b"").decode() != digest:
        return False
    tasks = json.loads(metadata[COUNTS_KEY])["tasks"]
    return all(exists(paths(root, source, shard, task)) for task, c in tasks.items() if c["packed"])


def write_packed(root: str, source: str, shard: int, digest: str, out: Iterable[tuple[str, TaskShard]],
                 left_out: Counter) -> dict:
    """Commit one raw shard: each task's tar (or none when it has no sample) as the task comes, its samples
    let go once written, then the rejects table with the digest and counts, last. Returns the counts."""
    counts: dict = {"tasks": {}, "left_out": dict(sorted(left_out.items()))}
    rejects = {}
    for task, shard_out in out:
        if shard_out.units != len(shard_out.samples) + len(shard_out.rejects):
            raise RuntimeError(f"pack {task} {source}/{shard}: {shard_out.units} units in, {len(shard_out.samples)} "
                               f"samples and {len(shard_out.rejects)} rejects out")
        tar = paths(root, source, shard, task)
        size = _write_tar(tar, shard_out.samples) if shard_out.samples else 0
        if not shard_out.samples and storage.exists(tar):
            storage.delete([tar])  # an earlier run's samples that this one does not pack
        counts["tasks"][task] = {"units": shard_out.units, "packed": len(shard_out.samples), "bytes": size,
                                 "rejected": dict(sorted(Counter(r.reason.value for r in shard_out.rejects).items()))}
        rejects[task] = shard_out.rejects
        del shard_out  # its samples go before the next task's are made
    rows = sorted(({"stage": f"{STAGE}/{task}", "source": r.source, "key": r.key, "location": r.location,
                    "reason": r.reason.value, "detail": r.detail} for task, found in rejects.items() for r in found),
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


def _removals_digest(root: str, sources: tuple[str, ...]) -> str:
    """What ``clean`` removed, over every source (a removal anywhere may drop a related item here); the files
    read ``storage.READ_THREADS`` at a time, a thousand held at once (a table per shard with removals)."""
    digest = hashlib.sha256()
    paths = [path for source in sources for folder in removal_folders(root, source)
             for path in storage.glob(storage.join(folder, "*.parquet"))]
    for start in range(0, len(paths), 1000):
        batch = paths[start:start + 1000]
        for path, data in zip(batch, storage.read_all(storage.read_bytes, batch), strict=True):
            digest.update(path.rsplit("/", 3)[-3].encode() + data)
    return digest.hexdigest()[:16]


def shard_digest(settings: PackSettings, source: str, shard: int, shared: dict,
                 exists: Callable[[str], bool] = storage.exists) -> str:
    """The pack settings, the raw shard, every input table of the shard (their params hashes, which cover
    their own inputs: the related-items tables cover their collections) and ``shared`` (clean's removals,
    the parses of the weak pairs' text sources). Raises ValueError naming a missing input table. ``exists``:
    answered from one listing of each of ``PackWork.digest_folders``."""
    raw = read_shard_input(settings.root, source, shard, ["modality"], exists=exists)  # one open: rows and footer
    modalities = {row["modality"] for row in raw.rows}
    inputs = {
        path.rsplit("/", 3)[-3] + "/" + path.rsplit("/", 3)[-2]: read_footer(path).get(PARAMS_KEY, b"").decode()
        for path in check_tables(settings, source, shard, modalities, exists)
    }
    return params_hash({**settings.params(), "inputs": inputs, **shared}, raw.raw_hash)


def _shared_inputs(settings: PackSettings) -> dict:
    root = settings.root
    shared = {"removed": _removals_digest(root, settings.sources)}
    if contract.WEAK_PAIRS in settings.tasks and settings.weak:
        texts = sorted({name for w in settings.weak for name in w.texts})
        parses = storage.names_in([storage.join(root, layout.ann("parse"), name) for name in texts])
        for name in texts:
            for shard in raw_shards(root, name):
                check_parse = table_path(root, layout.ann("parse"), name, shard)
                if not storage.listed(parses, check_parse):
                    raise ValueError(f"pack weak_pairs: no {check_parse} (the retrieved sentences' noun phrases); "
                                     f"run `unicorpus annotate parse` first, or leave weak_pairs out of pack.tasks")
        shared["weak_texts_parse"] = _fingerprint(root, layout.ann("parse"), texts)
    return shared


class PackWork(ShardWork):
    """Pack as per-shard work: a job is a raw shard, its output a tar per task and the rejects table (last);
    a result per task over the sources."""

    stage = STAGE

    def __init__(self, settings: PackSettings, shared: dict, sources: list[str]):
        self.settings, self.shared, self.sources, self.root = settings, shared, sources, settings.root
        self.packer: ShardPacker | None = None
        self.footers: dict[tuple[str, int], dict] = {}  # (source, shard) -> its counts, as ``tally`` read them

    def params(self) -> dict:
        return self.settings.params()

    def entry(self, name: str) -> dict:
        return {"params": self.params(), "sources": sorted(self.sources)}

    def digest(self, source: str, shard: int, exists: Callable[[str], bool] = storage.exists) -> str:
        return shard_digest(self.settings, source, shard, self.shared, exists)

    def digest_folders(self, source: str) -> list[str]:
        return [*removal_folders(self.root, source), *table_folders(self.settings, source)]

    def setup(self) -> None:
        self.packer = ShardPacker(self.settings)
        self.packer.setup()

    def folders(self, source: str) -> list[str]:
        return [storage.join(self.root, layout.rejects(STAGE, source)),
                *(storage.join(self.root, layout.packed(task)) for task in self.settings.tasks)]

    def is_done(self, source: str, shard: int, digest: str, exists: Callable[[str], bool] = storage.exists) -> bool:
        return is_done(self.root, source, shard, digest, exists)

    def run(self, source: str, shard: int, digest: str) -> None:
        out, left_out = self.packer.pack(source, shard)
        write_packed(self.root, source, shard, digest, out, left_out)

    def committed(self, source: str) -> str:
        return storage.join(self.root, layout.rejects(STAGE, source), "[0-9]*.parquet")

    def remove_temporaries(self, source: str) -> None:
        patterns = [storage.join(self.root, layout.packed(task), f"{source}-*.tmp-*") for task in self.settings.tasks]
        patterns.append(storage.join(self.root, layout.rejects(STAGE, source), "*.tmp-*"))
        for pattern in patterns:
            storage.delete(storage.glob(pattern))

    def tally(self, source: str, shard: int, exists: Callable[[str], bool] = storage.exists,
              size: Callable[[str], int] = storage.size) -> tuple[int, dict[str, Tally]]:
        """The raw samples the packer found removed and each task's counts, as the shard's footer records them:
        one read (no listing asked), kept in ``footers`` for ``write_sizes`` and ``left_out``."""
        counts = self.footers[(source, shard)] = read_pack_counts(self.root, source, shard)
        return sum(counts["left_out"].values()), _tallies(counts)


def _tallies(counts: dict) -> dict[str, Tally]:
    """A result per task of one shard's footer counts."""
    return {task: Tally(ShardCounts(c["units"], c["packed"], c["bytes"], Counter(c["rejected"])))
            for task, c in counts["tasks"].items()}


def run_pack(config: CorpusConfig, names: list[str] | None, runner: RunnerConfig, overwrite: bool = False,
             show_progress: bool = True) -> list[StageResult]:
    """Pack every source (``names``, else ``pack.sources``, else all), a pipeline each; a result per task,
    read back from the files."""
    storage.configure(pipeline_options(runner))
    settings = pack_settings(config)
    sources = list(names or config.pack.sources or config.sources)
    unknown = [name for name in sources if name not in config.sources]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not a source of the config (have: {', '.join(config.sources)})")
    work = PackWork(settings, _shared_inputs(settings), sources)
    results = run_shards(work, [[source] for source in sources], runner, overwrite, show_progress)
    write_sizes(config.output, settings.tasks, work.footers)  # the footers the read back read, not read again
    update_manifest(config.output, STAGE, {"left_out": left_out(config.output, results, work.footers)})
    return results


def _footers_of(root: str, jobs: list[tuple[str, int]], footers: dict[tuple[str, int], dict] | None) -> list[dict]:
    """The footer counts of each ``(source, shard)``: from ``footers`` where they are, the rest read
    ``storage.READ_THREADS`` at a time."""
    known = footers or {}
    missing = [job for job in jobs if job not in known]
    read = dict(zip(missing, storage.read_all(partial(_counts_of, root), missing), strict=True))
    return [known[job] if job in known else read[job] for job in jobs]


def left_out(root: str, tasks: list[StageResult],
             footers: dict[tuple[str, int], dict] | None = None) -> dict[str, dict[str, int]]:
    """Raw samples no task packed because ``clean`` removed them, per packed source (those of ``tasks``, the
    results of ``run_pack``) and reason, from the shards' footers: those in ``footers`` (``PackWork.footers``),
    the rest read ``storage.READ_THREADS`` at a time."""
    out = {}
    for source in sorted({source for task in tasks for source in task.removed}):
        reasons: Counter = Counter()
        for counts in _footers_of(root, [(source, shard) for shard in raw_shards(root, source)], footers):
            reasons.update(counts["left_out"])
        out[source] = dict(sorted(reasons.items()))
    return out


def recorded_left_out(root: str) -> dict[str, dict[str, int]]:
    """What the last ``run_pack`` recorded of ``left_out`` in the manifest: a report after a run reads one file,
    not every shard's footer again."""
    return read_manifest(root)["stages"][STAGE]["left_out"]


def format_left_out(left: dict[str, dict[str, int]]) -> str:
    lines = [f"  {source}: " + ", ".join(f"{reason} {n}" for reason, n in reasons.items())
             for source, reasons in sorted(left.items()) if reasons]
    return ("left out (removed by clean):\n" + "\n".join(lines)) if lines else "left out (removed by clean): none"


def write_sizes(root: str, tasks: tuple[str, ...], footers: dict[tuple[str, int], dict] | None = None) -> None:
    """``packed/<task>/sizes.json``: every tar of the folder -> its sample count (the open_clip convention),
    from the footers of the shards that wrote them: those in ``footers`` (``PackWork.footers``), the rest (other
    sources' tars) each read once for every task, ``storage.READ_THREADS`` at a time."""
    folders = {task: storage.join(root, layout.packed(task)) for task in tasks}
    names = {task: [tar.rsplit("/", 1)[-1] for tar in storage.glob(storage.join(folder, "*.tar"))]
             for task, folder in folders.items()}
    shards = sorted({_tar_shard(name) for task_names in names.values() for name in task_names})
    packed = {shard: {task: c["packed"] for task, c in counts["tasks"].items()}
              for shard, counts in zip(shards, _footers_of(root, shards, footers), strict=True)}
    for task, folder in folders.items():
        sizes = {name: packed[_tar_shard(name)][task] for name in names[task]}
        path = storage.join(folder, contract.SIZES_FILE)
        storage.write_whole(path, (json.dumps(sizes, indent=1, sort_keys=True) + "\n").encode())


def _counts_of(root: str, job: tuple[str, int]) -> dict:
    """A raw shard's counts (``job``: source, shard), from its footer."""
    return read_pack_counts(root, *job)


def _tar_shard(name: str) -> tuple[str, int]:
    """(source, raw shard) of a packed tar's name (``<source>-NNNNN.tar``)."""
    source, _, number = name[: -len(".tar")].rpartition("-")
    return source, int(number)
