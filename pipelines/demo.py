"""The end-to-end demo: the mini corpus in every raw format (and a URL list served from a local HTTP
server), built with offline models, then every stage: ingest, clean, annotate (detect, parse, rewrite),
embed, index, retrieve, pack, a few training steps of a tiny model, report; finally the retrieval service answers
a query over real HTTP. Counts are checked against what the generator planted."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

from pipelines.runner import RunnerConfig
from schemas import layout

DEMO_QUERY = "a red ball next to a tree"
DEMO_TRAIN_CONFIG = "unimo"   # images, texts, pairs and cmcl: every task of the 1:1:5 mix
DEMO_TRAIN_STEPS = 8


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per request would drown the summary
        pass


@contextlib.contextmanager
def static_server(directory: str) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=directory))
    with _serving(server):
        yield f"http://127.0.0.1:{server.server_address[1]}"


@contextlib.contextmanager
def _serving(server: ThreadingHTTPServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def run_demo(out: str, seed: int, scale: int, runner: RunnerConfig, overwrite: bool, show_progress: bool) -> int:
    from pipelines.minicorpus import generate
    from pipelines.stages.clean import run_clean
    from pipelines.stages.ingest import run_ingest
    from pipelines.summary import format_clean_summary, format_summary
    from schemas.config import load_config

    with static_server(os.path.join(out, "datasets", "web")) as url_base:
        config_path = generate(out, seed=seed, scale=scale, url_base=url_base, models=True)
        print(f"mini corpus in every raw format under {out}/datasets (URL list served at {url_base}), "
              f"models under {out}/models, config {config_path}")
        config = load_config(config_path)
        ingested = run_ingest(config, list(config.sources), runner, overwrite=overwrite, show_progress=show_progress)
    print(format_summary(ingested))
    cleaned, duplicates, contaminations = run_clean(config)
    print(format_clean_summary(cleaned))
    with open(os.path.join(os.path.dirname(config_path), "expected.json"), encoding="utf-8") as f:
        expected = json.load(f)
    problems = check_ingest(expected, ingested, config.output) + check_clean(expected["_clean"], duplicates,
                                                                          contaminations)
    problems += run_later_stages(config, expected, runner, overwrite, show_progress)
    problems += run_train_stage(config.output, os.path.join(out, "train"), show_progress)
    from pipelines.report import write_report

    print(f"\nreport: {write_report(config)}")
    problems += query_service(config)
    print(f"\ncorpus written to {config.output}; look around with\n"
          f"  .venv/bin/unicorpus serve --config {config_path}   (then open the printed URL)\n"
          f"  .venv/bin/unicorpus query --config {config_path} \"{DEMO_QUERY}\"")
    for problem in problems:
        print(f"MISMATCH {problem}")
    print("all counts match the generator's ground truth" if not problems else f"{len(problems)} mismatches")
    return 1 if problems else 0


def run_later_stages(config, expected: dict, runner: RunnerConfig, overwrite: bool, show_progress: bool) -> list[str]:
    """annotate detect, parse, rewrite; embed; index; retrieve; pack: each summary printed; what disagrees returned."""
    from pipelines.stages.detect import run_detect
    from pipelines.stages.embed import run_embed
    from pipelines.stages.index import format_index_summary, run_index
    from pipelines.stages.parse import run_parse
    from pipelines.stages.retrieve import example_pairs, run_retrieve
    from pipelines.stages.rewrite import example_text, run_rewrite
    from pipelines.summary import format_example_pairs, format_summary

    problems = []
    for title, run in (("annotate detect", run_detect), ("annotate parse", run_parse),
                       ("annotate rewrite", run_rewrite), ("embed", run_embed)):
        results = run(config, None, runner, overwrite=overwrite, show_progress=show_progress)
        print(f"\n{title}\n{format_summary(results)}")
        if title == "annotate detect":
            problems += check_detect(expected, results)
        if title == "annotate rewrite":
            print(example_text(config))
    print(f"\nindex\n{format_index_summary(run_index(config, overwrite=overwrite, show_progress=show_progress))}")
    retrieved = run_retrieve(config, runner, overwrite=overwrite, show_progress=show_progress)
    print(f"\nretrieve\n{format_summary(retrieved, 'table/source')}")
    print(format_example_pairs(example_pairs(config, 2)))
    return problems + check_weak_pairs(config) + run_pack_stage(config, expected, runner, overwrite, show_progress)


def run_pack_stage(config, expected: dict, runner: RunnerConfig, overwrite: bool, show_progress: bool) -> list[str]:
    """pack every task; its summary (samples per task) and what was left out; what disagrees returned."""
    from pipelines.stages.pack import format_left_out, recorded_left_out, run_pack
    from pipelines.summary import format_summary

    tasks = run_pack(config, None, runner, overwrite=overwrite, show_progress=show_progress)
    print(f"\npack\n{format_summary(tasks, 'task')}\n{format_left_out(recorded_left_out(config.output))}")
    print("packed samples per task: " + ", ".join(f"{r.name} {r.counts.written}" for r in tasks))
    return check_pack(expected, tasks)


def check_pack(expected: dict, tasks) -> list[str]:
    """Against the generator: exactly the samples clean removes (planted duplicates and evaluation images) are
    left out, per source; every other image-only sample is an ``images`` unit, every other text-only sample a
    ``texts`` unit, every other image a ``tag_pairs`` unit; every task packs something."""
    clean = expected["_clean"]
    removed = {d["key"] for d in clean["duplicates"]} | {c["key"] for c in clean["contaminated"]}
    problems = []
    kept: dict[str, int] = {}
    for source, facts in expected.items():
        if source.startswith("_"):
            continue
        gone = sum(1 for key in removed if key.split("-", 1)[0] == source)
        kept[facts["modality"]] = kept.get(facts["modality"], 0) + facts["samples"] - gone
        left_out = {r.removed.get(source, 0) for r in tasks}  # each task's, from the shards' footers
        if left_out != {gone}:
            problems.append(f"pack {source}: {sorted(left_out)} left out, clean removed {gone}")
    units = {r.name: r.counts.records_in for r in tasks}
    for task, want in (("images", kept.get("image", 0)), ("texts", kept.get("text", 0)),
                       ("tag_pairs", kept.get("image", 0) + kept.get("pair", 0))):
        if units.get(task) != want:
            problems.append(f"pack {task}: {units.get(task)} units, the kept samples are {want}")
    problems += [f"pack {r.name}: no sample packed" for r in tasks if not r.counts.written]
    return problems


def check_detect(expected: dict, results) -> list[str]:
    """Every ingested image clean kept is looked at by detect: its units and the removed samples it left out
    are the source's samples (no image is refused after ingest decoded it)."""
    return [f"detect {r.name}: {r.counts.records_in} images considered and {r.removed[r.name]} removed by clean, "
            f"ingest wrote {expected[r.name]['samples']}" for r in results
            if r.counts.records_in + r.removed[r.name] != expected[r.name]["samples"] or r.counts.rejected_total]


