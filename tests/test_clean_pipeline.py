"""clean as Beam pipelines: the same reject tables, byte for byte, and the same manifest entry as the in-process
reference (``run_clean``), on the mini corpus and on generated shard indexes with every kind of duplicate."""

import dataclasses
import json
import os
import pickle
import shutil
from collections import Counter

import pytest

from pipelines.components import ClusterUnion, edge_messages, is_component, round_messages
from pipelines.dedup import band_masks
from pipelines.minicorpus.clean_indexes import write_clean_indexes
from pipelines.runner import RunnerConfig
from pipelines.stages.clean import load_evalsets, run_clean, shard_indexes
from pipelines.stages.clean_pipeline import (
    ROUNDS,
    WORK,
    band_edges,
    members_of_shard,
    node_id,
    run_clean_pipeline,
    scan_shard,
)
from tests.conftest import tree_digest
from tests.test_runners import local_cluster  # noqa: F401 (a fixture)

TWO_WORKERS = RunnerConfig(beam_args=["--direct_num_workers=2", "--direct_running_mode=multi_threading"])


def _removals(root) -> dict[str, str]:
    return {k: v for k, v in tree_digest(root).items() if k.startswith(("rejects/dedup/", "rejects/decontam/"))}


def _clean_entry(root) -> dict:
    with open(os.path.join(root, "corpus.json")) as f:
        return json.load(f)["stages"]["clean"]


def _reference(config):
    """The in-process clean's tables, manifest entry and decisions; then the corpus as before any clean."""
    results, duplicates, contaminations = run_clean(config)
    expected = _removals(config.output), _clean_entry(config.output), results
    for stage in ("dedup", "decontam"):
        shutil.rmtree(os.path.join(config.output, "rejects", stage))
    with open(os.path.join(config.output, "corpus.json")) as f:
        manifest = json.load(f)
    del manifest["stages"]["clean"]
    with open(os.path.join(config.output, "corpus.json"), "w") as f:
        json.dump(manifest, f)
    return expected, duplicates, contaminations


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Generated shard indexes (exact, near, chained and text duplicates across sources and shards, evaluation
    ids, one long near chain) and the in-process clean's output on them."""
    config = write_clean_indexes(str(tmp_path_factory.mktemp("generated")), 1500, seed=3, long_chain=40)
    return (config, *_reference(config))


def test_generated_corpus_has_every_case(generated):
    _, _, duplicates, contaminations = generated
    kinds = Counter(d.kind for d in duplicates)
    assert min(kinds[k] for k in ("exact_image", "near_image", "exact_text")) > 20
    assert max(d.distance for d in duplicates) > 4  # chains: linked only through a middle copy
    assert {c.matched_by for c in contaminations} == {"coco_id", "url", "duplicate"}
    sources = {d.key.split("-")[0] for d in duplicates} | {d.duplicate_of.split("-")[0] for d in duplicates}
    assert sources == {"coco", "cc", "unl", "books"}


def test_beam_clean_writes_the_in_process_tables(generated):
    config, (tables, entry, results), _, _ = generated
    assert run_clean_pipeline(config, RunnerConfig()) == results
    assert _removals(config.output) == tables and len(tables) > 10
    assert _clean_entry(config.output) == entry
    assert not os.path.exists(os.path.join(config.output, WORK))


def test_two_workers_and_a_rerun_after_a_killed_run_give_the_same_bytes(generated):
    config, (tables, entry, _), _, _ = generated
    run_clean_pipeline(config, TWO_WORKERS)
    assert _removals(config.output) == tables and _clean_entry(config.output) == entry
    # a run killed mid-way: a stale table of a shard without removals, one table gone, half-written state
    rejects = os.path.join(config.output, "rejects")
    removed = os.path.join(rejects, sorted(tables)[0].removeprefix("rejects/"))
    stale = os.path.join(rejects, "dedup", "unl", "00099.parquet")
    shutil.copy(removed, stale)
    os.remove(removed)
    os.makedirs(os.path.join(config.output, WORK, "state-0"))
    with open(os.path.join(config.output, WORK, "state-0", "part-00000-of-00001"), "w") as f:
        f.write("half a line")
    run_clean_pipeline(config, TWO_WORKERS)
    assert _removals(config.output) == tables and not os.path.exists(stale)
    assert not os.path.exists(os.path.join(config.output, WORK))


def test_through_a_job_service_and_an_external_worker_pool(generated, local_cluster):  # noqa: F811
    """The portable runner (as on Flink or Spark): no process-local state between the pipelines."""
    config, (tables, entry, _), _, _ = generated
    job_endpoint, worker_pool = local_cluster
    run_clean_pipeline(config, RunnerConfig("portable", job_endpoint=job_endpoint, worker_pool=worker_pool))
    assert _removals(config.output) == tables and _clean_entry(config.output) == entry


