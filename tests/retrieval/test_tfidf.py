"""The one TF-IDF and sparse top-k (retrieval/tfidf.py) against scikit-learn's TfidfVectorizer and against
itself unsharded: a collection in 1, 3 or 7 shards gives the same hits, bit for bit and tie for tie; and
the Beam build of a collection (pipelines/tfidf_collections.py) on real parquet tables, killed and resumed."""

import itertools
import os
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer as SklearnVectorizer

from pipelines import storage
from pipelines.runner import RunnerConfig
from pipelines.tfidf_collections import FREQUENCIES, Collection, build, remove_others
from retrieval.tfidf import (
    CollectionShard,
    DocumentFrequencyCombiner,
    ShardsInMemory,
    TfidfVectorizer,
    document_frequencies,
    gather,
    search,
    shard_bytes,
    shard_from_bytes,
    text_terms,
    words,
)

WORDS = "red blue green ball box tent tree car house sun kite sand grass sky road dog boat small big".split()


def _text(document: dict) -> list[str]:
    return text_terms(document["text"])


def documents(count: int, seed: int = 0) -> list[dict]:
    """Texts of 1-8 words, two per key; every 10th a copy of an earlier one under another key (exact ties)."""
    rng = np.random.default_rng(seed)
    out = [{"key": f"k{i // 2}", "text": " ".join(rng.choice(WORDS, size=rng.integers(1, 9)))} for i in range(count)]
    for i in range(10, count, 10):
        out[i]["text"] = out[i // 3]["text"]
    return out


def sharded(vectorizer, docs: list[dict], parts: int, columns=("key",)) -> ShardsInMemory:
    """``docs`` cut into ``parts`` shards, each through its file bytes: their ``columns`` and position."""
    matrix = vectorizer.transform(docs)
    bounds = np.linspace(0, len(docs), parts + 1).astype(int)
    return ShardsInMemory([shard_from_bytes(shard_bytes(CollectionShard(
        matrix[a:b], {**{name: [d[name] for d in docs[a:b]] for name in columns}, "position": list(range(a, b))})))
        for a, b in itertools.pairwise(bounds)])


@pytest.mark.parametrize("dtype, sorted_terms", [(np.float64, True), (np.float32, False)])
def test_vectorizer_is_scikit_learns_tfidf(dtype, sorted_terms):
    docs = documents(300)
    ours = TfidfVectorizer(document_frequencies(docs, _text), _text, dtype=dtype, sorted_terms=sorted_terms)
    theirs = SklearnVectorizer(analyzer=_text, dtype=dtype)
    expected = theirs.fit_transform(docs)
    assert ours.vocabulary == theirs.vocabulary_
    got = ours.transform(docs)
    assert got.dtype == dtype
    np.testing.assert_allclose(got.toarray(), expected.toarray(), rtol=1e-6 if dtype == np.float32 else 1e-12)
    unknown = ours.transform([{"text": "zebra"}, {"text": "the of"}])
    assert unknown.shape == (2, len(ours.vocabulary)) and unknown.nnz == 0


def test_document_frequencies_do_not_depend_on_how_workers_merged():
    docs = documents(90)
    combiner = DocumentFrequencyCombiner(_text)
    parts = []
    for part in range(3):
        accumulator = combiner.create_accumulator()
        for doc in docs[part::3]:
            combiner.add_input(accumulator, doc)
        parts.append(accumulator)
    merged = combiner.extract_output(combiner.merge_accumulators(parts[::-1]))
    assert merged == document_frequencies(docs, _text)
    assert merged.documents == 90 and merged.counts["ball"] == sum("ball" in _text(d) for d in docs)


def test_max_df_drops_the_collections_stop_words():
    docs = [{"text": f"a photo of {w}"} for w in ("dogs", "cats", "a dog")]
    vectorizer = TfidfVectorizer(document_frequencies(docs, lambda d: words(d["text"])), lambda d: words(d["text"]),
                                 max_df=0.5)
    assert set(vectorizer.vocabulary) == {"dogs", "cats", "dog"}


@pytest.mark.parametrize("dtype, sorted_terms", [(np.float64, True), (np.float32, False)])
def test_one_shard_or_many_give_the_same_hits_bit_for_bit(dtype, sorted_terms):
    docs = documents(400, seed=1)
    vectorizer = TfidfVectorizer(document_frequencies(docs, _text), _text, dtype=dtype, sorted_terms=sorted_terms)
    queries = docs[::9]
    matrix = vectorizer.transform(queries)
    groups = [(d["key"],) for d in queries]
    results = {}
    for parts in (1, 3, 7):
        shards = sharded(vectorizer, docs, parts)
        found = search(matrix, shards.each_shard(), 25, ("key",), groups, block_entries=300)
        gathered = gather(found, shards.load)
        results[parts] = [[(row["position"], score) for row, score in zip(gathered.rows(hits.ties),
                                                                           hits.scores.tolist(), strict=True)]
                          for hits in found]
    assert results[1] == results[3] == results[7]
    dense = vectorizer.transform(docs).toarray()
    scores = matrix.toarray() @ dense.T
    tied = 0
    for q, (query, hits) in enumerate(zip(queries, results[1], strict=True)):
        assert len(hits) == min(25, sum(s > 0 and d["key"] != query["key"] for s, d in zip(scores[q], docs,
                                                                                            strict=True)))
        assert all(docs[i]["key"] != query["key"] for i, _ in hits)  # its own sample is excluded
        np.testing.assert_allclose([s for _, s in hits], [scores[q, i] for i, _ in hits], rtol=1e-5)
        for (i, s), (j, t) in itertools.pairwise(hits):
            assert s > t or (s == t and i < j)  # best first, ties to the earlier row of the collection
            tied += s == t
    assert tied  # the copies tie exactly, across shards too



@pytest.mark.parametrize("parts, block_entries", [(1, 1 << 18), (3, 1 << 18), (7, 1 << 18), (7, 9)])
def test_hits_tied_at_a_full_tops_cut_go_to_the_earliest_rows(parts, block_entries):
    """Rows 0-29 tie for the second query; rows 30-59 tie higher for the first, so they enter tops already
    full of rows 0-29, and only the earliest of them (across shard boundaries) stay."""
    docs = [{"key": f"k{i}", "text": "red ball box" if i < 30 else "red ball"} for i in range(60)]
    vectorizer = TfidfVectorizer(document_frequencies(docs, _text), _text)
    queries = [{"key": "k31", "text": "ball red"}, {"key": "elsewhere", "text": "box ball red"}]
    shards = sharded(vectorizer, docs, parts)
    found = search(vectorizer.transform(queries), shards.each_shard(), 10, ("key",), [(q["key"],) for q in queries],
                   block_entries)
    gathered = gather(found, shards.load)
    assert [[row["position"] for row in gathered.rows(hits.ties)] for hits in found] == \
        [[30, *range(32, 41)], list(range(10))]
    assert [len(set(hits.scores.tolist())) for hits in found] == [1, 1]  # every hit ties with every other

def test_shard_file_keeps_strings_and_ints():
    from scipy import sparse

    shard = CollectionShard(sparse.csr_matrix(np.array([[0, 0.5], [1, 0], [0, 0]], dtype=np.float32)),
                            {"key": ["a", "ü-ß", ""], "text_index": [0, 2, 1]})
    back = shard_from_bytes(shard_bytes(shard))
    assert {name: list(values) for name, values in back.columns.items()} == shard.columns
    assert (back.matrix != shard.matrix).nnz == 0 and back.matrix.dtype == np.float32
    assert back.row(1) == {"key": "ü-ß", "text_index": 2}
    empty = shard_from_bytes(shard_bytes(CollectionShard(sparse.csr_matrix((0, 4)), {"key": []})))
    assert empty.matrix.shape == (0, 4) and list(empty.columns["key"]) == []
    with pytest.raises(ValueError, match="column 'key': 1 values for 3 rows"):
        CollectionShard(shard.matrix, {"key": ["a"]})


def _read_table(root: str, source: str, shard: int) -> list[dict]:
    return pq.read_table(os.path.join(root, source, f"{shard:05d}.parquet")).to_pylist()


def test_beam_build_writes_each_shard_once_and_a_killed_build_resumes_to_the_same_files(tmp_path):
    docs = documents(120, seed=2)
    tables = tmp_path / "tables"
    for i, part in enumerate(np.array_split(np.arange(len(docs)), 4)):
        (tables / "src").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([docs[j] for j in part]), tables / "src" / f"{i:05d}.parquet")
    folder = str(tmp_path / "stats" / "tfidf-1")
    collection = Collection(folder, tuple(("src", i) for i in range(4)), partial(_read_table, str(tables)), text_terms,
                            "text", ("key", "text"))
    build(collection, RunnerConfig())
    files = sorted(str(p.relative_to(folder)) for p in (tmp_path / "stats" / "tfidf-1").rglob("*") if p.is_file())
    assert files == [FREQUENCIES] + [f"src/{i:05d}.npz" for i in range(4)]
    first = {name: (tmp_path / "stats" / "tfidf-1" / name).read_bytes() for name in files}
    assert collection.vectorizer().transform(docs[:3]).shape == (3, len(document_frequencies(docs, _text).counts))

    os.remove(os.path.join(folder, "src", "00002.npz"))  # killed before this shard was renamed into place
    (tmp_path / "stats" / "tfidf-1" / "src" / "00001.npz.tmp-dead").write_bytes(b"partial")
    real_exists, asked = storage.exists, []
    with pytest.MonkeyPatch.context() as patch:  # issue 15: the shard files that exist from a listing of the folder
        patch.setattr(storage, "exists", lambda path: asked.append(path) or real_exists(path))
        build(collection, RunnerConfig())
    assert not [path for path in asked if path.endswith(".npz")]
    again = {name: (tmp_path / "stats" / "tfidf-1" / name).read_bytes() for name in files}
    assert again == first and not list((tmp_path / "stats" / "tfidf-1").rglob("*.tmp-*"))

    shards = [collection.load(i) for i in range(4)]
    assert [row for shard in shards for row in (shard.row(i) for i in range(shard.matrix.shape[0]))] == \
        [{"key": d["key"], "text": d["text"]} for d in docs]
    queries = docs[::7]
    whole = sharded(collection.vectorizer(), docs, 1)
    found = search(collection.vectorizer().transform(queries), collection.each_shard(), 10, ("key",),
                   [(d["key"],) for d in queries])
    expected = search(collection.vectorizer().transform(queries), whole.each_shard(), 10, ("key",),
                      [(d["key"],) for d in queries])
    by_row, by_position = gather(found, collection.load), gather(expected, whole.load)
    assert [[(row["key"], row["text"]) for row in by_row.rows(h.ties)] for h in found] == \
        [[(docs[row["position"]]["key"], docs[row["position"]]["text"]) for row in by_position.rows(h.ties)]
         for h in expected]
    assert [h.scores.tolist() for h in found] == [h.scores.tolist() for h in expected]

    newer = Collection(str(tmp_path / "stats" / "tfidf-2"), collection.shards[:1], collection.read, text_terms, "text",
                       ("key",))
    build(newer, RunnerConfig())
    remove_others(str(tmp_path / "stats"), newer.folder)  # a collection of an earlier state goes
    left = sorted(str(p.relative_to(tmp_path / "stats")) for p in (tmp_path / "stats").rglob("*"))
    assert left == ["tfidf-2", f"tfidf-2/{FREQUENCIES}", "tfidf-2/src", "tfidf-2/src/00000.npz"]  # no empty folder