def check_weak_pairs(config) -> list[str]:
    """Every served image of a weak-pairs table has exactly K sentences (the candidates outnumber K here)."""
    from retrieval.corpus import Corpus

    corpus = Corpus.from_config(config)
    problems = []
    for weak in config.retrieval.retrieve.weak_pairs:
        for source in weak.images:
            counts: dict[str, int] = {}
            for row in corpus.rows(layout.links(weak.name), source, ["query_key"]):
                counts[row["query_key"]] = counts.get(row["query_key"], 0) + 1
            wrong = sorted(key for key, n in counts.items() if n != weak.k)
            if not counts or wrong:
                problems.append(f"{weak.name} {source}: {len(counts)} images served, "
                                f"{len(wrong)} without exactly {weak.k} sentences {wrong[:3]}")
    return problems


def query_service(config) -> list[str]:
    """Start the retrieval service on a free loopback port, ask it one free-text query, print the answer."""
    from retrieval.query import QueryEngine
    from retrieval.service import Service, make_server

    server = make_server(Service(QueryEngine(config)), "127.0.0.1", 0)
    with _serving(server):
        url = f"http://127.0.0.1:{server.server_address[1]}/api/search?q={urllib.parse.quote(DEMO_QUERY)}&k=3"
        with urllib.request.urlopen(url, timeout=60) as response:
            answer = json.load(response)
    print(f"\nthe service answered GET {url.split('/', 3)[-1]}:")
    for hit in answer["results"]:
        print(f"  {hit['score']:.3f}  {hit['source']:<12} {hit['text']}")
    return [] if len(answer["results"]) == 3 else [f"service: {len(answer['results'])} results for k=3"]


