"""UNIMO related images and texts (retrieval/related.py) against brute-force references: scikit-learn's
TfidfVectorizer for the TF-IDF space, dense numpy cosines for the search and the embedding rerank."""

import itertools

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from retrieval import codes
from retrieval.codes import Codes, make_codec
from retrieval.postings import in_memory, index_files
from retrieval.related import related_images, related_texts
from retrieval.tfidf import (
    CollectionShard,
    ShardsInMemory,
    document_frequencies,
    gather,
    label_terms,
    search,
    shard_bytes,
    shard_from_bytes,
    text_terms,
)
from retrieval.tfidf import TfidfVectorizer as OurVectorizer
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


def _labels(document: dict) -> list[str]:
    return label_terms(document["labels"])


def _text(document: dict) -> list[str]:
    return text_terms(document["text"])


def collection(documents: list[dict], analyzer, parts: int = 1):
    """The vectorizer, the postings index and the ``parts`` shards (through their file bytes) it was built
    from, of ``documents`` (each with a ``key``)."""
    vectorizer = OurVectorizer(document_frequencies(documents, analyzer), analyzer)
    matrix = vectorizer.transform(documents)
    bounds = np.linspace(0, len(documents), parts + 1).astype(int)
    shards = [CollectionShard(matrix[a:b], {"key": [d["key"] for d in documents[a:b]], "position": list(range(a, b))})
              for a, b in itertools.pairwise(bounds)]
    stored = [shard_from_bytes(shard_bytes(shard)) for shard in shards]
    return vectorizer, in_memory(index_files(stored, None, len(vectorizer.vocabulary))), ShardsInMemory(stored)


def codes_of(vectors: np.ndarray, parts: int = 1, factory: str = "Flat") -> Codes:
    """The rerank codes of ``vectors`` in the ``parts`` shards ``collection`` makes."""
    bounds = np.linspace(0, len(vectors), parts + 1).astype(int)
    return Codes.of(factory, [vectors[a:b] for a, b in itertools.pairwise(bounds)])


def positions(found) -> list[list[tuple[int, float]]]:
    """(row, score) hits as (collection position, score)."""
    return [[(row["position"], score) for row, score in hits] for hits in found]


def image_documents(images: list[list[str]], keys: list[str] | None = None) -> list[dict]:
    return [{"key": keys[i] if keys else f"img-{i}", "labels": labels} for i, labels in enumerate(images)]


def random_images(rng, count: int) -> list[list[str]]:
    return [list(rng.choice(LABELS, size=rng.integers(1, 6))) for _ in range(count)]


@pytest.mark.parametrize("parts", [1, 3])
def test_related_images_are_the_exact_tfidf_top_100_without_the_query(parts):
    rng = np.random.default_rng(0)
    images = random_images(rng, 400)
    top_n = RetrieveConfig().related_images_top_n
    assert top_n == 100  # UNIMO App. A
    documents = image_documents(images)
    vectorizer, index, shards = collection(documents, _labels, parts)
    queries = list(range(0, 400, 7))
    found = related_images(vectorizer, index, [documents[q] for q in queries],
                                  [documents[q]["key"] for q in queries], top_n)
    truth = dense_tfidf([label_terms(x) for x in images], [label_terms(images[q]) for q in queries])
    hits = positions(found)
    for row, q in enumerate(queries):
        assert_exact_top(hits[row], truth[row], top_n, {q})
    assert max(len(h) for h in hits) == top_n  # the cap binds where more images share a label


def test_related_images_return_every_candidate_when_fewer_than_top_n():
    images = [["ball", "tree"], ["ball"], ["tree", "tree", "car"], ["sun"], ["ball", "tree"], ["kite", "sun"]]
    documents = image_documents(images)
    vectorizer, index, shards = collection(documents, _labels, parts=2)
    found = related_images(vectorizer, index, documents[:1], ["img-0"])  # the default top_n, 100
    (hits,) = positions(found)
    # every image sharing a label with image 0, and only those: the inverted index filters the rest
    assert sorted(i for i, _ in hits) == [1, 2, 4]
    assert hits[0] == (4, pytest.approx(1.0))  # the same labels under another key
    assert hits[1][1] > hits[2][1] > 0


def test_multi_word_labels_are_one_term_and_unknown_labels_find_nothing():
    assert label_terms(["Traffic  light", "car", " "]) == ["traffic light", "car"]
    documents = image_documents([["traffic light"], ["light"], ["car"]])
    vectorizer, index, shards = collection(documents, _labels)
    found = related_images(vectorizer, index, [{"labels": ["traffic light"]}], ["query"])
    assert [i for i, _ in positions(found)[0]] == [0]
    found = related_images(vectorizer, index, [{"labels": ["zebra"]}], ["query"])
    assert positions(found) == [[]]


