"""FAISS indexes over embedding tables: build (in shards, merged), add new parts without a rebuild, tune
the search parameter to a recall target, load and search.

An index folder holds ``index.faiss``, ``ids.parquet`` (row i = FAISS id i: key, source, text_index,
text) and ``build.json`` (plan, parameters, search parameters, measured recall, parts), written in that
order through temporary names: ``build.json`` is the proof that the folder is complete.

The input is a list of *parts* (one per emb shard): anything with ``name``, ``digest``, ``count``,
``vectors()`` and ``entries()``; ``ArrayPart`` holds them in memory. Parts are read a few times (sample,
add, exact ground truth) instead of all being held at once, so a build is bounded by the index size.

Large IVF-family indexes can also be built *sharded* (the steps below, run in parallel by
``pipelines.stages.index_beam``): train once on a sample drawn from the counts alone, fill one partial index
per part with its global ids, merge the partial inverted lists on disk (``OnDiskInvertedLists``, as autofaiss
does) into ``index.faiss`` + ``index.ivfdata`` (memory-mapped when loaded), tune the same way.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from retrieval import files
from retrieval.index_plan import IndexPlan, plan_index
from schemas import layout
from schemas.config_build import output_params
from schemas.layout import BUILD_FILE, IDS_FILE, INDEX_FILE, TRAINED_FILE
from schemas.stages import IndexConfig

IVFDATA_FILE = "index.ivfdata"  # a sharded build's inverted lists, beside index.faiss, memory-mapped when loaded
WORK_DIR = "_build"  # a sharded build's drawn rows, trained index, partials and merged index until it is complete
SEARCH_FILES = (INDEX_FILE, IDS_FILE, BUILD_FILE)  # what a search loads; build.json, the proof, last
IDS = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("text_index", pa.int32(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
])


class Part(Protocol):
    name: str
    digest: str
    count: int

    def vectors(self) -> np.ndarray: ...

    def entries(self) -> pa.Table: ...


@dataclass
class ArrayPart:
    """A part held in memory: (count, dim) float32 vectors and their id rows (``IDS`` columns, as dicts
    or a table)."""

    name: str
    array: np.ndarray
    rows: list[dict] | pa.Table
    digest: str = ""

    @property
    def count(self) -> int:
        return len(self.array)

    def vectors(self) -> np.ndarray:
        return self.array

    def entries(self) -> pa.Table:
        return self.rows.cast(IDS) if isinstance(self.rows, pa.Table) else pa.Table.from_pylist(self.rows, schema=IDS)


@dataclass
class BuildResult:
    action: str  # built | added | skipped
    info: dict  # build.json


# --- search --------------------------------------------------------------------------------------------


class SearchIndex:
    """A built index, loaded with its tuned search parameters and its id -> entry table."""

    def __init__(self, folder: str, index, ids: pa.Table, info: dict):
        self.folder, self.index, self.ids, self.info = folder, index, ids, info
        self.dim, self.model = int(info["dim"]), info.get("model", "")
        self.name = info["name"]

    @classmethod
    def load(cls, folder: str, cache: str | None = None) -> SearchIndex:
        """``folder`` local or a URL; FAISS reads local files, so a remote index is copied once into ``cache``
        (``retrieval.files.local_copy``, with a sharded build's inverted lists) and loaded from there.
        ``build.json`` is read once: the metadata and the copy's proof are those bytes, so they cannot come
        from two builds."""
        try:
            proof = files.read_bytes(files.join(folder, BUILD_FILE))
        except FileNotFoundError:
            raise ValueError(f"{folder}: no {BUILD_FILE}; build the index with `unicorpus index` first") from None
        info = json.loads(proof)
        ivfdata = info.get("ivfdata")
        local = files.local_copy(folder, ((ivfdata,) if ivfdata else ()) + SEARCH_FILES, cache, proof)
        index = read_faiss(local, ivfdata)
        apply_search_params(index, info["search_params"])
        return cls(folder, index, pq.read_table(os.path.join(local, IDS_FILE), memory_map=True), info)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` inner products of each (normalised) query; ids -1 (score -inf) where fewer exist."""
        queries = _as_queries(queries, self.dim, self.folder)
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        scores, ids = self.index.search(queries, k)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids.astype(np.int64)

    def entries(self, ids) -> list[dict]:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if len(ids) and (ids.min() < 0 or ids.max() >= self.ids.num_rows):
            raise ValueError(f"{self.folder}: ids outside 0..{self.ids.num_rows - 1}")
        return self.ids.take(pa.array(ids)).to_pylist()


def search_many(indexes: Sequence[SearchIndex], queries: np.ndarray, k: int) -> list[list[tuple[float, dict]]]:
    """Each query's top ``k`` over several indexes (same embedding space), merged by score; equal scores (the
    same text in two samples) in key order, so every process answers alike (FAISS leaves ties unordered)."""
    merged: list[list[tuple[float, dict]]] = [[] for _ in range(len(queries))]
    for index in indexes:
        scores, ids = index.search(queries, k)
        valid = ids >= 0
        entries = iter(index.entries(ids[valid]))
        for q in range(len(queries)):
            merged[q].extend((float(s), next(entries)) for s in scores[q][valid[q]])
    return [sorted(hits, key=lambda hit: (-hit[0], hit[1]["key"], hit[1]["text_index"]))[:k] for hits in merged]


def open_indexes(root: str, space: str, sources: list[str] | None = None,
                 cache: str | None = None) -> list[SearchIndex]:
    """The built indexes under ``<root>/index/<space>/``: every source, or the named ones (each must exist).
    ``root`` local or a URL (remote indexes are copied into ``cache`` first: ``SearchIndex.load``)."""
    base = files.join(root, layout.index(space))
    found = [path.rsplit("/", 2)[-2] for path in files.glob(files.join(base, "*", BUILD_FILE))]
    if sources is None:
        return [SearchIndex.load(files.join(base, name), cache) for name in found]
    missing = [s for s in sources if s not in found]
    if missing:
        raise ValueError(f"no {space} index for {', '.join(missing)} under {base} (have: "
                         f"{', '.join(found) or 'none'}); run `unicorpus index --space {space}` first")
    return [SearchIndex.load(files.join(base, name), cache) for name in sources]


def read_faiss(folder: str, ivfdata: str | None = None):
    """``index.faiss`` of ``folder``; with on-disk inverted lists (a sharded build) their ``ivfdata`` file in
    the same folder is memory-mapped read-only, wherever the folder has moved since it was written."""
    import faiss

    path = os.path.join(folder, INDEX_FILE)
    if not ivfdata:
        return faiss.read_index(path)
    index = faiss.read_index(path, faiss.IO_FLAG_SKIP_IVF_DATA)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    lists.filename, lists.read_only = os.path.join(folder, ivfdata), True
    lists.do_mmap()
    return index


def apply_search_params(index, params: dict) -> None:
    import faiss

    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)


