"""Term-partitioned postings and the row store (retrieval/postings.py, retrieval/rowstore.py) against the scan
of every collection shard (``tfidf.search`` / ``tfidf.gather``): without a cap the same hits bit for bit and
tie for tie, with a cap only rows and score parts the capped lists hold; and the Beam build of a collection's
postings on real parquet tables, killed and resumed."""

import io
from functools import partial

import numpy as np
import pytest

from pipelines.runner import RunnerConfig
from pipelines.tfidf_collections import Collection, build
from retrieval import postings, rowstore
from retrieval.codes import Codes
from retrieval.postings import TopPostings, impact_order, in_memory, index_files, plan_buckets
from retrieval.tfidf import TfidfVectorizer, document_frequencies, gather, search, text_terms
from tests.retrieval.test_tfidf import _read_table, documents, sharded


def _text(document: dict) -> list[str]:
    return text_terms(document["text"])


def _both(docs: list[dict], parts: int, cap=None, dtype=np.float64, sorted_terms=True):
    """The vectorizer, the scanned shards and the postings index of ``docs`` in ``parts`` shards."""
    vectorizer = TfidfVectorizer(document_frequencies(docs, _text), _text, dtype=dtype, sorted_terms=sorted_terms)
    shards = sharded(vectorizer, docs, parts)
    return vectorizer, shards, in_memory(index_files(shards.shards, cap, len(vectorizer.vocabulary)))


@pytest.fixture
def small_parts(monkeypatch):
    """Buckets, reads, row batches and the slack small enough that a few hundred rows cross every boundary."""
    monkeypatch.setattr(postings, "BUCKET_ENTRIES", 40)
    monkeypatch.setattr(postings, "SEGMENT_ENTRIES", 400)
    monkeypatch.setattr(postings, "READ_GAP", 3)
    monkeypatch.setattr(postings, "SLACK", 1)
    monkeypatch.setattr(rowstore, "ROWS_PER_BATCH", 16)


@pytest.mark.parametrize("parts, dtype, sorted_terms, block_entries", [
    (1, np.float64, True, 1 << 18), (3, np.float64, True, 300), (7, np.float32, False, 50)])
def test_without_a_cap_the_hits_are_the_scans_bit_for_bit(small_parts, parts, dtype, sorted_terms, block_entries):
    docs = documents(400, seed=1)
    vectorizer, shards, index = _both(docs, parts, dtype=dtype, sorted_terms=sorted_terms)
    queries = docs[::7] + [{"key": "new", "text": "zebra"}, {"key": "k3", "text": "red red ball"}]
    matrix, keys = vectorizer.transform(queries), [q["key"] for q in queries]
    scanned = search(matrix, shards.each_shard(), 25, ("key",), [(k,) for k in keys], block_entries)
    found = index.search(matrix, 25, {"key": keys}, block_entries)
    assert [h.pairs() for h in found] == [h.pairs() for h in scanned]  # the same rows, scores and tie order
    assert sum(len(h.ties) for h in found) > 25 * len(queries) * 0.9 and not len(found[-2].ties)
    # the row store gives each hit's identity as the shard files do, across record batches
    assert index.gather(found).identities == gather(scanned, shards.load).identities


def test_a_sample_with_more_rows_than_the_slack_is_searched_again(small_parts):
    """Ten texts of the query's own sample outscore everything: the first top (k + 1) holds only them."""
    docs = [{"key": "own", "text": "red ball tent"} for _ in range(10)] + \
        [{"key": f"k{i}", "text": "red ball" if i % 2 else "ball sun"} for i in range(40)]
    vectorizer, shards, index = _both(docs, 3)
    query = vectorizer.transform([{"text": "red ball tent"}])
    found = index.search(query, 5, {"key": ["own"]})
    assert found[0].pairs() == search(query, shards.each_shard(), 5, ("key",), [("own",)])[0].pairs()
    assert [row["key"] for row in index.gather(found).rows(found[0].ties)] == ["k1", "k3", "k5", "k7", "k9"]


