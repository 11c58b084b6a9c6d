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