def _as_queries(queries: np.ndarray, dim: int, where: str) -> np.ndarray:
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"{where}: queries must have shape (n, {dim}), got {queries.shape}")
    return queries


# --- build -----------------------------------------------------------------------------------------------


def build_params(config: IndexConfig, model: str, dim: int) -> dict:
    """What makes two builds the same: the config (bar shard_size and sharded, which change no search result)
    and the model."""
    return {**output_params(config), "model": model, "dim": dim}


def build_or_update(folder: str, parts: Sequence[Part], config: IndexConfig, model: str, dim: int,
                    overwrite: bool = False, name: str = "", seed: int = 0,
                    run_sharded: Callable[[ShardedJob, Sequence[Part]], None] | None = None) -> BuildResult:
    """Bring the index in ``folder`` up to ``parts``: skip if it has exactly them with the same parameters,
    add the new ones if it has a subset (no retraining), rebuild otherwise (or with ``overwrite``).

    IVF-family plans go the sharded way when ``config.sharded`` says so (``is_sharded``); ``run_sharded``
    runs a ``ShardedJob``'s steps (the index stage: a Beam pipeline; by default one after another here)."""
    if not parts or not sum(p.count for p in parts):
        raise ValueError(f"{folder}: no vectors to index")
    params = build_params(config, model, dim)
    info = None if overwrite else read_build_info(folder)
    run_sharded = run_sharded or run_serially
    if info is not None and info["params"] == params:
        have = {p["name"]: p["digest"] for p in info["parts"]}
        given = {p.name: p.digest for p in parts}
        if have == given:
            return BuildResult("skipped", info)
        if all(given.get(n) == d for n, d in have.items()):
            if info.get("ivfdata"):
                return BuildResult("added", _refill(folder, parts, config, info, seed + 1, run_sharded))
            by_name = {p.name: p for p in parts}
            new = [p for p in parts if p.name not in have]
            # in index order (old ids first), so tuning's exact search numbers vectors as the index does
            return BuildResult("added", add_parts(folder, new, [by_name[n] for n in have] + new, config, seed))
    total = sum(p.count for p in parts)
    gpu = use_gpu(config.use_gpu)
    plan = plan_index(total, dim, config.memory_budget_mb, config.flat_below, gpu)
    if is_sharded(config, plan, total):
        info = _new_info(folder, config, model, dim, name, seed, plan, gpu)
        return BuildResult("built", build_sharded(folder, parts, config, info, seed, run_sharded))
    return BuildResult("built", build_index(folder, parts, config, model, dim, name, seed))