def test_rows_sharing_any_excluded_column_with_their_query_are_left_out_as_by_the_scan(small_parts):
    """Rewrite's negatives exclude by key and by words: a caption repeated on more images than the slack
    (its copies all score 1.0, first) is searched again until other rows fill the top."""
    docs = documents(300, seed=8) + [{"key": f"copy{i}", "text": "red ball tent"} for i in range(12)]
    for d in docs:
        d["words"] = " ".join(_text(d))
    vectorizer = _both(docs, 1)[0]
    shards = sharded(vectorizer, docs, 3, columns=("key", "text", "words"))
    index = in_memory(index_files(shards.shards, None, len(vectorizer.vocabulary)))
    queries = docs[::9] + [{"key": "copy0", "text": "red ball tent", "words": "red ball tent"}]
    matrix = vectorizer.transform(queries)
    exclude = {"key": [q["key"] for q in queries], "words": [q["words"] for q in queries]}
    found = index.search(matrix, 6, exclude, block_entries=200)
    scanned = search(matrix, shards.each_shard(), 6, ("key", "words"), list(zip(*exclude.values(), strict=True)), 200)
    assert [h.pairs() for h in found] == [h.pairs() for h in scanned]
    rows = index.gather(found).rows(found[-1].ties)
    assert len(rows) == 6 and all(row["words"] != "red ball tent" for row in rows)


def test_a_cap_keeps_each_terms_heaviest_rows_and_scores_only_what_it_keeps():
    docs = documents(600, seed=2)
    vectorizer, shards, exact = _both(docs, 4)
    cap = 12
    _, _, capped = _both(docs, 4, cap=cap)
    queries = docs[::5]
    matrix = vectorizer.transform(queries)
    full = exact.scored(matrix, 10_000)  # every row sharing a term, with its exact score
    dense = {}
    for q, hits in enumerate(full):
        dense.update({(q, t): s for t, s in hits.pairs()})
    inverted = np.vstack([shard.matrix.toarray() for shard in shards.shards]).T  # term -> row weights
    heaviest = [set(np.lexsort((np.arange(inverted.shape[1]), -row))[:cap].tolist()) for row in inverted]
    found, missed = capped.scored(matrix, 30), 0
    for q, hits in enumerate(found):
        terms = matrix[q].indices
        for tie, score in hits.pairs():
            row = int(tie & 0xFFFFFFFF) + sum(s.matrix.shape[0] for s in shards.shards[:tie >> 32])
            assert any(row in heaviest[t] for t in terms)  # reached through a term where it is among the cap
            assert score <= dense[(q, tie)] + 1e-12  # a part of its exact score
        missed += len(set(full[q].ties[:30].tolist()) - set(hits.ties.tolist()))
    assert missed  # the cap binds on this collection: the recall is below 1
    assert [h.pairs() for h in _both(docs, 4, cap=10_000)[2].scored(matrix, 30)] == \
        [h.pairs() for h in exact.scored(matrix, 30)]  # a cap above every list changes nothing