def test_beam_clean_on_the_mini_corpus(ingested, tmp_path):
    config, expected, _ = ingested
    shutil.copytree(config.output, tmp_path, dirs_exist_ok=True)
    config = dataclasses.replace(config, output=str(tmp_path))
    (tables, entry, results), duplicates, contaminations = _reference(config)
    assert duplicates and contaminations and len(tables) > 5
    assert run_clean_pipeline(config, RunnerConfig()) == results
    assert _removals(config.output) == tables and _clean_entry(config.output) == entry


def test_a_source_without_shards_is_an_error_naming_it(tmp_path):
    config = write_clean_indexes(str(tmp_path), 20)
    shutil.rmtree(os.path.join(config.output, "raw", "unl"))
    with pytest.raises(ValueError, match="source unl: no ingested shards under .*raw/unl; run ingest first"):
        run_clean_pipeline(config, RunnerConfig())


def test_the_duplicate_graph_moves_int_ids_and_finds_each_sample_again_by_its_id(generated):
    """What a worker holds grows with what the steps move: the scan sends ids and codes, never samples."""
    config, _, _, contaminations = generated
    paths = [(name, path) for name in config.sources for path in shard_indexes(config.output, name)]
    evalsets = load_evalsets(config)
    number = next(n for n, (name, _) in enumerate(paths) if name == "coco")
    out = list(scan_shard(config, evalsets, paths, number))
    tagged = {tag: [o.value for o in out if getattr(o, "tag", None) == tag] for tag in ("samples", "bands", "alone")}
    codes = [o for o in out if not hasattr(o, "tag")]
    (_, samples), = tagged["samples"]
    assert len(codes) == samples and len(tagged["bands"]) == samples * len(band_masks(4))
    assert all(type(code) is bytes and type(node) is int for code, node in codes)
    assert all(type(band) is bytes and type(node) is int and len(phash) == 8 for band, (node, phash) in tagged["bands"])
    assert tagged["alone"] and all(type(node) is int for node in tagged["alone"])
    ids = [node for _, node in codes]
    found = dict(members_of_shard(config, evalsets, paths, number, [(ids[7], "seven"), (tagged["alone"][0], "c")]))
    assert found["seven"].id == ids[7] and found["seven"].item.source == "coco"
    assert {c.key for c in found["c"].contaminations} <= {c.key for c in contaminations} and found["c"].contaminations
    assert pickle.loads(pickle.dumps(found["c"])) == found["c"]  # resolve moves nodes pickled as their values
    with pytest.raises(ValueError, match="shard index 3: more than 2\\*\\*32 rows"):
        node_id(3, 2**32)


def test_band_edges_pair_near_pHashes_once_and_star_equal_ones_in_the_first_band():
    masks = band_masks(4)
    x = 0x0123456789ABCDEF
    y = x ^ (1 << 63)  # one bit apart, in the last band: they agree on band 0 first
    members = [(5, x.to_bytes(8, "big")), (3, x.to_bytes(8, "big")), (9, y.to_bytes(8, "big"))]
    assert sorted(band_edges(0, members, masks, 4)) == [(3, 5), (3, 9)]
    assert band_edges(1, members, masks, 4) == []  # the same pair again, and the equal pHashes: linked already


# --- Hash-to-Min without Beam ----------------------------------------------------------------------


def _union(messages) -> dict:
    """One grouping step as Beam runs it: messages per key through the combiner, accumulators merged."""
    union = ClusterUnion()
    by_key: dict = {}
    for key, message in messages:
        by_key.setdefault(key, []).append(message)
    out = {}
    for key, group in by_key.items():
        halves = [group[: len(group) // 2], group[len(group) // 2:]]
        accumulators = []
        for half in halves:
            accumulator = union.create_accumulator()
            for message in half:
                accumulator = union.add_input(accumulator, message)
            accumulators.append(accumulator)
        cluster, changed = union.extract_output(union.merge_accumulators(accumulators))
        if cluster:
            out[key] = (cluster, changed)
    return out


def _components(edges):
    """Hash-to-Min to its fixed point: the components and the number of rounds it took."""
    state = {k: c for k, (c, _) in _union(m for u, v in edges for m in edge_messages(u, v)).items()}
    rounds = 0
    while True:
        rounds += 1
        result = _union(m for key, cluster in state.items() for m in round_messages(key, cluster))
        state = {k: c for k, (c, _) in result.items()}
        if not any(changed for _, changed in result.values()):
            return sorted(c for k, c in state.items() if is_component(k, c)), rounds


def test_hash_to_min_finds_components_of_paths_stars_and_loners():
    nodes = list(range(1000, 1120))
    order = list(range(60))
    order.reverse()  # a path visited against the node order: the smallest label has the longest way
    path = [(nodes[a], nodes[b]) for a, b in zip(order, order[1:], strict=False)]
    star = [(nodes[70], nodes[k]) for k in range(71, 90)]
    pairs = [(nodes[100], nodes[101]), (nodes[101], nodes[100])]
    loner = [(nodes[110], nodes[110])]
    components, rounds = _components(path + star + pairs + loner)
    assert components == [tuple(nodes[:60]), tuple(nodes[70:90]), (nodes[100], nodes[101]), (nodes[110],)]
    assert rounds > ROUNDS  # the pipeline loop needs more than one pipeline of rounds on such a path
