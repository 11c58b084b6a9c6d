"""``retrieve``: the links/ tables, one per query shard (DESIGN.md "Stages").

- ``links/<name>/<image source>/``: mu-VLA §3.2 weak pairs of ``retrieval.retrieve.weak_pairs`` entry
  ``name`` (each image's tag query -> top K sentences of the ``texts`` sources' FAISS indexes), and with
  ``phrase_regions`` ``links/<name>-regions/`` (mu-VLA §3.3.2: noun phrase -> most similar region).
- ``links/related-images/<source>/`` and ``links/related-texts/<source>/``: UNIMO App. A related items.

The logic is in ``retrieval.align`` and ``retrieval.related``, applied per shard by the linkers of
``pipelines.linkers``; ``LinkWork`` runs them on the shell of every per-shard stage (``stages/per_shard.py``):
one pipeline per linker, ``Create(query shards) -> Reshuffle -> ParDo``, after the linker's ``prepare`` built
what every worker reads (the related items' TF-IDF collections, read a shard at a time); indexes and models
are loaded once per worker (``DoFn.setup``).
Tables are committed like every sidecar (``pipelines.sidecar_tables``): atomic, with a params hash covering the
stage parameters, the raw shard and every input table (emb/tags, ann/detect, the indexes' build.json, ...),
so a rerun skips finished shards and a rebuilt input redoes them. A query
that cannot be served (an image without tags, a text nothing matches) is a reject with its reason.
"""

from __future__ import annotations

from collections.abc import Callable

from pipelines import storage
from pipelines.linkers import (
    STAGE,
    RelatedImages,
    RelatedTexts,
    ShardLinker,
    WeakPairs,
)
from pipelines.raw_shard import read_footer, read_footer_and_rows
from pipelines.results import StageResult
from pipelines.runner import RunnerConfig, pipeline_options
from pipelines.sidecar_tables import (
    is_done,
    params_hash,
    raw_params_hash,
    read_sidecar,
    read_sidecar_counts,
    removal_folders,
    remove_temporaries,
    sidecar_folders,
    table_path,
    write_sidecar,
)
from pipelines.stages.per_shard import ShardWork, Tally, run_shards
from schemas import layout
from schemas.config import CorpusConfig
from schemas.tables import PARAMS_KEY