def test_a_query_shard_holds_one_segments_lists_at_a_time(small_parts):
    """An exact collection of 7 shards in segments of about 400 entries: the search reads its terms' lists one
    segment at a time, in collection order, each read holding only that segment's rows."""
    docs = documents(420, seed=5)
    vectorizer, shards, index = _both(docs, 7)
    plan = index.postings.plan
    assert plan.segments == -(-7 // plan.segment_shards) >= 3
    queries = vectorizer.transform(docs[::6])
    read, lists = [], index.postings.lists
    index.postings.lists = lambda terms, segment: read.append((segment, lists(terms, segment))) or read[-1][1]
    found = index.scored(queries, 20)
    assert [segment for segment, _ in read] == list(range(plan.segments))
    assert all(set((ties >> 32) // plan.segment_shards) <= {segment} for segment, (_, ties, _) in read)
    held = [len(ties) for _, (_, ties, _) in read]
    assert max(held) < sum(held) / 2 and sum(held) == sum(
        np.isin(shard.matrix.indices, queries.indices).sum() for shard in shards.shards)  # every entry, once
    assert [h.pairs() for h in found] == [h.pairs() for h in search(queries, shards.each_shard(), 20)]


class _Counted(io.BytesIO):
    """A row store file that counts the bytes read from it."""

    read_bytes = 0

    def read(self, *args):
        data = super().read(*args)
        _Counted.read_bytes += len(data)
        return data

    def readinto(self, buffer):
        done = super().readinto(buffer)
        _Counted.read_bytes += done
        return done


def test_a_gather_reads_the_columns_it_asks_for_not_the_texts_beside_them():
    """Identities read by the column (the exclusions' keys without the texts beside them): the same values as
    reading whole batches."""
    docs = documents(300, seed=2)
    vectorizer, shards, index = _both(docs, 3)
    for shard in shards.shards:
        shard.columns = {**shard.columns, "text": ["a long text " * 128] * shard.matrix.shape[0]}
    files = index_files(shards.shards, None, len(vectorizer.vocabulary))
    counted = postings.PostingsIndex(lambda name: io.BytesIO(files[name]),
                                     lambda position: _Counted(files[f"rows/{position:05d}"]))
    found = counted.search(vectorizer.transform(docs[::5]), 20, {"key": [d["key"] for d in docs[::5]]})
    _Counted.read_bytes = 0
    keys = counted.gather(found, ["key"])
    key_bytes = _Counted.read_bytes
    _Counted.read_bytes = 0
    whole = counted.gather(found)
    whole_bytes = _Counted.read_bytes
    assert keys.columns["key"] == whole.columns["key"] == in_memory(files).gather(found).columns["key"]
    assert set(keys.columns) == {"key"} and set(whole.columns) == {"key", "position", "text"}
    assert whole_bytes > 1536 * len(whole.ties) > 20 * key_bytes  # the keys' reads: a few bytes a row


def test_buckets_hold_at_most_their_entries_but_for_one_longer_term():
    first = plan_buckets(np.array([3, 3, 3, 9, 1, 1, 2]), cap=None, entries=6)
    assert first.tolist() == [0, 2, 3, 4]  # 3+3 | 3 | 9 (alone) | 1+1+2
    assert plan_buckets(np.array([3, 3, 3, 9, 1, 1, 2]), cap=2, entries=6).tolist() == [0, 3]  # 2+2+2 | 2+1+1+2


def test_the_combined_lists_do_not_depend_on_how_workers_merged():
    rng = np.random.default_rng(4)
    parts = [(rng.integers(0, 5, 30), np.arange(30) + 100 * i, rng.integers(1, 4, 30) / 4) for i in range(6)]
    combiner = TopPostings(cap=4, hold=25)
    one = combiner.extract_output(list(parts))
    split = [combiner.add_input(combiner.add_input([], parts[i]), parts[i + 3]) for i in range(3)]
    merged = combiner.extract_output(combiner.merge_accumulators(split[::-1]))
    for a, b in zip(one, merged, strict=True):
        np.testing.assert_array_equal(a, b)
    terms, ties, weights = impact_order(*(np.concatenate(c) for c in zip(*parts, strict=True)), None)
    assert np.bincount(one[0]).max() <= 4  # the cap per term
    # each term's kept entries are its heaviest, heaviest first, ties to the earlier row
    for term in range(5):
        kept = list(zip(-one[2][one[0] == term], one[1][one[0] == term], strict=True))
        everything = sorted(zip(-weights[terms == term], ties[terms == term], strict=True))
        assert kept == everything[:4]


def text_tables(table_root, parts: int = 3) -> list[dict]:
    """``parts`` parquet tables of 100 documents each (text and a 4-d vector) under ``table_root/src``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = documents(100 * parts, seed=5)
    rng = np.random.default_rng(6)
    for d in docs:
        d["vector"] = rng.normal(size=4).astype(np.float32).tolist()
    (table_root / "src").mkdir(parents=True, exist_ok=True)
    for shard in range(parts):
        pq.write_table(pa.Table.from_pylist(docs[shard * 100:(shard + 1) * 100]),
                       table_root / "src" / f"{shard:05d}.parquet")
    return docs


def text_collection(folder: str, table_root, cap=None, parts: int = 3, codec: str = "Flat") -> Collection:
    """The related-texts-like collection (postings, row store, rerank codes) of ``text_tables``."""
    return Collection(folder, tuple(("src", s) for s in range(parts)), partial(_read_table, str(table_root)),
                      text_terms, "text", ("key", "text"), vector="vector", postings=True, cap=cap, codec=codec)


@pytest.mark.parametrize("cap", [5, None])
def test_beam_build_of_a_collections_postings_resumes_and_equals_the_one_process_build(tmp_path, small_parts, cap):
    docs = text_tables(tmp_path / "tables")
    collection = text_collection(str(tmp_path / "tfidf"), tmp_path / "tables", cap)
    runner = RunnerConfig(workers=1)
    build(collection, runner)
    names = sorted(p.relative_to(tmp_path / "tfidf").as_posix() for p in (tmp_path / "tfidf").rglob("*") if p.is_file())
    first = {name: (tmp_path / "tfidf" / name).read_bytes() for name in names}
    assert "postings/plan.npz" in first and sum(n.endswith(".offsets.npy") for n in names) >= 3
    assert {"codes/codec.faiss", "codes/rows.bin", "codes/starts.npy", "codes/codes.json"} <= set(names)
    assert not [n for n in names if n.endswith(".codes")]  # the shards' parts, appended into rows.bin, removed
    # a build killed after some buckets: the plan (written last) is missing, a temporary is left
    (tmp_path / "tfidf" / "postings" / "plan.npz").unlink()
    parts = [n for n in names if n.startswith("postings/0") and not n.endswith(".offsets.npy")]
    segments = {n.split("/")[1][:5] for n in parts}
    assert len(segments) == 1 if cap else len(segments) > 1  # a capped collection is one segment
    (tmp_path / "tfidf" / parts[1]).unlink()
    (tmp_path / "tfidf" / f"{parts[2]}.tmp-x").write_bytes(b"half")
    for stale in ("buckets.npy", "00007.npy"):  # the layout before segments: rebuilt, not read
        (tmp_path / "tfidf" / "postings" / stale).write_bytes(b"old")
    (tmp_path / "tfidf" / "src" / "00001.codes").write_bytes(b"left by a build killed after codes.json")
    (tmp_path / "tfidf" / "codes" / "rows.bin.tmp-x").write_bytes(b"half")
    build(collection, runner)
    again = sorted(p.relative_to(tmp_path / "tfidf").as_posix() for p in (tmp_path / "tfidf").rglob("*") if p.is_file())
    assert again == names and all((tmp_path / "tfidf" / n).read_bytes() == first[n] for n in names)
    # the same search as an index built in one process from the same shards
    vectorizer, index = collection.vectorizer(), collection.index()
    queries = vectorizer.transform(docs[::11])
    keys = [d["key"] for d in docs[::11]]
    shards = list(collection.each_shard())
    for position, shard in enumerate(shards):  # the row store's identities, as the one-process build
        shard.columns = {"key": [d["key"] for d in docs[position * 100:(position + 1) * 100]],
                         "text": [d["text"] for d in docs[position * 100:(position + 1) * 100]]}
    alone = in_memory(index_files(shards, cap, len(vectorizer.vocabulary)))
    found = index.search(queries, 10, {"key": keys})
    assert [h.pairs() for h in found] == [h.pairs() for h in alone.search(queries, 10, {"key": keys})]
    assert index.gather(found).columns == alone.gather(found).columns
    # the codes: the vectors of every hit, as the one-process codes of the same shards
    vectors = [np.array([d["vector"] for d in docs[s * 100:(s + 1) * 100]], np.float32) for s in range(3)]
    ties = np.concatenate([h.ties for h in found])
    assert np.array_equal(collection.codes().vectors(ties), Codes.of("Flat", vectors).vectors(ties))
    expected = np.array([vectors[tie >> 32][tie & 0xFFFFFFFF] for tie in ties.tolist()])
    assert np.array_equal(collection.codes().vectors(ties), expected)


def test_a_codec_that_is_none_stops_the_build_before_its_pass_over_the_texts(tmp_path):
    text_tables(tmp_path / "tables")
    collection = text_collection(str(tmp_path / "tfidf"), tmp_path / "tables", codec="HNSW32")
    with pytest.raises(ValueError, match="rerank codec 'HNSW32': not a FAISS codec"):
        build(collection, RunnerConfig())
    assert not (tmp_path / "tfidf").exists()  # no frequencies, no shard file written


def test_sources_embedded_by_two_models_stop_the_build_naming_them(tmp_path):
    """Texts of one source embedded in 8 dimensions, the others' in 4: a clear error before any file is written,
    not numpy's concatenation error."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = text_tables(tmp_path / "tables")
    other = [{**d, "vector": [0.5] * 8} for d in docs[100:200]]
    pq.write_table(pa.Table.from_pylist(other), tmp_path / "tables" / "src" / "00001.parquet")
    with pytest.raises(ValueError, match=r"vectors differ in dimension \(4-d in src/\d, 8-d in src/1\): embed"):
        build(text_collection(str(tmp_path / "tfidf"), tmp_path / "tables"), RunnerConfig())
    assert not (tmp_path / "tfidf").exists()


def test_a_rerank_vector_without_postings_is_an_error():
    with pytest.raises(ValueError, match="a rerank vector \\('vector'\\) is kept as codes beside postings"):
        Collection("c", (), _read_table, text_terms, "text", ("key",), vector="vector")


def test_a_truncated_bucket_is_a_clear_error_not_short_lists(small_parts):
    docs = documents(200, seed=7)
    vectorizer, _, _ = _both(docs, 2)
    shards = sharded(vectorizer, docs, 2)
    files = index_files(shards.shards, None, len(vectorizer.vocabulary))
    name = max((n for n in files if n.startswith("postings/0") and not n.endswith("offsets.npy")),
               key=lambda n: len(files[n]))
    files[name] = files[name][:len(files[name]) // 2]
    with pytest.raises(ValueError, match=f"{name}: truncated postings"):
        in_memory(files).search(vectorizer.transform(docs), 5, {"key": [d["key"] for d in docs]})
