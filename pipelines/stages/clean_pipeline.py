"""clean as Beam pipelines: the removals of ``run_clean`` (same rules, same reject tables byte for byte)
with no process holding the corpus.

1. **Scan** (one element per shard index, only clean's columns): each sample becomes a ``Node`` (its
   dedup ``Item``, shard and own contaminations) named by an int id (``node_id``: its shard index and
   row). Decontamination is decided here, per shard, by ``find_contamination`` against the evaluation
   sets, which every worker holds: their size is the evaluation splits' (a broadcast join), not the
   corpus'. Ids are keyed by sha256, by normalised text and, with their pHash, by each of the ``d + 1``
   pHash bands (``dedup.band_masks``); each group becomes edges: a star to the group's smallest id for the
   equal codes (equal pHashes: in the first band's group, where they all meet), and for a band group the
   pairs within ``d`` bits that agree on no earlier band (``dedup.band_pairs``; every near pair is found
   in exactly one group). A group holds one code's samples: for exact codes the copies of one sample, for
   a band about ``n / 2**(64 / (d + 1))`` random hashes (d = 4: 1 in 4096 of the images).
2. **Components**: Hash-to-Min rounds (``pipelines.components``) over the edges, and over the
   contaminated samples as nodes of their own, ``ROUNDS`` per pipeline, pipelines repeated until a
   round changes nothing (a Beam counter tells the launcher). Only nodes with an edge or a contamination
   take part; a cluster never holds more than one component, so a worker's memory is bounded by the
   largest component (the copies of one image or text) and band group, not by the corpus' duplicates.
   A one-pass union-find over all edges (one combine) would need every duplicate edge in one worker: the
   edges grow with the corpus (web corpora are tens of percent copies), so it is not used. Every message
   and cluster is made of int ids (a few bytes each in Beam's coder; a pickled ``Node`` is about 320):
   what a step moves is what a worker's share of it costs (docs/BENCHMARKS.md, clean).
3. **Resolve**: each component's members are read back from their shard indexes (grouped by shard: one
   shard at a time), then each component is resolved by the in-process rules themselves:
   ``find_duplicates`` on its members (the kept sample, ``duplicate_of`` and distances: the same links,
   restricted to the component, make the same one cluster) and ``clean.inherited`` (contamination
   spreads to every copy). Rows go to one table per raw shard (``clean.write_reject_table``); tables of an
   earlier clean this one did not write are deleted after the pipeline.

State between pipelines lives under ``<output>/_clean_work/`` (deleted at the end, and at the start of a
rerun after a killed one). Every pipeline is a pure function of the shard indexes, so a killed clean,
rerun, writes the same bytes.
"""

from __future__ import annotations

import base64
import pickle
from collections import Counter
from collections.abc import Container
from dataclasses import astuple, dataclass
from functools import partial

import apache_beam as beam
import numpy as np
from apache_beam.metrics.metric import Metrics, MetricsFilter

from pipelines import storage
from pipelines.components import ClusterUnion, edge_messages, is_component, round_messages
from pipelines.dedup import Item, band_masks, band_pairs, find_duplicates, link_codes
from pipelines.evalsets import Contamination, EvalSet, find_contamination
from pipelines.runner import RunnerConfig, pipeline_options
from pipelines.stages.clean import (
    CleanResult,
    clean_results,
    delete_stale_tables,
    inherited,
    item_of,
    load_evalsets,
    read_index,
    record_in_manifest,
    ref_of,
    reject_tables,
    shard_indexes,
    tally,
    write_reject_table,
)
from schemas.config import CorpusConfig

ROUNDS = 3  # Hash-to-Min rounds per pipeline: duplicate groups are stars, most corpora need 2-3
WORK = "_clean_work"
_CHANGED = "changed"
_ROW_BITS = 32  # a node id: (number of its shard index in the launcher's list) << _ROW_BITS | row number


