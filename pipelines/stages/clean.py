"""clean: deduplication across sources and decontamination against evaluation splits, after ingest.

Reads only the shard indexes (key, hashes, text, metadata: about 100 bytes a sample), decides in the
launching process, and records every removed sample as a reject: ``rejects/decontam/<source>/`` for
images of an evaluation split (UNITER §3.3: no val/test image of a downstream task may enter
pre-training, from any source) and ``rejects/dedup/<source>/`` for copies of a sample kept elsewhere,
naming that sample. Shards are not rewritten (DESIGN.md: sidecar tables, not rewritten tars); readers
of ``raw/`` drop removed keys with ``removed_keys``. Every copy of a contaminated image, kept or dropped,
is contaminated too.
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
from schemas.config import CorpusConfig, EvalSetConfig
from schemas.keys import shard_name
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
class _Row:
    key: str
    source: str
    shard: int
    modality: str
    sha256: str | None
    phash: str | None
    text: str | None
    meta: dict


def run_clean(config: CorpusConfig) -> tuple[list[CleanResult], list[Duplicate], list[Contamination]]:
    rows = [row for name in config.sources for row in _index_rows(config.output, name)]
    position = {name: i for i, name in enumerate(config.sources)}
    duplicates = find_duplicates(
        Item(r.key, r.source, r.modality, r.sha256, r.phash, r.text if r.modality == "text" else None,
             (position[r.source], r.key))
        for r in rows
    )
    distance = config.clean.near_duplicate_distance
    refs = (sample_ref(r.key, r.source, config.sources[r.source].kind, r.meta, r.phash) for r in rows)
    contaminations = find_contamination(refs, [_load(e, config) for e in config.clean.eval_sets], distance)
    contaminations += _inherited(duplicates, contaminations, {r.key: r.source for r in rows})
    by_key = {r.key: r for r in rows}
    _write_rejects(config, DECONTAM, _decontam_rejects(contaminations, by_key))
    contaminated = {c.key for c in contaminations}
    _write_rejects(config, DEDUP, _dedup_rejects([d for d in duplicates if d.key not in contaminated], by_key))
    results = _results(config, rows, duplicates, contaminations)
    _record_in_manifest(config, results)
    return results, duplicates, contaminations


def removed_reasons(root: str, source: str) -> dict[str, str]:
    """Key -> why ``clean`` removed it (``contaminated`` or ``duplicate``), for ``source``."""
    reasons: dict[str, str] = {}
    for stage in (DEDUP, DECONTAM):
        for path in storage.glob(storage.join(root, "rejects", stage, source, "*.parquet")):
            with storage.open_read(path) as f:
                table = pq.read_table(f, columns=["key", "reason"])
            reasons.update(zip(table.column("key").to_pylist(), table.column("reason").to_pylist(), strict=True))
    return reasons


def _index_rows(root: str, name: str) -> list[_Row]:
    indexes = storage.glob(storage.join(root, "raw", name, SHARD_INDEX_PATTERN))
    if not indexes:
        raise ValueError(f"source {name}: no ingested shards under {storage.join(root, 'raw', name)}; run ingest first")
    rows = []
    for path in indexes:
        with storage.open_read(path) as f:
            table = pq.read_table(f, columns=_COLUMNS)
        check_version(table.schema, path)
        shard = int(path.rsplit("/", 1)[-1].split(".")[0])
        for row in table.to_pylist():
            meta = json.loads(row.pop("json")).get("meta", {})
            rows.append(_Row(source=name, shard=shard, meta=meta, **row))
    return rows


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


def _inherited(duplicates: list[Duplicate], contaminations: list[Contamination],
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


def _decontam_rejects(contaminations: list[Contamination], rows: dict[str, _Row]) -> list[tuple[_Row, str, str]]:
    by_key = defaultdict(list)
    for c in contaminations:
        by_key[c.key].append(f"{c.eval_set} by {c.matched_by}: {c.detail}")
    return [(rows[key], Reason.CONTAMINATED.value, "; ".join(sorted(details))) for key, details in by_key.items()]


def _dedup_rejects(duplicates: list[Duplicate], rows: dict[str, _Row]) -> list[tuple[_Row, str, str]]:
    return [(rows[d.key], Reason.DUPLICATE.value,
             f"{d.kind} duplicate of {d.duplicate_of}" + (f" (distance {d.distance})" if d.distance else ""))
            for d in duplicates]


def _write_rejects(config: CorpusConfig, stage: str, rejects: list[tuple[_Row, str, str]]) -> None:
    """One table per raw shard with removals; earlier tables of this stage are replaced."""
    by_shard = defaultdict(list)
    for row, reason, detail in rejects:
        by_shard[(row.source, row.shard)].append(
            {"stage": stage, "source": row.source, "key": row.key, "reason": reason, "detail": detail,
             "location": f"raw/{row.source}/{shard_name(row.shard)}.tar"})
    for name in config.sources:
        storage.delete(storage.glob(storage.join(config.output, "rejects", stage, name, "*.parquet")))
    for (source, shard), table_rows in sorted(by_shard.items()):
        path = storage.join(config.output, "rejects", stage, source, f"{shard_name(shard)}.parquet")
        write_table(path + ".tmp", sorted(table_rows, key=lambda r: r["key"]), REJECTS)
        storage.rename(path + ".tmp", path)


def _results(config: CorpusConfig, rows: list[_Row], duplicates: list[Duplicate],
             contaminations: list[Contamination]) -> list[CleanResult]:
    results = {name: CleanResult(name) for name in config.sources}
    source_of = {row.key: row.source for row in rows}
    for row in rows:
        results[row.source].samples += 1
    for c in contaminations:
        results[c.source].contaminated[c.eval_set] += 1
    contaminated = {c.key for c in contaminations}
    for key in contaminated:
        results[source_of[key]].removed_contaminated += 1
    for d in duplicates:
        if d.key not in contaminated:
            results[source_of[d.key]].duplicates[d.kind] += 1
    return list(results.values())


def _record_in_manifest(config: CorpusConfig, results: list[CleanResult]) -> None:
    params = {"near_duplicate_distance": config.clean.near_duplicate_distance,
              "eval_sets": [{"name": e.name, "path": e.path, "images": e.images} for e in config.clean.eval_sets]}
    update_manifest(config.output, "clean", {r.name: {"params": params, "counts": {
        "samples": r.samples,
        "removed": r.removed,
        "kept": r.samples - r.removed,
        "duplicates_by_kind": dict(sorted(r.duplicates.items())),
        "contaminated_by_eval_set": dict(sorted(r.contaminated.items())),
    }} for r in results})
