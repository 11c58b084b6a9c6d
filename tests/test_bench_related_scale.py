"""The pure parts of the related-items scale benchmark: the config it runs, and recall against exact links
read back from real parquet tables."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from benchmarks.related_scale import links, recall, settings_config


def test_settings_config_asks_for_one_kind_of_related_items_with_the_cap(tmp_path):
    config = tmp_path / "corpus.yaml"
    config.write_text(yaml.safe_dump({"output": "corpus", "retrieval": {"retrieve": {"weak_pairs": [{"name": "w"}]},
                                                                        "embed": {"model": "m"}}}))
    for postings, name in ((None, "related-texts-exact.yaml"), (300, "related-texts-300.yaml")):
        path = settings_config(str(config), "related-texts", postings)
        written = yaml.safe_load(open(path))
        assert path.endswith(name)
        assert written["retrieval"]["retrieve"] == {"weak_pairs": [], "related_images_queries": [],
                                                    "related_texts_postings": postings}
        assert written["output"] == "corpus" and written["retrieval"]["embed"] == {"model": "m"}


def _table(folder, rows):
    folder.mkdir(parents=True)
    columns = ("query_source", "query_key", "query_text_index", "key", "source", "text_index", "score")
    pq.write_table(pa.table({c: [row[i] for row in rows] for i, c in enumerate(columns)}), folder / "00000.parquet")


def test_recall_is_the_share_of_exact_links_found_per_query(tmp_path):
    exact = [("cc", "a", 0, "x", "cc", 0, 0.9), ("cc", "a", 0, "y", "cc", 1, 0.5), ("cc", "a", 1, "x", "cc", 0, 0.7),
             ("cc", "b", 0, "z", "books", 0, 0.3)]
    capped = [("cc", "a", 0, "y", "cc", 1, 0.5), ("cc", "a", 1, "y", "cc", 1, 0.7),
              ("cc", "b", 0, "z", "books", 0, 0.3)]
    _table(tmp_path / "exact", exact)
    _table(tmp_path / "capped", capped)
    identity = ("key", "source", "text_index")
    truth = links(str(tmp_path / "exact"), identity)
    assert truth[("cc", "a", 0)] == {("x", "cc", 0): 0.9, ("y", "cc", 1): 0.5}
    # a/0 keeps y (1 of 2), a/1 has y for x (another row, by query: x is a/0's), tied at 0.7, b/0 keeps z
    assert recall(links(str(tmp_path / "capped"), identity), truth) == {"identity": 0.5, "with_ties": 0.75}
    assert recall(truth, truth) == {"identity": 1.0, "with_ties": 1.0}
    assert recall(truth, links(str(tmp_path / "missing"), identity)) is None