def test_text_terms_drop_stop_words():
    assert text_terms("A dog is on the big, RED ball!") == ["dog", "big", "red", "ball"]


def random_texts(rng, count: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(count)]


def unit(rng, n: int, dim: int = 16) -> np.ndarray:
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def text_documents(texts: list[str], keys: list[str]) -> list[dict]:
    return [{"key": key, "text": text} for key, text in zip(keys, texts, strict=True)]


@pytest.mark.parametrize("parts", [1, 3])
def test_related_texts_rerank_the_tfidf_candidates_by_embedding_cosine(parts):
    rng = np.random.default_rng(1)
    texts = random_texts(rng, 300)
    keys = [f"t-{i // 3}" for i in range(len(texts))]  # three texts per sample, like COCO captions
    vectors = unit(rng, len(texts))
    queries = list(range(0, 300, 11))
    top_m, top_n = 40, 10
    documents = text_documents(texts, keys)
    vectorizer, index, shards = collection(documents, _text, parts)
    found = related_texts(vectorizer, index, codes_of(vectors, parts), [documents[q] for q in queries],
                          vectors[queries], [keys[q] for q in queries], top_m, top_n)
    truth = dense_tfidf([text_terms(t) for t in texts], [text_terms(texts[q]) for q in queries])
    got = positions(found)
    for row, q in enumerate(queries):
        own = {i for i in range(len(texts)) if keys[i] == keys[q]}
        # the candidates: an exact TF-IDF top M without the query's own sample
        filtered = search(vectorizer.transform([documents[q]]), shards.each_shard(), top_m, ("key",), [(keys[q],)])
        gathered = gather(filtered, shards.load)
        candidates = positions([zip(gathered.rows(h.ties), h.scores.tolist(), strict=True) for h in filtered])[0]
        assert_exact_top(candidates, truth[row], top_m, own)
        ids = np.array([i for i, _ in candidates])
        cosines = vectors[ids] @ vectors[q]
        expected = ids[np.argsort(-cosines, kind="stable")][:top_n]
        assert [i for i, _ in got[row]] == list(expected)  # reranked by embedding, not by TF-IDF
        np.testing.assert_allclose([s for _, s in got[row]], vectors[expected] @ vectors[q], rtol=1e-5)
        assert not {i for i, _ in got[row]} & own


def test_the_rerank_decodes_a_batch_of_candidates_at_a_time_with_the_same_floats(monkeypatch):
    """A query shard's candidates' vectors are decoded ``PAIRS_AT_ONCE`` at a time (all of them do not fit a
    worker at the papers' size): the same floats as all of a query's at once."""
    rng = np.random.default_rng(4)
    texts = random_texts(rng, 400)
    keys = [f"t-{i // 2}" for i in range(len(texts))]
    vectors = unit(rng, len(texts))
    documents = text_documents(texts, keys)
    vectorizer, index, _ = collection(documents, _text, 5)
    queries = list(range(0, 400, 7))
    args = ([documents[q] for q in queries], vectors[queries], [keys[q] for q in queries], 60, 12)
    whole = related_texts(vectorizer, index, codes_of(vectors, 5), *args)
    monkeypatch.setattr(codes, "PAIRS_AT_ONCE", 7)
    assert related_texts(vectorizer, index, codes_of(vectors, 5), *args) == whole


def _overlap(found: list, exact: list) -> float:
    return np.mean([len({i for i, _ in a} & {i for i, _ in b}) / max(len(b), 1)
                    for a, b in zip(positions(found), positions(exact), strict=True)])


def test_compressed_codes_rerank_nearly_as_the_exact_vectors_and_flat_exactly():
    """UNIMO's rerank from compressed codes (``related_texts_rerank_codec``): Flat gives the stored vectors
    bit for bit; SQ8 (a byte a dimension) nearly the exact top; an 8-byte PQ of 32-d vectors less, but far
    above what a random pick of the candidates keeps."""
    rng = np.random.default_rng(8)
    texts = random_texts(rng, 2000)
    keys = [f"t-{i}" for i in range(len(texts))]
    centres = unit(rng, 20, 32)  # embeddings in clusters, as sentence embeddings are
    vectors = centres[rng.integers(0, 20, len(texts))] + 0.5 * unit(rng, len(texts), 32)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    documents = text_documents(texts, keys)
    vectorizer, index, _ = collection(documents, _text, 4)
    queries = list(range(0, 2000, 40))
    args = ([documents[q] for q in queries], vectors[queries], [keys[q] for q in queries], 200, 20)
    exact = related_texts(vectorizer, index, codes_of(vectors, 4), *args)
    flat = codes_of(vectors, 4)
    ties = np.array([(p << 32) | r for p in range(4) for r in range(500)])
    assert np.array_equal(flat.vectors(ties), vectors) and flat.meta == {"factory": "Flat", "dimension": 32,
                                                                          "code_size": 128}
    sq8 = _overlap(related_texts(vectorizer, index, codes_of(vectors, 4, "SQ8"), *args), exact)
    pq = _overlap(related_texts(vectorizer, index, codes_of(vectors, 4, "PQ8x4"), *args), exact)
    opq = _overlap(related_texts(vectorizer, index, codes_of(vectors, 4, "OPQ8,PQ8x4"), *args), exact)
    print(f"top-20 of 200 kept: SQ8 {sq8:.3f}, PQ8x4 {pq:.3f}, OPQ8,PQ8x4 {opq:.3f}")
    assert sq8 >= 0.9 and 0.2 < pq < sq8 and 0.2 < opq < sq8  # a random 20 of the 200 candidates: 0.1