def _refill(folder: str, parts: Sequence[Part], config: IndexConfig, info: dict, seed: int,
            run: Callable[[ShardedJob, Sequence[Part]], None]) -> dict:
    """Add parts to a sharded index: on-disk lists are not appended in place, so every part's partial is
    filled again from the kept trained index (no retraining), the indexed parts first, in their order."""
    order = [p["name"] for p in info["parts"]]
    ordered = sorted(parts, key=lambda p: order.index(p.name) if p.name in order else len(order))
    info["replan"] = plan_index(sum(p.count for p in parts), info["dim"], config.memory_budget_mb, config.flat_below,
                                use_gpu(config.use_gpu)).factory  # what a rebuild would choose now
    return build_sharded(folder, ordered, config, info, seed, run, trained=os.path.join(folder, TRAINED_FILE))


def build_index(folder: str, parts: Sequence[Part], config: IndexConfig, model: str, dim: int,
                name: str = "", seed: int = 0) -> dict:
    """Plan, train once on a sample, add shard by shard into copies of the empty trained index and merge,
    tune the search parameter, write the folder."""
    import faiss

    started = time.monotonic()
    total = sum(p.count for p in parts)
    gpu = use_gpu(config.use_gpu)
    plan = plan_index(total, dim, config.memory_budget_mb, config.flat_below, gpu)
    rng = np.random.default_rng(seed)
    empty = faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
    if plan.train_size:
        empty = _trained(empty, _sample_rows(parts, plan.train_size, rng), gpu)
    index = _add_in_shards(empty, parts, config.shard_size, gpu, plan)
    info = _new_info(folder, config, model, dim, name, seed, plan, gpu)
    return _finish(folder, index, empty, parts, parts, config, info, started, rng, ids_before=None)


def _new_info(folder: str, config: IndexConfig, model: str, dim: int, name: str, seed: int, plan: IndexPlan,
              gpu: bool) -> dict:
    return {"name": name or "/".join(folder.rstrip("/").split("/")[-2:]), "params": build_params(config, model, dim),
            "plan": plan.to_dict(), "index_type": plan.kind, "factory": plan.factory, "dim": dim, "model": model,
            "gpu": gpu, "seed": seed}


def add_parts(folder: str, new: Sequence[Part], every: Sequence[Part], config: IndexConfig, seed: int = 0) -> dict:
    """Add ``new`` parts to the index in ``folder`` with its trained quantizer (no rebuild), then retune
    against exact search over ``every`` part (old and new)."""
    import faiss

    started = time.monotonic()
    info = read_build_info(folder)
    index = faiss.read_index(os.path.join(folder, INDEX_FILE))
    plan = _plan_of(info)
    gpu = use_gpu(config.use_gpu)
    empty = faiss.read_index(os.path.join(folder, TRAINED_FILE))
    index = _add_in_shards(empty, new, config.shard_size, gpu, plan, into=index)
    ids_before = pq.read_table(os.path.join(folder, IDS_FILE))
    info["replan"] = plan_index(int(index.ntotal), info["dim"], config.memory_budget_mb, config.flat_below,
                                gpu).factory  # what a rebuild would choose now
    return _finish(folder, index, None, new, every, config, info, started, np.random.default_rng(seed + 1),
                   ids_before)


