"""The demo end to end (every stage on the mini corpus with offline models, a live service query), and
the HTML report it writes, checked against what the tables say."""

import base64
import io
import json
import re
from collections import Counter

from PIL import Image

from pipelines.sidecar_tables import raw_shards, read_shard_input, read_sidecar


def test_demo_runs_every_stage_and_matches_the_ground_truth(demo):
    config, out = demo
    assert "all counts match the generator's ground truth" in out
    for source in ("coco", "vg", "cc", "cc_img2dataset", "sbu", "openimages", "imagenet", "coco_unlabeled",
                   "bookcorpus", "wiki", "owt"):
        assert f"\n{source} " in out
    for title in ("annotate detect", "annotate parse", "annotate rewrite", "embed", "index", "retrieve", "pack"):
        assert f"\n{title}\n" in out
    assert "WARNING" not in out  # read == written + rejected in every summary
    assert out.count("[weak-cc] ") == 2 and out.count("[weak-books] ") == 2
    assert re.search(r"the service answered GET api/search\?q=.*\n(  \d\.\d{3}  .*\n){3}", out)
    manifest = json.loads(open(f"{config.output}/corpus.json").read())
    assert {"ingest", "clean", "detect", "parse", "rewrite", "embed-text", "embed-tags", "retrieve", "pack"} <= set(
        manifest["stages"])
    counts = re.search(r"packed samples per task: (.*)\n", out).group(1)
    packed = {name: int(n) for name, n in (item.rsplit(" ", 1) for item in counts.split(", "))}
    assert set(packed) == {"pairs", "images", "texts", "tag_pairs", "weak_pairs", "cmcl"} | {
        f"pairs_aligned_{x}" for x in (0, 20, 40, 60, 80, 100)} and all(packed.values())
    assert packed["pairs_aligned_100"] == packed["pairs"] == manifest["stages"]["pack"]["pairs"]["counts"]["written"]


def test_report_tag_counts_are_the_ground_truth_objects(demo):
    config, _ = demo
    from pipelines.report import tag_counts
    from retrieval.corpus import Corpus

    counts = tag_counts(config, Corpus.from_config(config))
    for source in ("coco", "vg", "openimages"):  # tags: annotations in the mini corpus
        truth = Counter()
        for shard in raw_shards(config.output, source):
            for row in read_shard_input(config.output, source, shard).rows:
                for obj in row["meta"].get("objects", []):  # COCO and OpenImages: name; VG: names
                    truth[(obj.get("name") or obj["names"][0], "annotation")] += 1
        assert counts[source] == truth
    assert {origin for _, origin in counts["cc"]} == {"detector"}


def test_report_shows_each_weak_pair_with_its_thumbnail_and_best_sentence(demo):
    config, _ = demo
    page = open(f"{config.output}/report/index.html", encoding="utf-8").read()
    for section in ("Stages", "Rejects", "Tags", "Weak pairs weak-cc", "Weak pairs weak-books", "Related images",
                    "Related texts"):
        assert f"<h2>{section}" in page
    start = page.index("<h2>Weak pairs weak-cc")
    section = page[start:page.index("<h2>", start + 1)]
    shown = re.findall(r"<div class='key'>([^<]+)</div>", section)
    assert len(shown) == 6
    best = {r["query_key"]: r["text"] for source in ("coco", "vg", "openimages")
            for r in read_sidecar(config.output, "links/weak-cc", source) if r["rank"] == 0}
    for key in shown:
        card = section[section.index(f">{key}</div>"):]
        assert best[key] in card[:card.index("</ol>")]
    thumbnails = re.findall(r"src='data:image/jpeg;base64,([^']+)'", page)
    assert len(thumbnails) >= 12
    for data in thumbnails:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.format == "JPEG" and max(image.size) <= 128


def test_report_stages_show_sources_and_pack_tasks_in_tables_of_their_own(demo):
    config, _ = demo
    page = open(f"{config.output}/report/index.html", encoding="utf-8").read()
    start = page.index("<h2>Stages")
    section = page[start:page.index("<h2>", start + 1)]
    tables = {line: (re.findall(r"<th>([^<]+)</th>", header), re.findall(r"<tr><td>([^<]+)</td>(.*?)</tr>", rows))
              for line, header, rows in re.findall(r"<table><tr><th>(\w+)</th>(.*?)</tr>(.*?)</table>", section)}
    assert set(tables) == {"source", "task"}
    stages = json.loads(open(f"{config.output}/corpus.json").read())["stages"]
    tasks = {name: entry for name, entry in stages["pack"].items() if "counts" in entry}  # not left_out
    (stage_names, source_rows), (pack_names, task_rows) = tables["source"], tables["task"]
    assert "pack" not in stage_names and pack_names == ["pack"]
    assert [name for name, _ in source_rows] == sorted(config.sources)  # no task among the sources
    assert {name for name, _ in task_rows} == set(tasks) and "pairs_aligned_40" in tasks
    for task, cells in task_rows:
        counts = tasks[task]["counts"]
        assert cells == f"<td class='n'>{counts['written']}/{counts['read']}</td>"


def test_demo_trains_a_tiny_model_on_the_packed_corpus(demo):
    """After pack: `unicorpus train` (UNIMO, --tiny) leaves a checkpoint and TensorBoard logs; the summary
    prints the losses of every task of the 1:1:5 mix."""
    import glob
    import os

    config, out = demo
    train_dir = os.path.join(os.path.dirname(config.output), "train")
    assert "\ntrain (unimo --tiny, 8 steps)\ntrain: 8 steps" in out
    losses = out.split("losses (last log window), per task:\n")[1].split("checkpoint:")[0]
    tasks = {line.split()[0] for line in losses.strip().splitlines()}
    assert tasks and tasks <= {"images", "texts", "pairs", "cmcl"}
    assert os.path.exists(os.path.join(train_dir, "checkpoints", "step-00000008", "meta.json"))
    assert glob.glob(os.path.join(train_dir, "tensorboard", "events.out.tfevents.*"))
