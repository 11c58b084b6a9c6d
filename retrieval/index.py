"""FAISS indexes over embedding tables: build (in shards, merged), add new parts without a rebuild, tune
the search parameter to a recall target, load and search.

An index folder holds ``index.faiss``, ``ids.parquet`` (row i = FAISS id i: key, source, text_index,
text) and ``build.json`` (plan, parameters, search parameters, measured recall, parts), written in that
order through temporary names: ``build.json`` is the proof that the folder is complete.

The input is a list of *parts* (one per emb shard): anything with ``name``, ``digest``, ``count``,
``vectors()`` and ``entries()``; ``ArrayPart`` holds them in memory. Parts are read a few times (sample,
add, exact ground truth) instead of all being held at once, so a build is bounded by the index size.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from retrieval import files
from retrieval.index_plan import IndexPlan, plan_index
from schemas import layout
from schemas.layout import BUILD_FILE, IDS_FILE, INDEX_FILE, TRAINED_FILE
from schemas.stages import IndexConfig

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
        (``retrieval.files.local_copy``) and loaded from there."""
        import faiss

        if not files.exists(files.join(folder, BUILD_FILE)):
            raise ValueError(f"{folder}: no {BUILD_FILE}; build the index with `unicorpus index` first")
        local = files.local_copy(folder, SEARCH_FILES, cache)
        with open(os.path.join(local, BUILD_FILE)) as f:
            info = json.load(f)
        index = faiss.read_index(os.path.join(local, INDEX_FILE))
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
    """Each query's top ``k`` over several indexes (same embedding space), merged by score."""
    merged: list[list[tuple[float, dict]]] = [[] for _ in range(len(queries))]
    for index in indexes:
        scores, ids = index.search(queries, k)
        valid = ids >= 0
        entries = iter(index.entries(ids[valid]))
        for q in range(len(queries)):
            merged[q].extend((float(s), next(entries)) for s in scores[q][valid[q]])
    return [sorted(hits, key=lambda hit: -hit[0])[:k] for hits in merged]


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
    """What makes two builds the same: the config (bar shard_size, which changes no result) and the model."""
    params = {k: v for k, v in asdict(config).items() if k != "shard_size"}
    return {**params, "model": model, "dim": dim}


def build_or_update(folder: str, parts: Sequence[Part], config: IndexConfig, model: str, dim: int,
                    overwrite: bool = False, name: str = "", seed: int = 0) -> BuildResult:
    """Bring the index in ``folder`` up to ``parts``: skip if it has exactly them with the same parameters,
    add the new ones if it has a subset (no retraining), rebuild otherwise (or with ``overwrite``)."""
    if not parts or not sum(p.count for p in parts):
        raise ValueError(f"{folder}: no vectors to index")
    params = build_params(config, model, dim)
    info = None if overwrite else read_build_info(folder)
    if info is not None and info["params"] == params:
        have = {p["name"]: p["digest"] for p in info["parts"]}
        given = {p.name: p.digest for p in parts}
        if have == given:
            return BuildResult("skipped", info)
        if all(given.get(n) == d for n, d in have.items()):
            return BuildResult("added", add_parts(folder, [p for p in parts if p.name not in have], parts,
                                                  config, seed))
    return BuildResult("built", build_index(folder, parts, config, model, dim, name, seed))


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
    info = {"name": name or "/".join(folder.rstrip("/").split("/")[-2:]), "params": build_params(config, model, dim),
            "plan": plan.to_dict(), "index_type": plan.kind, "factory": plan.factory, "dim": dim, "model": model,
            "gpu": gpu, "seed": seed}
    return _finish(folder, index, empty, parts, parts, config, info, started, rng, ids_before=None)


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
    return _gather(parts, np.sort(rng.choice(sum(p.count for p in parts), size, replace=False)))


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
    import faiss

    best_scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), 0), dtype=np.int64)
    start = 0
    for part in parts:
        scores, ids = faiss.knn(queries, _checked(part), min(k, part.count), metric=faiss.METRIC_INNER_PRODUCT)
        best_scores = np.concatenate([best_scores, scores], axis=1)
        best_ids = np.concatenate([best_ids, ids + start], axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(best_scores, order, axis=1)
        best_ids = np.take_along_axis(best_ids, order, axis=1)
        start += part.count
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
    query_ids = np.sort(rng.choice(total, min(queries_wanted, total), replace=False))
    queries = _gather(parts, query_ids)
    exact = exact_neighbours(parts, queries, k + 1)
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
    params, recall, curve = tune(index, plan, every, config.recall_k, config.recall_target,
                                 config.recall_queries, rng)
    ids = pa.concat_tables([t for t in (ids_before, *(p.entries() for p in new)) if t is not None])
    if ids.num_rows != index.ntotal:
        raise ValueError(f"{folder}: {ids.num_rows} id rows for {index.ntotal} vectors")
    os.makedirs(folder, exist_ok=True)
    if os.path.exists(os.path.join(folder, BUILD_FILE)):  # the proof goes first: a crash leaves no mismatch
        os.remove(os.path.join(folder, BUILD_FILE))
    index_path = os.path.join(folder, INDEX_FILE)
    _atomic(index_path, lambda tmp: faiss.write_index(index, tmp))
    if empty is not None:
        _atomic(os.path.join(folder, TRAINED_FILE), lambda tmp: faiss.write_index(empty, tmp))
    _atomic(os.path.join(folder, IDS_FILE), lambda tmp: pq.write_table(ids.cast(IDS), tmp))
    info.update({
        "vectors": int(index.ntotal),
        "search_params": params,
        "recall_k": config.recall_k,
        "recall_target": config.recall_target,
        "recall": round(recall, 4),
        "recall_reached": recall >= config.recall_target,
        "tuning": curve,
        "parts": [*info.get("parts", []), *({"name": p.name, "digest": p.digest, "count": p.count} for p in new)],
        ("build_seconds" if ids_before is None else "add_seconds"): round(time.monotonic() - started, 2),
        "index_mb": round(os.path.getsize(index_path) / 2**20, 2),
    })
    _atomic(os.path.join(folder, BUILD_FILE), lambda tmp: _write_json(tmp, info))
    return info


def _atomic(path: str, write) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    write(tmp)
    os.replace(tmp, path)


def _write_json(path: str, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