@pytest.mark.parametrize("stored", [False, True])
def test_excluded_rows_are_every_row_sharing_a_query_value(stored):
    """Rows sharing a key or a text with a query, matched by Arrow over the stored column (or a list held in
    memory): the pairs a loop over every row finds, queries without a match and repeated values included."""
    from retrieval.tfidf import _excluded

    rng = np.random.default_rng(5)
    keys = [f"k{i}" for i in rng.integers(0, 30, size=200)]
    texts = [f"t{i}" for i in rng.integers(0, 10, size=200)]
    shard = CollectionShard(TfidfVectorizer(document_frequencies(documents(200), _text), _text).transform(
        documents(200)), {"key": keys, "text": texts})
    if stored:
        shard = shard_from_bytes(shard_bytes(shard))
    groups = [("k3", "t1"), ("k3", "t99"), ("absent", "t4"), ("k7", "t1")]
    queries, rows = _excluded(shard, ("key", "text"), groups)
    expected = {(q, i) for q, group in enumerate(groups) for i in range(200)
                if keys[i] == group[0] or texts[i] == group[1]}
    found = list(zip(queries.tolist(), rows.tolist(), strict=True))
    assert set(found) == expected and len(found) == sum(
        (keys[i] == g[0]) + (texts[i] == g[1]) for g in groups for i in range(200))  # each match once per column
    assert _excluded(shard, ("key",), [])[0].size == 0
    empty = shard_from_bytes(shard_bytes(CollectionShard(shard.matrix[:0], {"key": [], "text": []})))
    assert _excluded(empty, ("key", "text"), groups)[0].size == 0  # a shard without rows (an untyped column)


def test_a_top_below_one_is_refused():
    docs = documents(20)
    vectorizer = TfidfVectorizer(document_frequencies(docs, _text), _text)
    with pytest.raises(ValueError, match="top must be at least 1, got 0"):
        search(vectorizer.transform(docs[:2]), sharded(vectorizer, docs, 2).each_shard(), 0)