@dataclass(frozen=True)
class Node:
    """A sample of the duplicate graph with what resolving its component needs; only resolve holds these,
    every other step moves the ``id`` alone (``node_id``)."""

    id: int
    item: Item
    shard: int
    contaminations: tuple[Contamination, ...]

    def __reduce__(self):
        """Pickled as its values (about half of the default, which names every field): resolve moves one
        ``Node`` per component member, and Beam pickles what it has no coder for."""
        return _node, (self.id, self.shard, self.contaminations, *astuple(self.item))


def _node(id: int, shard: int, contaminations: tuple[Contamination, ...], *item) -> Node:
    return Node(id, Item(*item), shard, contaminations)


def node_id(shard_number: int, row: int) -> int:
    """A sample's id in the duplicate graph: its shard index (by number in the launcher's list) and row. An
    int is the smallest thing Beam moves (a few bytes), and the id alone finds the row again."""
    if row >> _ROW_BITS:
        raise ValueError(f"shard index {shard_number}: more than 2**{_ROW_BITS} rows")
    return shard_number << _ROW_BITS | row


def run_clean_pipeline(config: CorpusConfig, runner: RunnerConfig) -> list[CleanResult]:
    """Dedup and decontamination as Beam pipelines (module doc); the same tables and manifest entry as
    ``run_clean``."""
    storage.configure(pipeline_options(runner))
    paths = [(name, path) for name in config.sources for path in shard_indexes(config.output, name)]
    evalsets = load_evalsets(config)
    work = storage.join(config.output, WORK)
    _clear(work)
    state = storage.join(work, "state-0")
    changed = _run(runner, partial(_scan, config, evalsets, paths, work, state))
    while changed:
        previous, state = state, storage.join(work, f"state-{int(state.rsplit('-', 1)[1]) + 1}")
        changed = _run(runner, partial(_more_rounds, previous, state))
        _clear(previous)
    _run(runner, partial(_resolve, config, evalsets, paths, state, work))
    counts = Counter(dict(_read_small(storage.join(work, "samples"))))
    counts.update(dict(_read_small(storage.join(work, "counts"))))
    delete_stale_tables(config, _read_small(storage.join(work, "tables")))
    _clear(work)
    results = clean_results(config, counts)
    record_in_manifest(config, results)
    return results


# --- pure steps ------------------------------------------------------------------------------------


def shard_nodes(config: CorpusConfig, evalsets: list[EvalSet], paths, number: int,
                wanted: Container[int] | None = None) -> list[Node]:
    """The samples of shard index ``paths[number]`` as nodes (only the ids in ``wanted`` when given), with
    their own contaminations (decided per sample against the evaluation sets: only for the nodes made)."""
    name, path = paths[number]
    rows = [(node_id(number, n), row) for n, row in enumerate(read_index(path, name))]
    if wanted is not None:
        rows = [(id, row) for id, row in rows if id in wanted]
    position = list(config.sources).index(name)
    found: dict[str, list[Contamination]] = {}
    for c in find_contamination((ref_of(row, config) for _, row in rows), evalsets,
                                config.clean.near_duplicate_distance):
        found.setdefault(c.key, []).append(c)
    return [Node(id, item_of(row, position), row.shard, tuple(found.get(row.key, ()))) for id, row in rows]


def scan_shard(config: CorpusConfig, evalsets: list[EvalSet], paths, number: int):
    """One shard index -> its sample count (tagged ``samples``), its node ids keyed by exact code (main:
    sha256 or normalised text digest), ``(id, pHash)`` keyed by pHash band (``bands``), and its contaminated
    ids (``alone``: they enter the graph without an edge). Equal pHashes meet in the first band's group."""
    nodes = shard_nodes(config, evalsets, paths, number)
    masks = band_masks(config.clean.near_duplicate_distance)
    yield beam.pvalue.TaggedOutput("samples", ((paths[number][0], "samples", ""), len(nodes)))
    for node in nodes:
        codes = link_codes(node.item)
        if codes.sha256 is not None:
            yield b"s" + codes.sha256, node.id
        if codes.text is not None:
            yield b"t" + codes.text, node.id
        if codes.phash is not None:
            phash = codes.phash.to_bytes(8, "big")
            for band, mask in enumerate(masks):
                yield beam.pvalue.TaggedOutput("bands", (bytes([band]) + (codes.phash & mask).to_bytes(8, "big"),
                                                         (node.id, phash)))
        if node.contaminations:
            yield beam.pvalue.TaggedOutput("alone", node.id)


