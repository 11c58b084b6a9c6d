"""UNIMO related images and texts (retrieval/related.py) against brute-force references: scikit-learn's
TfidfVectorizer for the TF-IDF space, dense numpy cosines for the search and the embedding rerank."""

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from retrieval.related import TfidfIndex, label_terms, related_images, related_texts, same_key, text_terms
from schemas.stages import RetrieveConfig

LABELS = ["ball", "box", "tent", "tree", "car", "house", "sun", "kite", "traffic light", "dog", "cat", "boat"]
WORDS = ("red blue green ball box tent tree car house sun kite sand grass sky road dog boat river hill small big "
         "old new bright dark").split()


def dense_tfidf(documents: list[list[str]], queries: list[list[str]]) -> np.ndarray:
    """Exact cosines (queries x documents) in scikit-learn's TF-IDF (raw counts, smooth idf, l2)."""
    vectorizer = TfidfVectorizer(analyzer=lambda terms: terms)
    docs = vectorizer.fit_transform(documents).toarray()
    return vectorizer.transform(queries).toarray() @ docs.T


def assert_exact_top(found: list[tuple[int, float]], truth: np.ndarray, top: int, excluded: set[int]) -> None:
    """``found`` is an exact top ``top`` of ``truth`` (positive scores only, ``excluded`` left out)."""
    eligible = np.array([i for i in range(len(truth)) if i not in excluded and truth[i] > 1e-12], dtype=int)
    expected = np.sort(truth[eligible])[::-1][:top]
    assert len(found) == len(expected)
    ids = [i for i, _ in found]
    scores = np.array([s for _, s in found])
    assert len(set(ids)) == len(ids) and not set(ids) & excluded
    np.testing.assert_allclose(scores, expected, atol=1e-9)  # the best scores, best first
    np.testing.assert_allclose(truth[ids], scores, atol=1e-9)  # each id really has its score


def random_images(rng, count: int) -> list[list[str]]:
    return [list(rng.choice(LABELS, size=rng.integers(1, 6))) for _ in range(count)]


def test_related_images_are_the_exact_tfidf_top_100_without_the_query():
    rng = np.random.default_rng(0)
    images = random_images(rng, 400)
    keys = [f"img-{i}" for i in range(len(images))]
    top_n = RetrieveConfig().related_images_top_n
    assert top_n == 100  # UNIMO App. A
    index = TfidfIndex([label_terms(labels) for labels in images])
    queries = list(range(0, 400, 7))
    found = related_images(index, [images[q] for q in queries], top_n, same_key(keys, [keys[q] for q in queries]))
    truth = dense_tfidf([label_terms(x) for x in images], [label_terms(images[q]) for q in queries])
    for row, q in enumerate(queries):
        assert_exact_top(found[row], truth[row], top_n, {q})
    assert max(len(hits) for hits in found) == top_n  # the cap binds where more images share a label


def test_related_images_return_every_candidate_when_fewer_than_top_n():
    images = [["ball", "tree"], ["ball"], ["tree", "tree", "car"], ["sun"], ["ball", "tree"], ["kite", "sun"]]
    keys = [f"img-{i}" for i in range(len(images))]
    index = TfidfIndex([label_terms(x) for x in images])
    found = related_images(index, [images[0]], exclude=same_key(keys, [keys[0]]))[0]  # the default top_n, 100
    # every image sharing a label with image 0, and only those: the inverted index filters the rest
    assert sorted(i for i, _ in found) == [1, 2, 4]
    assert found[0] == (4, pytest.approx(1.0))  # the same labels under another key
    assert found[1][1] > found[2][1] > 0


def test_multi_word_labels_are_one_term_and_unknown_labels_find_nothing():
    assert label_terms(["Traffic  light", "car", " "]) == ["traffic light", "car"]
    index = TfidfIndex([label_terms(["traffic light"]), label_terms(["light"]), label_terms(["car"])])
    assert [i for i, _ in related_images(index, [["traffic light"]])[0]] == [0]
    assert related_images(index, [["zebra"]]) == [[]]


def test_text_terms_drop_stop_words():
    assert text_terms("A dog is on the big, RED ball!") == ["dog", "big", "red", "ball"]


def random_texts(rng, count: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(count)]


def unit(rng, n: int, dim: int = 16) -> np.ndarray:
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_related_texts_rerank_the_tfidf_candidates_by_embedding_cosine():
    rng = np.random.default_rng(1)
    texts = random_texts(rng, 300)
    keys = [f"t-{i // 3}" for i in range(len(texts))]  # three texts per sample, like COCO captions
    vectors = unit(rng, len(texts))
    queries = list(range(0, 300, 11))
    top_m, top_n = 40, 10
    index = TfidfIndex([text_terms(t) for t in texts])
    exclude = same_key(keys, [keys[q] for q in queries])
    found = related_texts(index, vectors, [texts[q] for q in queries], vectors[queries], top_m, top_n, exclude)
    truth = dense_tfidf([text_terms(t) for t in texts], [text_terms(texts[q]) for q in queries])
    for row, q in enumerate(queries):
        own = {i for i in range(len(texts)) if keys[i] == keys[q]}
        assert own == exclude[row] and q in own
        # the candidates: an exact TF-IDF top M without the query's own sample
        candidates = index.search([text_terms(texts[q])], top_m, [own])[0]
        assert_exact_top(candidates, truth[row], top_m, own)
        ids = np.array([i for i, _ in candidates])
        cosines = vectors[ids] @ vectors[q]
        expected = ids[np.argsort(-cosines, kind="stable")][:top_n]
        assert [i for i, _ in found[row]] == list(expected)  # reranked by embedding, not by TF-IDF
        np.testing.assert_allclose([s for _, s in found[row]], vectors[expected] @ vectors[q], rtol=1e-5)
        assert not {i for i, _ in found[row]} & own


def test_related_texts_defaults_and_fewer_candidates_than_top_n():
    config = RetrieveConfig()
    assert (config.related_texts_candidates, config.related_texts_top_n) == (1000, 100)  # UNIMO App. A
    rng = np.random.default_rng(2)
    texts = ["a red ball on the sand", "a blue ball", "the red car", "green trees on a hill", "ball games"]
    vectors = unit(rng, len(texts))
    index = TfidfIndex([text_terms(t) for t in texts])
    found = related_texts(index, vectors, [texts[0]], vectors[:1], config.related_texts_candidates,
                          config.related_texts_top_n, same_key(list("abcde"), ["a"]))[0]
    assert sorted(i for i, _ in found) == [1, 2, 4]  # every text sharing a term (ball, red, sand), not itself
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True)
    assert related_texts(index, vectors, ["the of and"], vectors[:1]) == [[]]  # stop words only: no term


def test_a_shard_without_queries_gives_no_links_not_a_crash():
    from pipelines.linkers import _stored_vectors

    empty = _stored_vectors([])  # np.array([]).reshape(0, -1) would raise
    assert empty.shape == (0, 0) and _stored_vectors([[1, 0], [0, 1]]).shape == (2, 2)
    index = TfidfIndex([text_terms("a red ball"), text_terms("a blue tent")])
    assert related_texts(index, _stored_vectors([[1, 0], [0, 1]]), [], empty) == []