def test_opq_codes_rotate_the_query_not_each_candidate_with_the_same_cosines():
    """OPQ's rotation R is applied to each query (R q) instead of its transpose to every candidate: the same
    cosines as decoding the candidates whole, to float32's rounding."""
    from retrieval.tfidf import row_dots

    rng = np.random.default_rng(9)
    vectors = unit(rng, 3000, 32)
    codes = codes_of(vectors, 3, "OPQ8,PQ8x4")
    assert len(codes.rotations) == 1 and codes.meta["code_size"] == 4
    ties = np.array([(p << 32) | r for p in range(3) for r in range(0, 1000, 7)])
    query_of = rng.integers(0, 10, len(ties))
    rows = codes.rows[codes.starts[ties >> 32] + (ties & 0xFFFFFFFF)]
    whole = row_dots(codes.whole.sa_decode(rows), vectors[query_of])
    np.testing.assert_allclose(codes.cosines(ties, query_of, vectors[:10]), whole, atol=1e-5)
    assert not codes_of(vectors, 3, "PQ8x4").rotations  # nothing to split off


def test_a_codec_that_cannot_encode_or_be_trained_is_a_clear_error():
    sample = unit(np.random.default_rng(0), 100, 32)
    with pytest.raises(ValueError, match="'HNSW32': not a FAISS codec"):
        make_codec("HNSW32", sample)
    with pytest.raises(ValueError, match="'PQ4' could not be trained on the collection's 100 sampled vectors"):
        make_codec("PQ4", sample)  # 256 centroids a sub-vector
    assert Codes.of("PQ4x4", [sample]).meta["code_size"] == 2


def test_vectors_of_another_model_are_a_clear_error_not_a_faiss_crash():
    """A collection shard or a query shard embedded by another model (another dimension) names itself."""
    from retrieval.codes import encode

    sample = unit(np.random.default_rng(0), 100, 32)
    codec = make_codec("SQ8", sample)
    with pytest.raises(ValueError, match="cc/00003: 16-d vectors, the related-texts collection's codes are 32-d"):
        encode(codec, sample[:, :16], "cc/00003")
    with pytest.raises(ValueError, match="the queries: 16-d vectors"):
        Codes.of("SQ8", [sample]).cosines(np.array([0, 1]), np.array([0, 0]), sample[:1, :16])


def test_related_texts_defaults_and_fewer_candidates_than_top_n():
    config = RetrieveConfig()
    assert (config.related_texts_candidates, config.related_texts_top_n) == (1000, 100)  # UNIMO App. A
    rng = np.random.default_rng(2)
    texts = ["a red ball on the sand", "a blue ball", "the red car", "green trees on a hill", "ball games"]
    vectors = unit(rng, len(texts))
    documents = text_documents(texts, list("abcde"))
    vectorizer, index, shards = collection(documents, _text, 2)
    found = related_texts(vectorizer, index, codes_of(vectors, 2), documents[:1], vectors[:1], ["a"],
                          config.related_texts_candidates, config.related_texts_top_n)
    (hits,) = positions(found)
    assert sorted(i for i, _ in hits) == [1, 2, 4]  # every text sharing a term (ball, red, sand), not itself
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)
    assert related_texts(vectorizer, index, codes_of(vectors, 2), [{"text": "the of and"}], vectors[:1],
                         ["z"]) == [[]]  # no term


def test_a_shard_without_queries_gives_no_links_not_a_crash():
    from pipelines.linkers import _stored_vectors

    empty = _stored_vectors([])  # np.array([]).reshape(0, -1) would raise
    assert empty.shape == (0, 0) and _stored_vectors([[1, 0], [0, 1]]).shape == (2, 2)
    vectors = _stored_vectors([[1, 0], [0, 1]])
    vectorizer, index, shards = collection(text_documents(["a red ball", "a blue tent"], ["a", "b"]), _text, 1)
    assert related_texts(vectorizer, index, codes_of(vectors), [], empty, []) == []
