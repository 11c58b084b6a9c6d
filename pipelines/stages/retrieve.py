"""``retrieve``: the links/ tables, one per query shard (DESIGN.md "Stages").

- ``links/<name>/<image source>/``: mu-VLA §3.2 weak pairs of ``retrieval.retrieve.weak_pairs`` entry
  ``name`` (each image's tag query -> top K sentences of the ``texts`` sources' FAISS indexes), and with
  ``phrase_regions`` ``links/<name>-regions/`` (mu-VLA §3.3.2: noun phrase -> most similar region).
- ``links/related-images/<source>/`` and ``links/related-texts/<source>/``: UNIMO App. A related items.

The logic is in ``retrieval.align`` and ``retrieval.related``, applied per shard by the linkers of
``pipelines.linkers``; this is the Beam shell. One pipeline per linker, ``Create(query shards)
-> Reshuffle -> ParDo``; indexes and models are loaded once per worker (``DoFn.setup``), after the linker's
``prepare`` built what every worker reads (the related items' TF-IDF collections, read a shard at a time).
Tables are committed like every sidecar (``pipelines.sidecar_tables``): atomic, with a params hash covering the
stage parameters, the raw shard and every input table (emb/tags, ann/detect, the indexes' build.json, ...),
so a rerun skips finished shards and a rebuilt input redoes them. A query
that cannot be served (an image without tags, a text nothing matches) is a reject with its reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import apache_beam as beam

from pipelines import storage
from pipelines.linkers import (
    STAGE,
    RelatedImages,
    RelatedTexts,
    ShardLinker,
    WeakPairs,
)
from pipelines.manifest_io import update_manifest
from pipelines.progress import ShardProgress
from pipelines.raw_shard import ShardCounts, read_footer
from pipelines.runner import RunnerConfig, pipeline_options
from pipelines.sidecar_tables import (
    SidecarPaths,
    count_sidecar_rows,
    is_done,
    params_hash,
    raw_params_hash,
    raw_shards,
    read_sidecar,
    read_sidecar_counts,
    remove_temporaries,
    removed_keys,
    write_sidecar,
)
from schemas.config import CorpusConfig
from schemas.tables import PARAMS_KEY


@dataclass
class RetrieveResult:
    """One table x query source, in the shape ``pipelines.summary.format_summary`` prints (written =
    queries served); ``links`` = rows written."""

    name: str
    counts: ShardCounts
    shards: int
    skipped_shards: int
    seconds: float
    links: int
    removed: int = 0  # query samples clean removed, left out


class _LinkShard(beam.DoFn):
    def __init__(self, linker: ShardLinker, overwrite: bool):
        self.linker, self.overwrite = linker, overwrite

    def setup(self) -> None:
        self.linker.setup()

    def process(self, element):
        source, shard, digest = element
        linker = self.linker
        paths = [table.paths(linker.root, source, shard) for table in linker.tables]
        if not self.overwrite and all(is_done(p, digest) for p in paths):
            return
        for table, path, linked in zip(linker.tables, paths, linker.link(source, shard), strict=True):
            served = len({tuple(row[c] for c in table.query) for row in linked.rows})
            if linked.units != served + len(linked.rejects):
                raise RuntimeError(f"{table.name} {source}/{shard}: {linked.units} queries in, {served} served + "
                                   f"{len(linked.rejects)} rejects out")
            write_sidecar(path, f"{STAGE}/{table.name}", linked.rows, linked.rejects, table.schema, digest,
                          linked.units, units_written=served)


def _digest(linker: ShardLinker, params: dict, source: str, shard: int) -> str:
    """The stage parameters, the raw shard and the params hash of every input table of the shard."""
    inputs = {}
    for folder in linker.inputs:
        path = SidecarPaths.of(linker.root, folder, STAGE, source, shard).table
        if not storage.exists(path):
            raise ValueError(f"retrieve {linker.tables[0].name}: no {path}; {linker.input_hint}")
        inputs[folder] = read_footer(path).get(PARAMS_KEY, b"").decode()
    return params_hash({**params, "inputs": inputs}, raw_params_hash(linker.root, source, shard))


def _run_linker(config: CorpusConfig, linker: ShardLinker, runner: RunnerConfig, overwrite: bool,
                show_progress: bool) -> list[RetrieveResult]:
    root, params = config.output, linker.params()
    jobs = [(source, shard, _digest(linker, params, source, shard))
            for source in linker.sources for shard in raw_shards(root, source)]
    reused = {job for job in jobs if not overwrite and all(is_done(t.paths(root, job[0], job[1]), job[2])
                                                          for t in linker.tables)}
    for table in linker.tables:
        for source in linker.sources:
            remove_temporaries(root, f"links/{table.name}", f"{STAGE}/{table.name}", source)
    started = time.monotonic()
    last = linker.tables[-1].name
    pending = [job for job in jobs if job not in reused]
    if pending:  # else not even a worker's setup (indexes, model) is needed
        linker.prepare(runner)
        with ShardProgress(storage.join(root, "links", last, "*", "[0-9]*.parquet"), f"{STAGE} {last}", len(jobs),
                           enabled=show_progress, unit="queries"):
            with beam.Pipeline(options=pipeline_options(runner)) as pipeline:
                (
                    pipeline
                    | f"{last}/Shards" >> beam.Create(pending)
                    | f"{last}/Spread" >> beam.Reshuffle()
                    | f"{last}/Link" >> beam.ParDo(_LinkShard(linker, overwrite))
                )
    seconds = time.monotonic() - started
    results, entries = [], {}
    for table in linker.tables:
        for source in linker.sources:
            shard_jobs = [job for job in jobs if job[0] == source]
            counts, links = ShardCounts(), 0
            for _, shard, _ in shard_jobs:
                paths = table.paths(root, source, shard)
                counts, links = counts + read_sidecar_counts(paths), links + count_sidecar_rows(paths)
            name = f"{table.name}/{source}"
            results.append(RetrieveResult(name, counts, len(shard_jobs), len(reused & set(shard_jobs)), seconds,
                                          links, len(removed_keys(root, source))))
            entries[name] = {"params": params, "shards": len(shard_jobs), "links": links,
                             "counts": {"queries": counts.records_in, "served": counts.written,
                                        "rejected": counts.rejected_total,
                                        "rejected_by_reason": dict(sorted(counts.rejected.items()))}}
    update_manifest(root, STAGE, entries)
    return results


def _with_tables(config: CorpusConfig, folder: str, names: list[str] | None) -> list[str]:
    """``names`` as given, else every source of the config that has ``folder`` tables."""
    if names is not None:
        return list(names)
    return [name for name in config.sources
            if storage.glob(storage.join(config.output, folder, name, "[0-9]*.parquet"))]


def linkers(config: CorpusConfig) -> list[ShardLinker]:
    """The jobs ``retrieval.retrieve`` asks for: each weak-pairs entry, then related images and texts
    (skipped when no source has their inputs)."""
    retrieve, root = config.retrieval.retrieve, config.output
    out: list[ShardLinker] = [WeakPairs(root, weak, retrieve.phrase_regions, config.retrieval.embed)
                              for weak in retrieve.weak_pairs]
    image_queries = _with_tables(config, "ann/detect", retrieve.related_images_queries)
    if image_queries:
        out.append(RelatedImages(root, image_queries,
                                 _with_tables(config, "ann/detect", retrieve.related_images_collections),
                                 retrieve.related_images_top_n))
    text_queries = _with_tables(config, "emb/text", retrieve.related_texts_queries)
    if text_queries:
        out.append(RelatedTexts(root, text_queries,
                                _with_tables(config, "emb/text", retrieve.related_texts_collections),
                                retrieve.related_texts_candidates, retrieve.related_texts_top_n))
    return out


def run_retrieve(config: CorpusConfig, runner: RunnerConfig, overwrite: bool = False,
                 show_progress: bool = True) -> list[RetrieveResult]:
    """Every links/ table the config asks for; results read back from the committed tables."""
    storage.configure(pipeline_options(runner))
    return [result for linker in linkers(config)
            for result in _run_linker(config, linker, runner, overwrite, show_progress)]


def example_pairs(config: CorpusConfig, count: int = 3) -> list[dict]:
    """``count`` weak pairs per ``weak_pairs`` entry to show: the image key, its tag query, the top sentences."""
    root, out = config.output, []
    for weak in config.retrieval.retrieve.weak_pairs:
        shown: list[dict] = []
        for source in weak.images:
            if len(shown) >= count:
                break
            tags = {row["key"]: row["text"] for row in read_sidecar(root, "emb/tags", source, ["key", "text"])}
            links: dict[str, list[dict]] = {}
            for row in read_sidecar(root, f"links/{weak.name}", source, ["query_key", "rank", "text", "score"]):
                links.setdefault(row["query_key"], []).append(row)
            for key in sorted(links)[:count - len(shown)]:
                hits = sorted(links[key], key=lambda row: row["rank"])
                shown.append({"name": weak.name, "image": key, "tags": tags.get(key, ""),
                              "sentences": [(row["score"], row["text"]) for row in hits]})
        out += shown
    return out