class LinkWork(ShardWork):
    """A linker as per-shard work: a job is a query shard, its output one table per ``linker.tables`` (the
    last committed last); a result per table and query source, ``written`` = queries served, with ``links``
    (rows) as its extra count."""

    stage = STAGE
    unit = "queries"

    def __init__(self, linker: ShardLinker):
        self.linker, self.root = linker, linker.root
        self._params: dict | None = None

    def params(self) -> dict:
        if self._params is None:  # once: it hashes the indexes' build.json and the collections
            self._params = self.linker.params()
        return self._params

    def label(self, sources: list[str]) -> str:
        return f"{STAGE} {self.linker.tables[-1].name}"

    def digest(self, source: str, shard: int, exists: Callable[[str], bool] = storage.exists) -> str:
        """The stage parameters, the raw shard and the params hash of every input table of the shard."""
        inputs = {}
        for folder in self.linker.inputs:
            path = table_path(self.root, folder, source, shard)
            if not exists(path):
                raise ValueError(f"retrieve {self.linker.tables[0].name}: no {path}; {self.linker.input_hint}")
            inputs[folder] = read_footer(path).get(PARAMS_KEY, b"").decode()
        return params_hash({**self.params(), "inputs": inputs}, raw_params_hash(self.root, source, shard, exists))

    def digest_folders(self, source: str) -> list[str]:
        return [*removal_folders(self.root, source),
                *(storage.join(self.root, folder, source) for folder in self.linker.inputs)]

    def prepare(self, runner: RunnerConfig) -> None:
        self.linker.prepare(runner)

    def setup(self) -> None:
        self.linker.setup()

    def folders(self, source: str) -> list[str]:
        return [f for table in self.linker.tables
                for f in sidecar_folders(self.root, layout.links(table.name), table.stage, source)]

    def is_done(self, source: str, shard: int, digest: str, exists: Callable[[str], bool] = storage.exists) -> bool:
        return all(is_done(table.paths(self.root, source, shard), digest, exists) for table in self.linker.tables)

    def run(self, source: str, shard: int, digest: str) -> None:
        for table, linked in zip(self.linker.tables, self.linker.link(source, shard), strict=True):
            served = len({tuple(row[c] for c in table.query) for row in linked.rows})
            if linked.units != served + len(linked.rejects):
                raise RuntimeError(f"{table.name} {source}/{shard}: {linked.units} queries in, {served} served + "
                                   f"{len(linked.rejects)} rejects out")
            write_sidecar(table.paths(self.root, source, shard), table.stage, linked.rows, linked.rejects,
                          table.schema, digest, linked.units, units_written=served)

    def committed(self, source: str) -> str:
        return storage.join(self.root, layout.links(self.linker.tables[-1].name), source, "[0-9]*.parquet")

    def remove_temporaries(self, source: str) -> None:
        for table in self.linker.tables:
            remove_temporaries(self.root, layout.links(table.name), table.stage, source)

    def read_back(self, source: str, shard: int, size: Callable[[str], int] = storage.size) -> dict[str, Tally]:
        """Each table's footer read once (its counts and its rows: the links); its bytes from ``size``."""
        out = {}
        for table in self.linker.tables:
            paths = table.paths(self.root, source, shard)
            footer, links = read_footer_and_rows(paths.table)
            out[f"{table.name}/{source}"] = Tally(read_sidecar_counts(paths, footer, size), {"links": links})
        return out

    def size_folders(self, source: str) -> list[str]:
        return [storage.join(self.root, layout.links(table.name), source) for table in self.linker.tables]


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
    detect, text = layout.ann("detect"), layout.emb("text")
    image_queries = _with_tables(config, detect, retrieve.related_images_queries)
    if image_queries:
        out.append(RelatedImages(root, retrieve, image_queries,
                                 _with_tables(config, detect, retrieve.related_images_collections)))
    text_queries = _with_tables(config, text, retrieve.related_texts_queries)
    if text_queries:
        out.append(RelatedTexts(root, retrieve, text_queries,
                                _with_tables(config, text, retrieve.related_texts_collections)))
    return out


def run_retrieve(config: CorpusConfig, runner: RunnerConfig, overwrite: bool = False,
                 show_progress: bool = True) -> list[StageResult]:
    """Every links/ table the config asks for, a pipeline per linker (its workers load its indexes and
    collections once); results read back from the committed tables."""
    storage.configure(pipeline_options(runner))
    return [result for linker in linkers(config)
            for result in run_shards(LinkWork(linker), [linker.sources], runner, overwrite, show_progress)]


def example_pairs(config: CorpusConfig, count: int = 3) -> list[dict]:
    """``count`` weak pairs per ``weak_pairs`` entry to show: the image key, its tag query, the top sentences."""
    root, out = config.output, []
    for weak in config.retrieval.retrieve.weak_pairs:
        shown: list[dict] = []
        for source in weak.images:
            if len(shown) >= count:
                break
            tags = {row["key"]: row["text"] for row in read_sidecar(root, layout.emb("tags"), source, ["key", "text"])}
            links: dict[str, list[dict]] = {}
            for row in read_sidecar(root, layout.links(weak.name), source, ["query_key", "rank", "text", "score"]):
                links.setdefault(row["query_key"], []).append(row)
            for key in sorted(links)[:count - len(shown)]:
                hits = sorted(links[key], key=lambda row: row["rank"])
                shown.append({"name": weak.name, "image": key, "tags": tags.get(key, ""),
                              "sentences": [(row["score"], row["text"]) for row in hits]})
        out += shown
    return out
