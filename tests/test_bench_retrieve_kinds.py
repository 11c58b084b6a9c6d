"""The retrieve split benchmark's configs: each asks for one job and keeps everything else, sources in order."""

from __future__ import annotations

import pytest
import yaml

from benchmarks.retrieve_kinds import JOBS, job_config
from schemas.config import load_config


def test_each_job_config_asks_retrieve_for_that_job_only(tmp_path):
    (tmp_path / "books").mkdir()
    (tmp_path / "cc").mkdir()
    (tmp_path / "cc" / "images").mkdir()
    (tmp_path / "cc" / "Train_GCC-training.tsv").write_text("a dog\thttp://example.com/1.jpg\n")
    config = tmp_path / "corpus.yaml"
    sources = {"cc": {"kind": "conceptual_captions", "root": "cc"}, "books": {"kind": "bookcorpus", "root": "books"}}
    config.write_text(yaml.safe_dump({
        "output": "corpus", "sources": sources,
        "retrieval": {"retrieve": {"weak_pairs": [{"name": "w", "images": ["cc"], "texts": ["books"]}]}}},
        sort_keys=False))
    for job in JOBS:
        path = job_config(str(config), job)
        assert path.endswith(f"retrieve-{job}.yaml")
        loaded = load_config(path)
        retrieve = loaded.retrieval.retrieve
        assert list(loaded.sources) == ["cc", "books"]  # a collection's order follows the sources'
        assert bool(retrieve.weak_pairs) == (job == "weak-pairs")
        assert (retrieve.related_images_queries is None) == (job == "related-images")
        assert (retrieve.related_texts_queries is None) == (job == "related-texts")


def test_a_missing_corpus_names_what_to_run_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `python -m benchmarks.scale"):
        job_config(str(tmp_path / "size-10" / "corpus.yaml"), "related-texts")


def test_recall_counts_the_references_links_found_and_entries_follow_the_cap(tmp_path):
    import pickle
    from collections import Counter

    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.retrieve_kinds import links, recall, scored_entries
    from retrieval.tfidf import DocumentFrequencies

    folder = tmp_path / "links" / "related-texts"
    (folder / "cc").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([
        {"query_key": "q", "query_text_index": 0, "key": k, "text_index": 0} for k in "abc"]
        + [{"query_key": "r", "query_text_index": 1, "key": "a", "text_index": 2}]), folder / "cc" / "00000.parquet")
    found = links(str(tmp_path), "related-texts")
    assert found == {("q", 0): {("a", 0), ("b", 0), ("c", 0)}, ("r", 1): {("a", 2)}}
    assert recall(found, found) == 1.0
    assert recall({("q", 0): {("a", 0)}}, found) == (1 / 3 + 0) / 2  # per query, then the mean
    stats = folder / "_stats" / "tfidf-x-all"
    stats.mkdir(parents=True)
    (stats / "frequencies.pkl").write_bytes(pickle.dumps(DocumentFrequencies(3, Counter({"a": 3, "b": 1}))))
    assert scored_entries(str(tmp_path), "related-texts", None) == (3 * 3 + 1 * 1, 3)
    assert scored_entries(str(tmp_path), "related-texts", 2) == (3 * 2 + 1 * 1, 3)
