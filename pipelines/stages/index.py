"""The index stage: one FAISS index per (embedding space, source) -> ``index/<space>/<source>/``.

Each emb table (one per raw shard) is a part of the index; ``retrieval.index.build_or_update`` plans,
trains, builds in shards, tunes and writes, and on a rerun adds only the emb tables that are new (same
parameters) or skips an index that is current. Flat, HNSW and small IVF indexes are built in this process
(FAISS's own threads use every core; GPU when present); large IVF-family indexes (``retrieval.index.sharded``)
through a Beam pipeline (``index_beam``): trained once, filled per emb table by the workers, merged on disk.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.raw_shard import read_footer
from pipelines.runner import RunnerConfig
from pipelines.sidecar_tables import removed_keys
from schemas import layout
from schemas.config import CorpusConfig
from schemas.tables import DIM_KEY, MODEL_KEY, PARAMS_KEY, check_version

SPACES = ("text", "tags")


@dataclass
class IndexResult:
    name: str  # space/source
    action: str  # built | added | skipped
    info: dict  # build.json
    seconds: float
    removed: int = 0  # samples of the source clean removed: embed left them out, so no vector of theirs is here


@dataclass
class EmbPart:
    """One emb table as an index part, read when the build asks for it."""

    path: str
    name: str
    digest: str
    count: int
    model: str
    dim: int

    @classmethod
    def open(cls, path: str) -> EmbPart:
        meta = read_footer(path)
        with storage.open_read(path) as f:
            count = pq.read_metadata(f).num_rows
        name = path.rsplit("/", 1)[-1].split(".")[0]
        return cls(path, name, meta.get(PARAMS_KEY, b"").decode(), count, meta.get(MODEL_KEY, b"").decode(),
                   int(meta.get(DIM_KEY, b"0")))

    def _read(self, columns: list[str]) -> pa.Table:
        with storage.open_read(self.path) as f:
            table = pq.read_table(f, columns=columns)
        check_version(table.schema, self.path)
        return table

    def vectors(self) -> np.ndarray:
        column = self._read(["vector"]).column("vector").combine_chunks()
        return column.flatten().to_numpy().reshape(len(column), self.dim).astype(np.float32, copy=False)

    def entries(self) -> pa.Table:
        return self._read(["key", "source", "text_index", "text"])


def emb_parts(root: str, space: str, source: str) -> list[EmbPart]:
    """The non-empty emb tables of (space, source), all of one model and dimension."""
    paths = storage.glob(storage.join(root, layout.emb(space), source, "[0-9]*.parquet"))
    if not paths:
        raise ValueError(f"no emb/{space}/{source} tables under {root}; run unicorpus embed first")
    parts = [EmbPart.open(p) for p in paths]
    models = sorted({(p.model, p.dim) for p in parts})
    if len(models) > 1:
        raise ValueError(f"emb/{space}/{source}: tables of several models {models}; rerun unicorpus embed "
                         f"--overwrite")
    return [p for p in parts if p.count]


def indexable_sources(root: str, space: str, sources: list[str] | None) -> list[str]:
    """``sources`` as given, else every source with emb/<space> tables."""
    if sources:
        return list(sources)
    folders = storage.glob(storage.join(root, layout.emb(space), "*", "[0-9]*.parquet"))
    return sorted({p.rsplit("/", 2)[-2] for p in folders})


def run_index(config: CorpusConfig, spaces: list[str] | None = None, sources: list[str] | None = None,
              overwrite: bool = False, show_progress: bool = True,
              runner: RunnerConfig | None = None) -> list[IndexResult]:
    """Build or update the index of every (space, source) with emb tables (or the named ones); sharded
    builds run on ``runner`` (default: the in-process DirectRunner)."""
    from pipelines.stages.index_beam import beam_runner
    from retrieval.index import build_or_update

    root = config.output
    if "://" in root:
        raise ValueError(f"output {root}: FAISS indexes are built and served from a local output root")
    unknown = [space for space in spaces or SPACES if space not in SPACES]
    if unknown:
        raise ValueError(f"unknown embedding space {unknown[0]!r} (have: {', '.join(SPACES)})")
    todo = {space: indexable_sources(root, space, sources) for space in spaces or SPACES}
    if not any(todo.values()):
        raise ValueError(f"no emb/ tables under {root}; run unicorpus embed first")
    results = []
    for space, names in todo.items():
        for source in names:
            parts = emb_parts(root, space, source)
            if not parts:
                continue  # every text of the source was a reject: nothing to index
            started = time.monotonic()
            folder = os.path.join(root, layout.index_folder(space, source))
            built = build_or_update(folder, parts, config.retrieval.index, parts[0].model, parts[0].dim, overwrite,
                                    name=f"{space}/{source}", run_sharded=beam_runner(runner or RunnerConfig()))
            results.append(IndexResult(f"{space}/{source}", built.action, built.info, time.monotonic() - started,
                                       len(removed_keys(root, source))))
            if show_progress:
                print(f"index {space}/{source}: {built.action}, {built.info['vectors']} vectors, "
                      f"{built.info['factory']}{_shards(built.info)}", file=sys.stderr)
    return results


def format_index_summary(results: list[IndexResult]) -> str:
    """index, vectors, type, search params, measured recall@k, build seconds, MB."""
    from pipelines.summary import _table, format_removed

    header = ("index", "action", "vectors", "type", "search params", "recall@k", "build s", "MB")
    rows = [(r.name, r.action, r.info["vectors"], r.info["factory"] + _replan(r.info),
             ", ".join(f"{k}={v}" for k, v in r.info["search_params"].items()) or "exact",
             f"{r.info['recall']:.3f}@{r.info['recall_k']}" + ("" if r.info["recall_reached"] else " (below target)"),
             f"{r.seconds:.1f}", f"{r.info['index_mb']:.1f}") for r in results]
    rows.append(("TOTAL", "", sum(r.info["vectors"] for r in results), "", "", "",
                 f"{sum(r.seconds for r in results):.1f}", f"{sum(r.info['index_mb'] for r in results):.1f}"))
    return _table(header, rows, left=(0, 1, 3, 4)) + format_removed(results)


def _shards(info: dict) -> str:
    return f", sharded: {info['shards']} partial indexes merged" if "shards" in info else ""


def _replan(info: dict) -> str:
    """After adds, the index a rebuild would now choose, where it differs (``--overwrite`` rebuilds)."""
    replan = info.get("replan", info["factory"])
    return "" if replan == info["factory"] else f" (rebuild: {replan})"