def check_ingest(expected: dict, results, root: str) -> list[str]:
    problems = []
    for result in results:
        want = expected[result.name]
        got = {"samples": result.counts.written, "rejects": dict(result.counts.rejected)}
        if got["samples"] != want["samples"] or got["rejects"] != want["rejects"]:
            problems.append(f"{result.name}: expected {want['samples']} samples, rejects {want['rejects']}; "
                            f"got {got['samples']}, {got['rejects']}")
        if "url_status" in want and url_statuses(root, result.name) != want["url_status"]:
            problems.append(f"{result.name}: URL statuses {url_statuses(root, result.name)}, "
                            f"expected {want['url_status']}")
    return problems


def url_statuses(root: str, source: str) -> dict[str, int]:
    """status -> number of URLs, over the source's download status tables."""
    from retrieval import files

    counts: dict[str, int] = {}
    for path in files.glob(files.join(root, layout.urls(source), "*.parquet")):
        for status in files.read_table(path, ["status"]).column("status").to_pylist():
            counts[status] = counts.get(status, 0) + 1
    return counts


def check_clean(expected: dict, duplicates, contaminations) -> list[str]:
    """Duplicates and contamination must be exactly what the generator planted."""
    want = {(d["key"], d["duplicate_of"], d["kind"]) for d in expected["duplicates"]}
    got = {(d.key, d.duplicate_of, d.kind) for d in duplicates}
    problems = [f"planted duplicate not found: {k}" for k in sorted(want - got)]
    problems += [f"unexpected duplicate: {k}" for k in sorted(got - want)]
    want = {(c["key"], c["eval_set"], c["matched_by"]) for c in expected["contaminated"]}
    got = {(c.key, c.eval_set, c.matched_by) for c in contaminations}
    problems += [f"contaminated sample not found: {k}" for k in sorted(want - got)]
    problems += [f"unexpected contamination: {k}" for k in sorted(got - want)]
    return problems


def packed_region_sizes(packed: str) -> tuple[int, int]:
    """(feature size, detector classes) of the packed regions: the demo's model must match its detector."""
    import glob
    import io
    import tarfile

    import numpy as np

    from schemas.packed import PAIRS

    for path in sorted(glob.glob(os.path.join(packed, PAIRS, "*.tar"))):
        with tarfile.open(path) as tar:
            arrays = {m.name.split(".", 1)[1]: m for m in tar.getmembers() if m.name.endswith(".npy")}
            if {"region_feats.npy", "region_probs.npy"} <= set(arrays):
                shape = {k: np.load(io.BytesIO(tar.extractfile(m).read())).shape for k, m in arrays.items()}
                return shape["region_feats.npy"][1], shape["region_probs.npy"][1]
    raise ValueError(f"{packed}/{PAIRS}: no packed sample with region features")


def run_train_stage(corpus: str, out: str, show_progress: bool) -> list[str]:
    """`unicorpus train` of the UNIMO recipe's tiny form on the packed mini corpus, in its own process (as a
    user runs it; pipelines never import the trainer): a checkpoint, TensorBoard logs, losses per task."""
    import shutil
    import subprocess
    import sys

    packed = os.path.join(corpus, layout.PACKED)
    dim, classes = packed_region_sizes(packed)
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training", "configs",
                          f"{DEMO_TRAIN_CONFIG}.yaml")
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "cli.main", "train", "--config", config, "--tiny", f"data.root={packed}",
               f"output={out}", f"schedule.steps={DEMO_TRAIN_STEPS}", f"checkpoint.every={DEMO_TRAIN_STEPS}",
               f"data.region_dim={dim}", f"model.visual.region_feat_dim={dim}", f"data.region_classes={classes}",
               f"model.output_heads.region_classes={classes}"] + ([] if show_progress else ["--quiet"])
    print(f"\ntrain ({DEMO_TRAIN_CONFIG} --tiny, {DEMO_TRAIN_STEPS} steps)", flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    print(done.stdout, end="")
    if done.returncode != 0:
        return [f"train: exit code {done.returncode}"]
    if not os.path.exists(os.path.join(out, layout.CHECKPOINTS, f"step-{DEMO_TRAIN_STEPS:08d}", "meta.json")):
        return [f"train: no checkpoint of step {DEMO_TRAIN_STEPS} under {out}/{layout.CHECKPOINTS}"]
    return []