def star_edges(ids) -> list[tuple[int, int]]:
    """Samples sharing an exact code: each linked to the smallest."""
    smallest, *others = sorted(ids)
    return [(smallest, other) for other in others]


def band_edges(band: int, members, masks: list[int], distance: int) -> list[tuple[int, int]]:
    """Samples sharing band ``band`` (``(id, pHash bytes)``): one edge per pair of distinct pHashes within
    ``distance`` bits found first in this band, between the smallest samples of the two pHashes; in the
    first band also a star per pHash shared by several samples (every band of equal pHashes agrees)."""
    by_value: dict[int, list[int]] = {}
    for node, phash in members:
        by_value.setdefault(int.from_bytes(phash, "big"), []).append(node)
    values = sorted(by_value)
    smallest = [min(by_value[value]) for value in values]
    i, j = band_pairs(np.array(values, np.uint64), band, masks, distance)
    edges = [(smallest[a], smallest[b]) for a, b in zip(i.tolist(), j.tolist(), strict=True)]
    if band == 0:
        edges += [edge for value in values if len(by_value[value]) > 1 for edge in star_edges(by_value[value])]
    return edges


def resolve_component(nodes: list[Node], distance: int) -> tuple[dict[tuple[str, str, int], list[dict]], Counter]:
    """A component's reject rows per table and its counts, by the in-process rules (module doc, 3.)."""
    nodes = sorted(nodes, key=lambda node: (node.item.rank, node.item.key))
    items = [node.item for node in nodes]
    duplicates = find_duplicates(items, distance)
    own = [c for node in nodes for c in node.contaminations]
    source_of = {item.key: item.source for item in items}
    contaminations = own + inherited(duplicates, own, source_of)
    where = {node.item.key: (node.item.source, node.shard) for node in nodes}
    return reject_tables(duplicates, contaminations, where), tally(duplicates, contaminations, source_of)


def members_of_shard(config: CorpusConfig, evalsets: list[EvalSet], paths, number: int, members):
    """``(component, node)`` of every ``(id, component)`` of shard index ``number`` in the graph."""
    component_of = dict(members)
    for node in shard_nodes(config, evalsets, paths, number, component_of):
        yield component_of[node.id], node


# --- Beam shells -----------------------------------------------------------------------------------


class _ClusterUnionFn(ClusterUnion, beam.CombineFn):
    """``ClusterUnion`` as the Beam ``CombineFn`` it already is in shape."""


def _scan(config: CorpusConfig, evalsets: list[EvalSet], paths, work: str, state: str, pipeline) -> None:
    """The first pipeline: shards -> duplicate edges -> first clusters -> ``ROUNDS`` rounds (module doc, 1-2)."""
    distance = config.clean.near_duplicate_distance
    masks = band_masks(distance)
    nodes = (pipeline | "Shards" >> beam.Create(range(len(paths))) | "Spread" >> beam.Reshuffle()
             | "Scan" >> beam.FlatMap(partial(scan_shard, config, evalsets, paths)).with_outputs(
                 "samples", "bands", "alone", main="codes"))
    _write_small(nodes.samples | "CountSamples" >> beam.CombinePerKey(sum), storage.join(work, "samples"))
    exact = nodes.codes | "GroupCodes" >> beam.GroupByKey() | "Stars" >> beam.FlatMapTuple(
        lambda _, group: star_edges(group))
    near = nodes.bands | "GroupBands" >> beam.GroupByKey() | "Pairs" >> beam.FlatMapTuple(
        lambda band, group: band_edges(band[0], group, masks, distance))
    alone = nodes.alone | "Self" >> beam.Map(lambda node: (node, node))
    clusters = ((exact, near, alone) | "Edges" >> beam.Flatten()
                | "EdgeMessages" >> beam.FlatMapTuple(edge_messages)
                | "Build" >> beam.CombinePerKey(_ClusterUnionFn())
                | "Clusters" >> beam.FlatMapTuple(partial(_kept, count=False)))
    _rounds(clusters, state)