def _plan_of(info: dict) -> IndexPlan:
    """The plan a build.json recorded (JSON made its tuple a list)."""
    return IndexPlan(**{**info["plan"], "search_values": tuple(info["plan"]["search_values"])})


TIMINGS = ("build_seconds", "add_seconds", "ms_per_query")  # build.json's clock readings: not what was built


def build_digest(info: dict) -> str:
    """What a build.json says was built, less its clock readings: a rebuild of the same vectors with the same
    parameters has the same digest, so what was retrieved from the index is not redone for a timing."""
    def without_timings(value):
        if isinstance(value, dict):
            return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
        if isinstance(value, list):
            return [without_timings(v) for v in value]
        return value

    return hashlib.sha256(json.dumps(without_timings(info), sort_keys=True).encode()).hexdigest()[:16]


def read_build_info(folder: str) -> dict | None:
    path = os.path.join(folder, BUILD_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def use_gpu(setting: str) -> bool:
    """GPU FAISS when the build has GPUs and the config allows it; ``always`` without one is an error."""
    import faiss

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if setting == "always" and not gpus:
        raise ValueError("retrieval.index.use_gpu is 'always' but this FAISS build sees no GPU")
    return setting != "never" and gpus > 0


def _trained(index, sample: np.ndarray, gpu: bool):
    import faiss

    if gpu:
        on_gpu = faiss.index_cpu_to_all_gpus(index)
        on_gpu.train(sample)
        return faiss.index_gpu_to_cpu(on_gpu)
    index.train(sample)
    return index


def _add_in_shards(empty, parts: Sequence[Part], shard_size: int, gpu: bool, plan: IndexPlan, into=None):
    """Fill copies of ``empty`` with ``shard_size`` vectors each and merge them in order into ``into`` (or
    the first shard): ids stay sequential. HNSW graphs do not merge: their shards go into one graph."""
    import faiss

    index = into
    for group in _groups(parts, shard_size):
        vectors = np.concatenate([_checked(p) for p in group])
        if plan.kind == "hnsw" and index is not None:
            index.add(vectors)
            continue
        piece = faiss.clone_index(empty)
        if gpu and plan.kind != "hnsw":
            piece = faiss.index_cpu_to_all_gpus(piece)
            piece.add(vectors)
            piece = faiss.index_gpu_to_cpu(piece)
        else:
            piece.add(vectors)
        index = piece if index is None else _merge(index, piece, plan)
    return index if index is not None else faiss.clone_index(empty)


def _merge(index, piece, plan: IndexPlan):
    """Append ``piece``'s vectors to ``index``: IVF lists shift the piece's ids by the count so far; flat
    codes append (their ids are positions)."""
    if piece.ntotal:
        index.merge_from(piece, index.ntotal if plan.kind.startswith("ivf") else 0)
    return index


def _groups(parts: Sequence[Part], shard_size: int) -> list[list[Part]]:
    groups: list[list[Part]] = [[]]
    size = 0
    for part in parts:
        if groups[-1] and size + part.count > shard_size:
            groups.append([])
            size = 0
        groups[-1].append(part)
        size += part.count
    return [g for g in groups if g]


def _checked(part: Part) -> np.ndarray:
    vectors = np.ascontiguousarray(part.vectors(), dtype=np.float32)
    if len(vectors) != part.count:
        raise ValueError(f"part {part.name}: {len(vectors)} vectors, expected {part.count}")
    return vectors


def _sample_rows(parts: Sequence[Part], size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` vectors drawn uniformly from all parts (one read of each part that contributes)."""
    return _gather(parts, _draw(rng, sum(p.count for p in parts), size))


def _draw(rng: np.random.Generator, total: int, size: int) -> np.ndarray:
    """``size`` distinct global positions out of ``total``, sorted: the training sample, the held-out queries."""
    return np.sort(rng.choice(total, size, replace=False))


def _gather(parts: Sequence[Part], wanted: np.ndarray) -> np.ndarray:
    """The vectors at global positions ``wanted`` (sorted) of the parts' concatenation."""
    out, start = [], 0
    for part in parts:
        inside = wanted[(wanted >= start) & (wanted < start + part.count)] - start
        if len(inside):
            out.append(_checked(part)[inside])
        start += part.count
    return np.concatenate(out)


# --- recall tuning ---------------------------------------------------------------------------------


def exact_neighbours(parts: Sequence[Part], queries: np.ndarray, k: int) -> np.ndarray:
    """Global ids of each query's exact top ``k`` by inner product, one part at a time."""
    tops = (exact_top(queries, _checked(p), start, k) for p, start in zip(parts, _starts(parts), strict=True))
    return best_of(tops, len(queries), k)


def _starts(parts: Sequence[Part]) -> tuple[int, ...]:
    """Each part's first global id: the parts' vectors are numbered in order."""
    return tuple(np.cumsum([0, *(p.count for p in parts)])[:-1].tolist())


def exact_top(queries: np.ndarray, vectors: np.ndarray, start: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, global ids) of each query's exact top ``k`` among ``vectors``, whose first id is ``start``."""
    import faiss

    scores, ids = faiss.knn(queries, vectors, min(k, len(vectors)), metric=faiss.METRIC_INNER_PRODUCT)
    return scores, ids + start


def best_of(tops, queries: int, k: int) -> np.ndarray:
    """The global ids of the top ``k`` over parts' ``exact_top`` results given in part order (ties: the
    earlier part first)."""
    best_scores = np.full((queries, 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((queries, 0), dtype=np.int64)
    for scores, ids in tops:
        best_scores = np.concatenate([best_scores, scores], axis=1)
        best_ids = np.concatenate([best_ids, ids], axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(best_scores, order, axis=1)
        best_ids = np.take_along_axis(best_ids, order, axis=1)
    return best_ids


def recall_at_k(found: np.ndarray, exact: np.ndarray, query_ids: np.ndarray, k: int) -> float:
    """Mean share of the exact top ``k`` found, each query's own vector left out of both lists (the
    queries are held out of the ground truth, so finding oneself earns nothing)."""
    hits = 0
    for row_found, row_exact, own in zip(found, exact, query_ids, strict=True):
        truth = [i for i in row_exact if i != own][:k]
        hits += len(set(truth) & {i for i in row_found if i != own and i >= 0})
    return hits / (len(query_ids) * k)


def tune(index, plan: IndexPlan, parts: Sequence[Part], k: int, target: float, queries_wanted: int,
         rng: np.random.Generator) -> tuple[dict, float, list[dict]]:
    """Raise the plan's search parameter until recall@k on held-out queries reaches ``target`` (or the
    candidates run out); returns (search params, recall, the curve)."""
    total = sum(p.count for p in parts)
    k = min(k, total - 1)
    if plan.search_param is None or k < 1:
        return {}, 1.0, []
    query_ids = _draw(rng, total, min(queries_wanted, total))
    queries = _gather(parts, query_ids)
    return tune_on(index, plan, queries, query_ids, exact_neighbours(parts, queries, k + 1), k, target)


def tune_on(index, plan: IndexPlan, queries: np.ndarray, query_ids: np.ndarray, exact: np.ndarray, k: int,
            target: float) -> tuple[dict, float, list[dict]]:
    """``tune`` given the held-out queries (global ``query_ids``) and their exact top ``k + 1`` ids."""
    curve = []
    for value in plan.search_values:
        params = _search_params(plan, value)
        apply_search_params(index, params)
        started = time.perf_counter()
        _, found = index.search(queries, k + 1)
        seconds = time.perf_counter() - started
        recall = recall_at_k(found, exact, query_ids, k)
        curve.append({**params, "recall": round(recall, 4), "ms_per_query": round(1000 * seconds / len(queries), 4)})
        if recall >= target:
            break
    return params, recall, curve


def _search_params(plan: IndexPlan, value: int) -> dict:
    params = {plan.search_param: value}
    if "_HNSW" in plan.factory:  # the HNSW coarse quantizer must explore at least nprobe centroids
        params["quantizer_efSearch"] = max(64, 2 * value)
    return params


# --- write -------------------------------------------------------------------------------------------------


def _finish(folder: str, index, empty, new: Sequence[Part], every: Sequence[Part], config: IndexConfig, info: dict,
            started: float, rng: np.random.Generator, ids_before: pa.Table | None) -> dict:
    import faiss

    plan = _plan_of(info)
    tuned = tune(index, plan, every, config.recall_k, config.recall_target, config.recall_queries, rng)
    ids = pa.concat_tables([t for t in (ids_before, *(p.entries() for p in new)) if t is not None])
    if ids.num_rows != index.ntotal:
        raise ValueError(f"{folder}: {ids.num_rows} id rows for {index.ntotal} vectors")
    _drop_proof(folder)
    index_path = os.path.join(folder, INDEX_FILE)
    _atomic(index_path, lambda tmp: faiss.write_index(index, tmp))
    if empty is not None:
        _atomic(os.path.join(folder, TRAINED_FILE), lambda tmp: faiss.write_index(empty, tmp))
    _atomic(os.path.join(folder, IDS_FILE), lambda tmp: pq.write_table(ids.cast(IDS), tmp))
    if os.path.exists(os.path.join(folder, IVFDATA_FILE)):  # a sharded build's lists, replaced by this one
        os.remove(os.path.join(folder, IVFDATA_FILE))
    shutil.rmtree(os.path.join(folder, WORK_DIR), ignore_errors=True)  # what a killed sharded build left
    _record(info, config, int(index.ntotal), tuned, new, ("build_seconds" if ids_before is None else "add_seconds"),
            started, os.path.getsize(index_path))
    _atomic(os.path.join(folder, BUILD_FILE), lambda tmp: _write_json(tmp, info))
    return info


def _drop_proof(folder: str) -> None:
    """The proof goes first: a crash while the files are replaced leaves no build.json that mismatches them."""
    os.makedirs(folder, exist_ok=True)
    if os.path.exists(os.path.join(folder, BUILD_FILE)):
        os.remove(os.path.join(folder, BUILD_FILE))


def _record(info: dict, config: IndexConfig, vectors: int, tuned: tuple[dict, float, list[dict]],
            new: Sequence[Part], seconds: str, started: float, index_bytes: int) -> None:
    """What build.json says of a finished build or add: the tuned parameters, the recall, the parts."""
    params, recall, curve = tuned
    info.update({
        "vectors": vectors,
        "search_params": params,
        "recall_k": config.recall_k,
        "recall_target": config.recall_target,
        "recall": round(recall, 4),
        "recall_reached": recall >= config.recall_target,
        "tuning": curve,
        "parts": [*info.get("parts", []), *({"name": p.name, "digest": p.digest, "count": p.count} for p in new)],
        seconds: round(time.monotonic() - started, 2),
        "index_mb": round(index_bytes / 2**20, 2),
    })


# --- sharded build ---------------------------------------------------------------------------------------

TUNED_FILE = "tuned.json"  # the merged index's tuning (search params, recall, curve), beside it


def is_sharded(config: IndexConfig, plan: IndexPlan, total: int) -> bool:
    """Whether to build sharded: only IVF-family plans, whose inverted lists merge list by list (an HNSW
    graph cannot be merged from partial graphs: its links span the whole collection; Flat plans are small),
    and by default (``auto``) only when there are more vectors than one build shard holds."""
    if not plan.kind.startswith("ivf") or config.sharded == "never":
        return False
    return config.sharded == "always" or total > config.shard_size


@dataclass(frozen=True)
class ShardedJob:
    """Everything a worker of a sharded build needs (picklable). The sample and the held-out queries are
    drawn from the parts' counts alone, exactly as the in-process build draws them, so no process holds more
    than one part's vectors (plus the sample where the index is trained, plus the trained index). What
    passes between the steps is file names, the queries and each part's top k: the launching process (a
    Beam runner carries the steps' outputs) never holds vectors."""

    work: str  # <index folder>/_build
    plan: IndexPlan
    dim: int
    gpu: bool
    k: int  # ground-truth neighbours per query: recall_k + 1 (a query finds itself)
    target: float  # recall_target
    starts: tuple[int, ...]  # each part's first global id
    train_ids: np.ndarray  # sorted global positions to train on; empty when ``trained`` exists already
    query_ids: np.ndarray  # sorted global positions of the held-out queries
    trained: str  # the trained empty index

    def draw(self, i: int, part: Part) -> tuple[int, str]:
        """Part ``i``'s rows of the training sample and of the queries (one read of the part), in a file."""
        vectors, start = _checked(part), self.starts[i]
        path = os.path.join(self.work, f"drawn-{i:06d}.npz")
        _atomic(path, lambda tmp: _save_npz(tmp, sample=_within(vectors, start, self.train_ids),
                                            queries=_within(vectors, start, self.query_ids)))
        return i, path

    def train(self, drawn: Iterable[tuple[int, str]]) -> np.ndarray:
        """Train on the sample (rows in part order: the in-process build's sample), write the trained index;
        returns the queries."""
        import faiss

        rows = [_load_npz(path) for _, path in sorted(drawn)]
        if len(self.train_ids):
            empty = faiss.index_factory(self.dim, self.plan.factory, faiss.METRIC_INNER_PRODUCT)
            empty = _trained(empty, np.concatenate([r["sample"] for r in rows]), self.gpu)
            _atomic(self.trained, lambda tmp: faiss.write_index(empty, tmp))
        return np.concatenate([r["queries"] for r in rows])

    def fill(self, i: int, part: Part, queries: np.ndarray) -> tuple[int, str, tuple[np.ndarray, np.ndarray]]:
        """Part ``i``'s partial index (the trained index plus the part's vectors under their global ids),
        unless a killed run left it; and the part's exact top ``k`` of the queries."""
        import faiss

        vectors, start, path = _checked(part), self.starts[i], self.partial(i, part)
        if not os.path.exists(path):
            index = faiss.read_index(self.trained)
            index.add_with_ids(vectors, np.arange(start, start + len(vectors), dtype=np.int64))
            _atomic(path, lambda tmp: faiss.write_index(index, tmp))
        return i, path, exact_top(queries, vectors, start, self.k)

    def partial(self, i: int, part: Part) -> str:
        """Named by part and trained-index digest (and the part's digest and first id), so a partial of
        another training or numbering is never reused."""
        key = f"{_file_digest(self.trained)} {part.digest} {part.count} {self.starts[i]}"
        return os.path.join(self.work, f"{part.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.faiss")

    def merge(self, filled: Iterable[tuple[int, str, tuple]], queries: np.ndarray) -> None:
        """Merge the partial inverted lists on disk, in part order, into ``merged/`` (``merge_ondisk``: the
        partials are memory-mapped, the lists stream into one ``.ivfdata``); tune the merged index."""
        import faiss
        from faiss.contrib.ondisk import merge_ondisk

        filled = sorted(filled, key=lambda f: f[0])
        out = os.path.join(self.work, "merged")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        index = faiss.read_index(self.trained)
        with _stdout_to_stderr():
            merge_ondisk(index, [path for _, path, _ in filled], os.path.join(out, IVFDATA_FILE))
        faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists).filename = IVFDATA_FILE  # read_faiss
        faiss.write_index(index, os.path.join(out, INDEX_FILE))
        exact = best_of((top for _, _, top in filled), len(queries), self.k)
        params, recall, curve = tune_on(index, self.plan, queries, self.query_ids, exact, self.k - 1, self.target)
        _write_json(os.path.join(out, TUNED_FILE), {"vectors": int(index.ntotal), "search_params": params,
                                                    "recall": recall, "tuning": curve})


def run_serially(job: ShardedJob, parts: Sequence[Part]) -> None:
    """A sharded build's steps one after another in this process (the index stage runs them through Beam)."""
    queries = job.train([job.draw(i, part) for i, part in enumerate(parts)])
    job.merge([job.fill(i, part, queries) for i, part in enumerate(parts)], queries)


def build_sharded(folder: str, parts: Sequence[Part], config: IndexConfig, info: dict, seed: int,
                  run: Callable[[ShardedJob, Sequence[Part]], None], trained: str | None = None) -> dict:
    """Build (or, with the ``trained`` index of an existing one, refill) the index in ``folder`` sharded:
    ``run`` runs the job's steps (the last one merges and tunes); then this process writes the folder. A
    killed build, rerun, reuses its trained index and the partials it finished."""
    started, total = time.monotonic(), sum(p.count for p in parts)
    job = _sharded_job(folder, parts, config, info, seed, trained)
    run(job, parts)
    merged = os.path.join(job.work, "merged")
    with open(os.path.join(merged, TUNED_FILE)) as f:
        tuned = json.load(f)
    if tuned["vectors"] != total:
        raise ValueError(f"{folder}: the merged index holds {tuned['vectors']} vectors, the parts {total}")
    _drop_proof(folder)
    for name in (IVFDATA_FILE, INDEX_FILE):
        os.replace(os.path.join(merged, name), os.path.join(folder, name))
    if trained is None:
        _atomic(os.path.join(folder, TRAINED_FILE), lambda tmp: shutil.copyfile(job.trained, tmp))
    _atomic(os.path.join(folder, IDS_FILE), lambda tmp: _write_ids(tmp, parts))
    info = {**info, "parts": [], "ivfdata": IVFDATA_FILE, "shards": len(parts)}
    _record(info, config, total, (tuned["search_params"], tuned["recall"], tuned["tuning"]), parts,
            "build_seconds" if trained is None else "add_seconds", started,
            sum(os.path.getsize(os.path.join(folder, n)) for n in (INDEX_FILE, IVFDATA_FILE)))
    _atomic(os.path.join(folder, BUILD_FILE), lambda tmp: _write_json(tmp, info))
    shutil.rmtree(job.work)
    return info


def _sharded_job(folder: str, parts: Sequence[Part], config: IndexConfig, info: dict, seed: int,
                 trained: str | None) -> ShardedJob:
    """The job with the in-process build's draws (the sample unless ``trained`` is given, then the queries);
    a fresh build's trained index is named by what it is trained from, so a rerun finds it."""
    total = sum(p.count for p in parts)
    plan = _plan_of(info)
    rng = np.random.default_rng(seed)
    work = os.path.join(folder, WORK_DIR)
    os.makedirs(work, exist_ok=True)
    train_ids = np.zeros(0, np.int64) if trained else _draw(rng, total, plan.train_size)
    if not trained:
        key = json.dumps([info["params"], info["seed"], [(p.name, p.digest, p.count) for p in parts]])
        trained = os.path.join(work, f"trained-{hashlib.sha256(key.encode()).hexdigest()[:16]}.faiss")
    return ShardedJob(work, plan, info["dim"], info["gpu"], min(config.recall_k, total - 1) + 1,
                      config.recall_target, _starts(parts),
                      train_ids[:0] if os.path.exists(trained) else train_ids,
                      _draw(rng, total, min(config.recall_queries, total)), trained)


def _save_npz(path: str, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: given a name, numpy would append ".npz" to it
        np.savez(f, **arrays)


def _load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as arrays:
        return dict(arrays)


def _within(vectors: np.ndarray, start: int, positions: np.ndarray) -> np.ndarray:
    """The rows of ``vectors`` (global ids from ``start``) at the sorted global ``positions`` inside them."""
    inside = positions[(positions >= start) & (positions < start + len(vectors))] - start
    return vectors[inside]


@functools.lru_cache(maxsize=4)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _file_digest(path: str) -> str:
    """sha256 of a file, computed once per process and file version."""
    stat = os.stat(path)
    return _digest_of(path, stat.st_size, stat.st_mtime_ns)


def _write_ids(path: str, parts: Sequence[Part]) -> None:
    """ids.parquet one part at a time: the id rows of a large collection are never all in memory."""
    with pq.ParquetWriter(path, IDS) as writer:
        for part in parts:
            writer.write_table(part.entries().cast(IDS))


@contextlib.contextmanager
def _stdout_to_stderr():
    """FAISS's C++ code prints progress (``resizing ...``) on stdout, where ``--json`` summaries go."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _atomic(path: str, write) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    write(tmp)
    os.replace(tmp, path)


def _write_json(path: str, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
