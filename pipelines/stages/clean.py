"""clean: deduplication across sources and decontamination against evaluation splits, after ingest.

Reads only the shard indexes (key, hashes, text, metadata: about 100 bytes a sample) and records every
removed sample as a reject: ``rejects/decontam/<source>/`` for
images of an evaluation split (UNITER §3.3: no val/test image of a downstream task may enter
pre-training, from any source) and ``rejects/dedup/<source>/`` for copies of a sample kept elsewhere,
naming that sample. Shards are not rewritten (DESIGN.md: sidecar tables, not rewritten tars); readers
of ``raw/`` drop removed keys with ``removed_keys``. Every copy of a contaminated image, kept or dropped,
is contaminated too.

Two ways to decide, with the same rules and the same tables: ``run_clean`` here, every row in the
launching process (the reference, and the demo's check), and ``pipelines.stages.clean_pipeline`` (what
``unicorpus clean`` runs: Beam pipelines, no process holding the corpus). What both share is here.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from pipelines import storage
from pipelines.dedup import Duplicate, Item, find_duplicates
from pipelines.evalsets import Contamination, EvalSet, find_contamination, load_evalset, sample_ref
from pipelines.manifest_io import update_manifest
from pipelines.raw_shard import SHARD_INDEX_PATTERN, write_table
from pipelines.sidecar_tables import removed_keys  # noqa: F401 (the readers' entry point, kept here too)
from schemas import layout
from schemas.config import CorpusConfig, EvalSetConfig
from schemas.records import Reason
from schemas.tables import REJECTS, REMOVAL_STAGES, check_version

DEDUP, DECONTAM = REMOVAL_STAGES
_COLUMNS = ["key", "modality", "sha256", "phash", "text", "json"]


@dataclass
class CleanResult:
    name: str
    samples: int = 0
    removed_contaminated: int = 0  # samples of any evaluation split
    duplicates: Counter = field(default_factory=Counter)  # kind -> removed copies (not contaminated)
    contaminated: Counter = field(default_factory=Counter)  # eval set -> matched samples (may overlap)

    @property
    def removed(self) -> int:
        return self.removed_contaminated + sum(self.duplicates.values())


@dataclass(frozen=True)
class IndexRow:
    """What clean reads of one sample of a shard index."""

    key: str
    source: str
    shard: int
    modality: str
    sha256: str | None
    phash: str | None
    text: str | None
    meta: dict


def run_clean(config: CorpusConfig) -> tuple[list[CleanResult], list[Duplicate], list[Contamination]]:
    """Clean in the launching process (every sample's row in memory at once): the reference the Beam
    pipeline (``pipelines.stages.clean_pipeline``) is tested against, and the demo's oracle check."""
    rows = [row for name in config.sources for path in shard_indexes(config.output, name)
            for row in read_index(path, name)]
    position = {name: i for i, name in enumerate(config.sources)}
    duplicates = find_duplicates(item_of(r, position[r.source]) for r in rows)
    refs = (ref_of(r, config) for r in rows)
    contaminations = find_contamination(refs, load_evalsets(config), config.clean.near_duplicate_distance)
    contaminations += inherited(duplicates, contaminations, {r.key: r.source for r in rows})
    tables = reject_tables(duplicates, contaminations, {r.key: (r.source, r.shard) for r in rows})
    written = [write_reject_table(config.output, *where, table_rows) for where, table_rows in sorted(tables.items())]
    delete_stale_tables(config, written)
    counts = tally(duplicates, contaminations, {r.key: r.source for r in rows})
    counts.update((r.source, "samples", "") for r in rows)
    results = clean_results(config, counts)
    record_in_manifest(config, results)
    return results, duplicates, contaminations


def removed_reasons(root: str, source: str) -> dict[str, str]:
    """Key -> why ``clean`` removed it (``contaminated`` or ``duplicate``), for ``source``."""
    reasons: dict[str, str] = {}
    for stage in (DEDUP, DECONTAM):
        for path in storage.glob(storage.join(root, layout.rejects(stage, source), "*.parquet")):
            with storage.open_read(path) as f:
                table = pq.read_table(f, columns=["key", "reason"])
            reasons.update(zip(table.column("key").to_pylist(), table.column("reason").to_pylist(), strict=True))
    return reasons


# --- reading ---------------------------------------------------------------------------------------


def shard_indexes(root: str, name: str) -> list[str]:
    """The shard index paths of source ``name``; an error naming the folder when ingest has not run."""
    indexes = storage.glob(storage.join(root, layout.raw(name), SHARD_INDEX_PATTERN))
    if not indexes:
        raise ValueError(f"source {name}: no ingested shards under {storage.join(root, 'raw', name)}; run ingest first")
    return indexes


def read_index(path: str, name: str) -> list[IndexRow]:
    """The rows of one shard index of source ``name``, only the columns clean needs."""
    with storage.open_read(path) as f:
        table = pq.read_table(f, columns=_COLUMNS)
    check_version(table.schema, path)
    shard = int(path.rsplit("/", 1)[-1].split(".")[0])
    rows = []
    for row in table.to_pylist():
        meta = json.loads(row.pop("json")).get("meta", {})
        rows.append(IndexRow(source=name, shard=shard, meta=meta, **row))
    return rows


def item_of(row: IndexRow, position: int) -> Item:
    """The row as dedup sees it: of a cluster, the earliest source in the config (then key) is kept."""
    return Item(row.key, row.source, row.modality, row.sha256, row.phash,
                row.text if row.modality == "text" else None, (position, row.key))


def ref_of(row: IndexRow, config: CorpusConfig):
    return sample_ref(row.key, row.source, config.sources[row.source].kind, row.meta, row.phash)


def load_evalsets(config: CorpusConfig) -> list[EvalSet]:
    return [_load(e, config) for e in config.clean.eval_sets]


def _load(eval_set: EvalSetConfig, config: CorpusConfig) -> EvalSet:
    loaded = load_evalset(eval_set.path, eval_set.name)
    if eval_set.images:
        loaded.phashes |= _image_hashes(eval_set.images, config)
    return loaded


def _image_hashes(folder: str, config: CorpusConfig) -> set[str]:
    from pipelines.images import ImageError, process_image
    from pipelines.sources.common import IMAGE_EXTENSIONS, list_files

    hashes = set()
    for path in list_files(folder, IMAGE_EXTENSIONS):
        try:
            hashes.add(process_image(storage.read_bytes(path), config.image).phash)
        except ImageError as e:
            raise ValueError(f"{path}: an evaluation image that does not decode: {e}") from e
    return hashes


def inherited(duplicates: list[Duplicate], contaminations: list[Contamination],
               sources: dict[str, str]) -> list[Contamination]:
    """Every copy in a cluster of duplicates shares each contamination found for any copy: an
    evaluation image must not survive as a kept copy when a dropped one gave it away, nor the reverse."""
    clusters: dict[str, set[str]] = defaultdict(set)
    for d in duplicates:
        clusters[d.duplicate_of] |= {d.key, d.duplicate_of}
    found: dict[str, dict[str, Contamination]] = defaultdict(dict)
    for c in contaminations:
        found[c.key].setdefault(c.eval_set, c)
    inherited = []
    for cluster in clusters.values():
        own = [(key, c) for key in sorted(cluster) for c in list(found[key].values()) if c.matched_by != "duplicate"]
        for source_key, c in own:
            for key in sorted(cluster - {source_key}):
                if c.eval_set not in found[key]:
                    found[key][c.eval_set] = Contamination(key, sources[key], c.eval_set, "duplicate",
                                                           f"copy of {source_key} ({c.detail})")
                    inherited.append(found[key][c.eval_set])
    return inherited


def reject_tables(duplicates: list[Duplicate], contaminations: list[Contamination],
                  where: dict[str, tuple[str, int]]) -> dict[tuple[str, str, int], list[dict]]:
    """``(stage, source, shard)`` -> the REJECTS rows of its removals: one ``contaminated`` row per
    contaminated key (every eval set it matched in its detail), one ``duplicate`` row per other dropped
    copy naming the kept key. ``where``: key -> (source, shard) of at least every key named."""
    details = defaultdict(list)
    for c in contaminations:
        details[c.key].append(f"{c.eval_set} by {c.matched_by}: {c.detail}")
    tables = defaultdict(list)

    def add(stage: str, key: str, reason: Reason, detail: str) -> None:
        source, shard = where[key]
        tables[stage, source, shard].append({"stage": stage, "source": source, "key": key, "reason": reason.value,
                                             "detail": detail, "location": layout.raw_tar(source, shard)})

    for key, found in details.items():
        add(DECONTAM, key, Reason.CONTAMINATED, "; ".join(sorted(found)))
    for d in duplicates:
        if d.key not in details:
            add(DEDUP, d.key, Reason.DUPLICATE,
                f"{d.kind} duplicate of {d.duplicate_of}" + (f" (distance {d.distance})" if d.distance else ""))
    return tables


def write_reject_table(root: str, stage: str, source: str, shard: int, rows: list[dict]) -> str:
    """One shard's removals of one stage, sorted by key, written atomically; returns its path."""
    path = storage.join(root, layout.rejects(stage, source), layout.table_name(shard))
    write_table(path + ".tmp", sorted(rows, key=lambda r: r["key"]), REJECTS)
    storage.rename(path + ".tmp", path)
    return path


def delete_stale_tables(config: CorpusConfig, written: list[str]) -> None:
    """Remove the tables of an earlier clean that this one did not write (their shards lost every removal);
    done after the new tables are in, so a killed clean leaves old or new tables, rerun gives the new."""
    kept = set(written)
    for stage in REMOVAL_STAGES:
        for name in config.sources:
            found = storage.glob(storage.join(config.output, layout.rejects(stage, name), "*.parquet"))
            storage.delete([path for path in found if path not in kept])


def tally(duplicates: list[Duplicate], contaminations: list[Contamination], source_of: dict[str, str]) -> Counter:
    """``(source, what, detail)`` -> count: ``contaminated`` per eval set (inherited matches included),
    ``removed_contaminated``, and ``duplicates`` per kind of the dropped copies not contaminated."""
    counts = Counter((c.source, "contaminated", c.eval_set) for c in contaminations)
    contaminated = {c.key for c in contaminations}
    counts.update((source_of[key], "removed_contaminated", "") for key in contaminated)
    counts.update((source_of[d.key], "duplicates", d.kind) for d in duplicates if d.key not in contaminated)
    return counts


def clean_results(config: CorpusConfig, counts: Counter) -> list[CleanResult]:
    """One result per source, in config order, from ``tally`` counts plus ``(source, "samples", "")``."""
    results = {name: CleanResult(name) for name in config.sources}
    for (source, what, detail), n in counts.items():
        result = results[source]
        if what == "samples":
            result.samples += n
        elif what == "removed_contaminated":
            result.removed_contaminated += n
        else:
            getattr(result, what)[detail] += n
    return list(results.values())


def record_in_manifest(config: CorpusConfig, results: list[CleanResult]) -> None:
    params = {"near_duplicate_distance": config.clean.near_duplicate_distance,
              "eval_sets": [{"name": e.name, "path": e.path, "images": e.images} for e in config.clean.eval_sets]}
    update_manifest(config.output, "clean", {r.name: {"params": params, "counts": {
        "samples": r.samples,
        "removed": r.removed,
        "kept": r.samples - r.removed,
        "duplicates_by_kind": dict(sorted(r.duplicates.items())),
        "contaminated_by_eval_set": dict(sorted(r.contaminated.items())),
    }} for r in results})