def _more_rounds(previous: str, state: str, pipeline) -> None:
    _rounds(_read(pipeline, previous), state)


def _rounds(clusters, state: str) -> None:
    """``ROUNDS`` Hash-to-Min rounds, the last one counting changed clusters, then the state saved."""
    for n in range(ROUNDS):
        clusters = (clusters
                    | f"Round{n}/Send" >> beam.FlatMapTuple(round_messages)
                    | f"Round{n}/Union" >> beam.CombinePerKey(_ClusterUnionFn())
                    | f"Round{n}/Keep" >> beam.FlatMapTuple(partial(_kept, count=n == ROUNDS - 1)))
    clusters | "Encode" >> beam.Map(_encode) | "Save" >> beam.io.WriteToText(storage.join(state, "part"))


def _kept(node: int, result, count: bool):
    cluster, changed = result
    if count and changed:
        Metrics.counter(__name__, _CHANGED).inc()
    if cluster:
        yield node, cluster


def _resolve(config: CorpusConfig, evalsets: list[EvalSet], paths, state: str, work: str, pipeline) -> None:
    """The last pipeline: each component's members read back from their shard indexes (one shard at a
    time), each component resolved, rows written per table, counts and table paths saved."""
    distance = config.clean.near_duplicate_distance
    removals = (_read(pipeline, state)
                | "Components" >> beam.Filter(lambda pair: is_component(*pair))
                | "Members" >> beam.FlatMapTuple(lambda root, cluster: ((node >> _ROW_BITS, (node, root))
                                                                        for node in cluster))
                | "ByShard" >> beam.GroupByKey()
                | "Read" >> beam.FlatMapTuple(partial(members_of_shard, config, evalsets, paths))
                | "ByComponent" >> beam.GroupByKey()
                | "Resolve" >> beam.FlatMapTuple(partial(_resolved, distance=distance)).with_outputs(
                    "counts", main="rows"))
    _write_small(removals.counts | "Count" >> beam.CombinePerKey(sum), storage.join(work, "counts"))
    tables = (removals.rows | "ByTable" >> beam.GroupByKey()
              | "Write" >> beam.MapTuple(lambda where, rows: write_reject_table(config.output, *where, list(rows))))
    _write_small(tables, storage.join(work, "tables"))


def _resolved(_: int, nodes, distance: int):
    tables, counts = resolve_component(list(nodes), distance)
    for where, rows in tables.items():
        for row in rows:
            yield where, row
    for what, n in counts.items():
        yield beam.pvalue.TaggedOutput("counts", (what, n))


def _run(runner: RunnerConfig, build) -> bool:
    """Build and run one pipeline; whether its last round changed any cluster (Beam counter)."""
    pipeline = beam.Pipeline(options=pipeline_options(runner))
    build(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name(_CHANGED))["counters"]
    return any((c.committed if c.committed is not None else c.attempted) for c in counters)


def _encode(element) -> str:
    return base64.b64encode(pickle.dumps(element, protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii")


def _read(pipeline, state: str):
    return (pipeline | "Load" >> beam.io.ReadFromText(storage.join(state, "part*"))
            | "Decode" >> beam.Map(lambda line: pickle.loads(base64.b64decode(line))))


def _write_small(pcollection, path: str) -> None:
    """A small result (counts, table paths) as one pickle the launcher reads."""
    label = path.rsplit("/", 1)[-1]
    (pcollection | f"{label}/List" >> beam.combiners.ToList()
     | f"{label}/Write" >> beam.Map(lambda items: storage.write_bytes(path, pickle.dumps(sorted(items)))))


def _read_small(path: str) -> list:
    return pickle.loads(storage.read_bytes(path))


def _clear(folder: str) -> None:
    """Every file under ``folder``, then the folder itself where the file system has folders."""
    storage.delete(storage.glob(storage.join(folder, "**")))
    if storage.exists(folder):
        storage.delete([folder])
