"""The related-items benchmark's sides agree where they must: the scan and the exact postings find brute
force's top k, a small postings cap loses some of it, and every side is timed and measured."""

from __future__ import annotations

from collections import Counter

import numpy as np

from benchmarks.related import workload, zipf_documents


def test_exact_sides_find_brute_forces_top_and_a_small_cap_does_not(tmp_path):
    rng = np.random.default_rng(0)
    texts = zipf_documents(rng, 1500, 400, 8, 8, "w", stop=5)
    report = workload("texts", texts, texts[:20], 50, 1, 4, str(tmp_path), [None, 3])
    recall = report["recall@50"]
    assert recall["sharded scan (retrieval.tfidf, 4 shard files)"] == 1.0
    assert recall["postings (retrieval.postings, exact)"] == 1.0
    assert recall["postings (retrieval.postings, cap 3)"] < 0.9  # a term's 3 heaviest rows cannot fill a top 50
    assert set(report["queries_per_s"]) == set(report["build_s"]) == set(report["peak_mb"])
    assert len(report["ratio_to_brute_force"]) == 3 and all(r > 0 for r in report["ratio_to_brute_force"].values())
    documents_with = Counter(term for text in texts for term in set(text))  # an exact query scores its terms' lists
    scored = [sum(documents_with[term] for term in set(query)) for query in texts[:20]]
    assert report["exact_entries_per_query"] == round(np.mean(scored))
