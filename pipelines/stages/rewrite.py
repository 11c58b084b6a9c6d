"""The rewrite stage (UNIMO §2.1, App. A "Data Augmentations"): for every caption of a pair sample,
positives by back-translation and hard negatives by scene-graph rewriting and by TF-IDF neighbours ->
``ann/rewrite/<source>/NNNNN.parquet`` (ANN_REWRITE, one row per rewrite).

Two passes. First the corpus statistics, each a Beam combine over all captions (or parses) of the
rewrite sources: TF-IDF document frequencies, the scene-graph vocabulary, the n-gram fluency model.
Each is written once to ``ann/rewrite/_stats/<name>-<digest>.pkl`` (the n-gram model: a folder of
per-bucket parts, ``ngram-<digest>/``, that workers memory-map), the digest naming what it was
computed from (every input shard's hash), so an unchanged corpus reuses them; the scene-graph nodes'
similar replacements are then filtered once with WordNet (``annotate.rewrite.scene_graph.wordnet``:
synonyms, hypernyms, hyponyms and inflections of a node are not negatives). Then the per-shard pass on
``run_sidecar_stage``: each worker loads the models and statistics once and rewrites shard by shard;
the corpus digest is part of every shard's parameters, so a changed corpus redoes them all. Each table's
footer counts the WordNet refusals at its captions' nodes (``wordnet_refused``), summed into corpus.json.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache, partial

import apache_beam as beam

from pipelines import storage
from pipelines.annotators.parse import Text, location, split_texts
from pipelines.raw_shard import read_footer
from pipelines.results import StageResult
from pipelines.runner import RunnerConfig, pipeline_options
from pipelines.sidecar_tables import (
    ShardInput,
    raw_params_hash,
    raw_shards,
    read_shard_input,
    read_sidecar,
    read_table_rows,
    removal_folders,
    sample_texts,
    table_path,
)
from pipelines.stages.per_shard import ShardAnnotator, applicable_sources, run_sidecar_stage
from pipelines.tfidf_collections import AsCombineFn, Collection, build, remove_others
from schemas import layout
from schemas.config import CorpusConfig
from schemas.config_build import output_params, require_path
from schemas.config_errors import ConfigError
from schemas.keys import shard_of
from schemas.records import Reason, Reject
from schemas.stages import EmbedConfig, RewriteConfig, TfidfNegativeConfig
from schemas.tables import ANN_REWRITE, PARAMS_KEY

STAGE = "rewrite"
FOLDER, PARSE_FOLDER = layout.ann(STAGE), layout.ann("parse")
METHODS = ("back_translation", "scene_graph", "tfidf")  # row order within a caption
_COLUMNS = ["key", "modality", "text", "json"]
_PAIR = frozenset({"pair"})
_WORDNET_RULES = 2  # the version of wordnet_filter's rules: a change refilters every corpus


# --- which captions ------------------------------------------------------------------------------------


def split_captions(shard: ShardInput, max_chars: int) -> tuple[list[Text], list[Reject]]:
    """The captions of the shard's pair samples: good ones, and rejects (empty, overlong) of the others."""
    return split_texts(shard, _PAIR, max_chars, "annotate.rewrite.max_chars")


def shard_captions(root: str, max_chars: int, source: str, shard: int) -> list[tuple[str, str, int, str]]:
    """(key, source, text_index, text) of the good captions of one raw shard."""
    good, _ = split_captions(read_shard_input(root, source, shard, _COLUMNS), max_chars)
    return [(c.key, source, c.index, c.text) for c in good]


def shard_parses(root: str, source: str, shard: int) -> list[dict]:
    """The ANN_PARSE rows of one shard, or a ValueError saying to run parse first."""
    return read_table_rows(table_path(root, PARSE_FOLDER, source, shard), missing=(
        "annotate.rewrite.scene_graph needs the parse tables: run `unicorpus annotate parse` first, or set "
        "annotate.rewrite.scene_graph.enabled: false"))


# --- corpus statistics: a Beam combine each, written once per corpus digest ---------------------------------


@dataclass(frozen=True)
class Statistic:
    """A corpus statistic: ``steps(input, base, shards)`` adds the Beam steps computing it from ``over``
    ("shards": (source, shard) of the corpus, "parses": their ANN_PARSE rows; ``shards``: how many) and
    writing it under ``base`` (``stats/<name>-<digest>``); ``done`` (after ``base``) exists once it is written."""

    name: str
    over: str
    steps: Callable[[beam.PCollection, str, int], None]
    done: str = ".pkl"


def statistics(root: str, config: RewriteConfig) -> list[Statistic]:
    """The statistics of the scene-graph method (the TF-IDF negatives' are their ``caption_collection``)."""
    from pipelines.annotators.ngram_lm import MODEL_FILE
    from pipelines.annotators.scene_graph_rewrite import VocabularyCombiner

    found = []
    if config.scene_graph.enabled:
        found.append(Statistic("vocabulary", "parses", partial(_combined, "vocabulary", VocabularyCombiner)))
        if not config.scene_graph.language_model:  # a causal LM replaces the corpus n-gram model
            found.append(Statistic("ngram", "shards", partial(_ngram_model, root, config.max_chars), f"/{MODEL_FILE}"))
    return found


def stat_path(root: str, name: str, digest: str, done: str = ".pkl") -> str:
    return storage.join(root, layout.stats(FOLDER), f"{name}-{digest}{done}")


def ngram_folder(root: str, digest: str) -> str:
    return stat_path(root, "ngram", digest, "")


def _combined(name: str, combiner: Callable[[], object], values: beam.PCollection, base: str, shards: int) -> None:
    """A statistic that is a CombineFn's output (``combiner`` has the four methods, and imports no Beam),
    pickled to ``<base>.pkl`` (one worker merges it, whatever ``shards``)."""
    (values
     | f"{name}/Combine" >> beam.CombineGlobally(AsCombineFn(combiner()))
     | f"{name}/Write" >> beam.Map(_write_stat, f"{base}.pkl"))


def _write_stat(value, path: str) -> None:
    storage.write_whole(path, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def load_stat(path: str):
    return pickle.loads(storage.read_bytes(path))


def corpus_digest(root: str, sources: list[str], config: RewriteConfig, stats: list[Statistic]) -> str:
    """What the statistics (and so every shard's negatives) depend on: every input shard's hash. Which removals
    and parses exist comes from one listing per folder, the footers are read ``storage.READ_THREADS`` at a time."""
    jobs = [(source, shard) for source in sources for shard in raw_shards(root, source)]
    over_parses = any(s.over == "parses" for s in stats)
    folders = [folder for source in sources for folder in removal_folders(root, source)]
    if over_parses:
        folders += [storage.join(root, PARSE_FOLDER, source) for source in sources]
    exists = partial(storage.listed, storage.names_in(folders))
    inputs: dict[str, dict[int, str]] = {source: {} for source in sources}
    for (source, shard), raw in zip(jobs, storage.read_all(lambda job: raw_params_hash(root, *job, exists), jobs),
                                    strict=True):
        inputs[source][shard] = raw
    parses = {}
    if over_parses:
        paths = [table_path(root, PARSE_FOLDER, source, shard) for source, shard in jobs]
        found = storage.read_all(lambda path: read_footer(path).get(PARAMS_KEY, b"").decode() if exists(path) else None,
                                 paths)
        parses = {f"{source}/{shard}": params for (source, shard), params in zip(jobs, found, strict=True)}
    blob = json.dumps({"raw": inputs, "parse": parses, "max_chars": config.max_chars,
                       "stats": [s.name for s in stats]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_statistics(root: str, sources: list[str], config: RewriteConfig, runner: RunnerConfig) -> str:
    """Compute the missing statistics in one Beam pipeline, and the caption collection of the TF-IDF
    negatives; the corpus digest they are filed under. Those of an earlier corpus (and temporaries) are removed."""
    stats = statistics(root, config)
    digest = corpus_digest(root, sources, config, stats)
    folder = storage.join(root, layout.stats(FOLDER))
    listed = [path for pattern in ("*", "ngram-*/*", "ngram-*/parts/*")
              for path in storage.glob(storage.join(folder, pattern))]
    storage.delete(_stale(listed, folder, digest))
    missing = [s for s in stats if not storage.exists(stat_path(root, s.name, digest, s.done))]
    if missing:
        _combine_statistics(root, sources, config, runner, digest, missing)
    captions = caption_collection(root, tuple(sources), config.max_chars, digest, config.tfidf)
    remove_others(folder, captions.folder if config.tfidf.enabled else None)
    if config.tfidf.enabled:
        build(captions, runner)
    return digest


def _stale(paths: list[str], folder: str, digest: str) -> list[str]:
    """Files of the statistics of another corpus, temporaries, the n-gram model as one pickle (before it was
    a folder), a v1 model's proof (its arrays are written again) and the parts of a finished one (a run killed
    before it removed them)."""
    from pipelines.annotators.ngram_lm import MODEL_FILE, OLD_MODEL_FILE, PARTS

    finished = storage.join(folder, f"ngram-{digest}", MODEL_FILE) in paths

    def current(path: str) -> bool:
        name, *inner = path[len(folder):].strip("/").split("/")
        return (f"-{digest}" in name and ".tmp-" not in path and name != f"ngram-{digest}.pkl"
                and inner != [OLD_MODEL_FILE] and not (finished and inner[:1] == [PARTS]))

    return [path for path in paths if not current(path)]


def _combine_statistics(root: str, sources: list[str], config: RewriteConfig, runner: RunnerConfig, digest: str,
                        missing: list[Statistic]) -> None:
    shards = [(source, shard) for source in sources for shard in raw_shards(root, source)]
    with beam.Pipeline(options=pipeline_options(runner)) as pipeline:
        spread = pipeline | "Shards" >> beam.Create(shards) | "Spread" >> beam.Reshuffle()
        inputs = {"shards": spread}
        if any(s.over == "parses" for s in missing):
            inputs["parses"] = spread | "Parses" >> beam.FlatMapTuple(partial(shard_parses, root))
        for stat in missing:
            stat.steps(inputs[stat.over], stat_path(root, stat.name, digest, ""), len(shards))


def shard_trigram_counts(root: str, max_chars: int, bits: int, source: str, shard: int) -> list:
    """(bucket, its counts) of one raw shard's good captions (``ngram_counts``)."""
    from pipelines.annotators.ngram_counts import count_texts

    texts = (caption[3] for caption in shard_captions(root, max_chars, source, shard))
    return list(count_texts(texts, bits).items())


def _ngram_model(root: str, max_chars: int, shards: beam.PCollection, folder: str, shard_count: int) -> None:
    """The fluency model (UNIMO App. A) in two keyed passes (``ngram_counts``): trigrams merged by context
    pair bucket, each bucket's arrays written by its worker, which passes its continuation bigrams on by
    middle-word bucket; those merged and written likewise; then one step appends the parts to the model's
    arrays. No step holds more than a bucket (a few hundred thousand trigrams, whatever the corpus: the
    buckets grow with it) or a number a word."""
    from pipelines.annotators.ngram_counts import (
        BigramShare,
        BucketCounts,
        Summing,
        UnigramTotals,
        bigram_part,
        bits_for,
        trigram_part,
        vocabulary_of,
    )
    from pipelines.annotators.ngram_lm import DISCOUNT, write_model, write_part

    bits = bits_for(shard_count)

    def pairs(bucket_counts, vocabulary):
        bucket, counts = bucket_counts
        part, shares = trigram_part(counts, vocabulary, bucket, bits)
        write_part(folder, bucket, part)
        return list(shares.items())

    def bigrams(middle_share, vocabulary):
        middle, share = middle_share
        part = bigram_part(share, vocabulary, middle, bits)
        write_part(folder, middle, part)
        return UnigramTotals().add(middle, part.unigram_ids, part.unigram_cont, share.trigram_buckets)

    counts = (shards
              | "ngram/Count" >> beam.FlatMapTuple(partial(shard_trigram_counts, root, max_chars, bits))
              | "ngram/Merge" >> beam.CombinePerKey(AsCombineFn(Summing(BucketCounts))))
    vocabulary = beam.pvalue.AsSingleton(
        counts
        | "ngram/Words" >> beam.MapTuple(lambda _, bucket: bucket.word_hashes())
        | "ngram/AllWords" >> beam.combiners.ToList()
        | "ngram/Vocabulary" >> beam.Map(vocabulary_of))
    (counts
     | "ngram/Pairs" >> beam.FlatMap(pairs, vocabulary)
     | "ngram/MergeBigrams" >> beam.CombinePerKey(AsCombineFn(Summing(BigramShare)))
     | "ngram/Bigrams" >> beam.Map(bigrams, vocabulary)
     | "ngram/Totals" >> beam.CombineGlobally(AsCombineFn(Summing(UnigramTotals)))
     | "ngram/Model" >> beam.Map(lambda totals, vocabulary: write_model(folder, vocabulary, totals, DISCOUNT, bits),
                                 vocabulary))


def similar_name(config: RewriteConfig, encoder: str | None) -> str:
    """The similar-nodes statistic is named by what it depends on besides the vocabulary."""
    sg = config.scene_graph
    wordnet = sg.wordnet.enabled and [sg.wordnet.max_depth, sg.wordnet.min_sense_share, _WORDNET_RULES]
    blob = json.dumps([encoder, sg.candidates_per_node, sg.min_count, wordnet])
    return "similar-" + hashlib.sha256(blob.encode()).hexdigest()[:8]


def build_similar_nodes(root: str, digest: str, config: RewriteConfig, encoder: EmbedConfig,
                        nltk_data: str | None = None) -> None:
    """Each vocabulary entry's most similar entries of its kind, embedded once for the whole corpus here,
    not once per worker (a Visual Genome vocabulary is about 100k entries: minutes of embedding), less
    those WordNet relates to the entry (twice as many neighbours are looked at, to keep
    ``candidates_per_node`` after the refusals)."""
    from pipelines.annotators.scene_graph_rewrite import SimilarNodes, build_similar, refuse_related
    from retrieval.embed import Embedder

    path = stat_path(root, similar_name(config, encoder.model), digest)
    if storage.exists(path):
        return
    sg = config.scene_graph
    encode = Embedder(encoder.model, encoder.device, where="retrieval.embed.model").encode
    vocabulary = load_stat(stat_path(root, "vocabulary", digest))
    if sg.wordnet.enabled:
        from pipelines.annotators.wordnet_filter import WordNetFilter
        from pipelines.nltk_data import data_dir, wordnet

        wide = build_similar(vocabulary, encode, sg, per_node=2 * sg.candidates_per_node)
        refuse = WordNetFilter(wordnet(data_dir(nltk_data)), sg.wordnet).refusal
        nodes = refuse_related(wide, refuse, sg.candidates_per_node)
    else:
        nodes = SimilarNodes(build_similar(vocabulary, encode, sg), {})
    _write_stat(nodes, path)


# --- the per-shard pass ------------------------------------------------------------------------------------


class RewriteAnnotator(ShardAnnotator):
    stage = STAGE
    folder = FOLDER
    schema = ANN_REWRITE
    modalities = _PAIR
    columns = _COLUMNS

    def __init__(self, config: RewriteConfig, root: str, sources: list[str], digest: str,
                 encoder: str | None = None):
        self.config, self.root, self.sources, self.digest, self.encoder = config, root, sources, digest, encoder
        self.pivots: list = []
        self.captions = None  # the caption collection and its vectorizer
        self.rewriter = None
        self.refusals: dict[str, int] = {}  # of the shard just annotated

    def params(self) -> dict:
        params = {**output_params(self.config), "corpus": self.digest}
        if self.config.scene_graph.enabled:
            params |= {"encoder": self.encoder, "wordnet_rules": _WORDNET_RULES}
        return params

    def setup(self) -> None:
        c = self.config
        if c.back_translation.enabled:
            self.pivots = load_pivots(c.back_translation)
        if c.tfidf.enabled:
            self.captions = _opened(caption_collection(self.root, tuple(self.sources), c.max_chars, self.digest,
                                                       c.tfidf))
        if c.scene_graph.enabled:
            from pipelines.annotators.scene_graph_rewrite import SceneGraphRewriter

            nodes = load_stat(stat_path(self.root, similar_name(c, self.encoder), self.digest))
            if c.scene_graph.language_model:
                from pipelines.annotators.causal_lm import CausalLMScorer

                lm = CausalLMScorer(c.scene_graph.language_model, c.back_translation.device)
            else:
                from pipelines.annotators.ngram_lm import NgramLM

                lm = NgramLM.load(ngram_folder(self.root, self.digest))
            self.rewriter = SceneGraphRewriter(nodes.similar, lm, c.scene_graph, nodes.refused)

    def annotate(self, shard: ShardInput) -> tuple[list[dict], list[Reject], int]:
        captions, rejects = split_captions(shard, self.config.max_chars)
        units = len(captions) + len(rejects)
        rows = self._back_translations(shard.source, captions) + self._tfidf(shard.source, captions)
        rows += self._scene_graph(shard, captions)
        done = {(row["key"], row["text_index"]) for row in rows}
        rejects += [Reject(shard.source, location(c), Reason.NO_REWRITE, self._why_none(), c.key)
                    for c in captions if (c.key, c.index) not in done]
        rows.sort(key=lambda row: (row["key"], row["text_index"], METHODS.index(row["method"])))  # stable: ranks kept
        return rows, rejects, units

    def table_metadata(self) -> dict[bytes, bytes]:
        """The shard's WordNet refusals by reason (``annotate`` just ran on it), when the filter is on."""
        if not (self.config.scene_graph.enabled and self.config.scene_graph.wordnet.enabled):
            return {}
        return {REFUSED_KEY: json.dumps(self.refusals, sort_keys=True).encode()}

    def extra_counts(self, footer: dict[bytes, bytes]) -> dict:
        """``wordnet_refused``: replacements refused at the shard's caption nodes, by reason."""
        if not (self.config.scene_graph.enabled and self.config.scene_graph.wordnet.enabled):
            return {}
        return {"wordnet_refused": summed_refusals([footer])}

    def accounted(self, rows: list[dict], rejects: list[Reject]) -> int:
        return len({(row["key"], row["text_index"]) for row in rows}) + len(rejects)

    def _back_translations(self, source: str, captions: list[Text]) -> list[dict]:
        if not self.pivots:
            return []
        from pipelines.annotators.backtranslate import back_translate

        bt = self.config.back_translation
        found = back_translate(self.pivots, [c.text for c in captions], bt.batch_size, bt.max_length, bt.num_beams)
        return [_row(c, source, "positive", "back_translation", text, None, detail)
                for c, rewrites in zip(captions, found, strict=True) for text, detail in rewrites]

    def _tfidf(self, source: str, captions: list[Text]) -> list[dict]:
        if self.captions is None:
            return []
        index, vectorizer = self.captions
        documents = [caption_document(c.key, source, c.index, c.text) for c in captions]
        found = tfidf_negatives(vectorizer, index, documents, self.config.tfidf.top_n)
        return [_row(c, source, "hard_negative", "tfidf", other["text"], score,
                     json.dumps({name: other[name] for name in ("key", "source", "text_index")}))
                for c, hits in zip(captions, found, strict=True) for other, score in hits]

    def _scene_graph(self, shard: ShardInput, captions: list[Text]) -> list[dict]:
        if self.rewriter is None:
            return []
        parses = {(row["key"], row["text_index"]): row for row in shard_parses(self.root, shard.source, shard.shard)}
        self.rewriter.refusals.clear()
        rows = [
            row for c in captions if (c.key, c.index) in parses for row in self.rewriter.rewrite(parses[c.key, c.index])
        ]
        self.refusals = dict(sorted(self.rewriter.refusals.items()))
        return rows

    def _why_none(self) -> str:
        c = self.config
        why = [reason for enabled, reason in (
            (c.back_translation.enabled, "back_translation: every output empty or the caption again"),
            (c.scene_graph.enabled, "scene_graph: no parsed node with a similar vocabulary entry"),
            (c.tfidf.enabled, "tfidf: no caption of another image shares a weighted term")) if enabled]
        return "; ".join(why) or "every method is disabled"


def _row(caption: Text, source: str, kind: str, method: str, text: str, score: float | None, detail: str) -> dict:
    return {"key": caption.key, "source": source, "text_index": caption.index, "kind": kind, "method": method,
            "text": text, "score": score, "detail": detail}


REFUSED_KEY = b"wordnet_refused"  # table footer: {reason: replacements refused at the shard's caption nodes}


def summed_refusals(footers: list[dict[bytes, bytes]]) -> dict[str, int]:
    """The WordNet refusals of several tables' footers, by reason (every reason, zero included)."""
    from pipelines.annotators.wordnet_filter import REASONS

    total = dict.fromkeys(REASONS, 0)
    for footer in footers:
        for reason, count in json.loads(footer.get(REFUSED_KEY, b"{}")).items():
            total[reason] = total.get(reason, 0) + count
    return total


def check_models(config: CorpusConfig) -> None:
    """Fail before any pipeline starts when a configured method has no model."""
    section = config.annotate.rewrite
    bt = section.back_translation
    where = "annotate.rewrite.back_translation"
    if bt.enabled and not bt.pivots:
        raise ConfigError(f"{where}.pivots: none configured; give pivot languages (UNIMO: zh, fr, es) with "
                          f"forward and backward model folders, or set {where}.enabled: false")
    for i, pair in enumerate(bt.pivots if bt.enabled else ()):
        require_path(pair, "forward", f"{where}.pivots[{i}]")
        require_path(pair, "backward", f"{where}.pivots[{i}]")
    if section.scene_graph.enabled:
        require_path(config.retrieval.embed, "model", "retrieval.embed", "the encoder of similar scene-graph nodes; "
                     "or set annotate.rewrite.scene_graph.enabled: false")
        if section.scene_graph.wordnet.enabled:
            from pipelines.nltk_data import WORDNET, data_dir, require

            require(data_dir(config.text.nltk_data), WORDNET, "annotate.rewrite.scene_graph.wordnet",
                    "the synonym filter (or set its enabled: false)")
        if section.scene_graph.language_model:
            require_path(section.scene_graph, "language_model", "annotate.rewrite.scene_graph")


def load_pivots(config) -> list:
    """The configured pivots' translators (``BackTranslationConfig``), each model loaded once per process."""
    from pipelines.annotators.backtranslate import Pivot

    return [Pivot(p.pivot, _translator(p.forward, config.device, config.source_code, p.code),
                  _translator(p.backward, config.device, p.code, config.source_code)) for p in config.pivots]


@lru_cache(maxsize=16)
def _translator(path: str, device: str, source_code: str | None, target_code: str | None):
    """Cached per process: the stage runs one pipeline per source, and a worker process serves several."""
    from pipelines.annotators.backtranslate import Translator

    return Translator(path, device, source_code, target_code)


def caption_document(key: str, source: str, text_index: int, text: str) -> dict:
    """A caption as the TF-IDF collection holds it: ``words`` (its words, joined) excludes captions of the same
    words from its negatives."""
    from retrieval.tfidf import words

    return {"key": key, "source": source, "text_index": text_index, "text": text, "words": " ".join(words(text))}


def tfidf_negatives(vectorizer, index, documents: list[dict], top_n: int,
                    block_entries: int | None = None) -> list[list[tuple[dict, float]]]:
    """UNIMO App. A: per caption (a ``caption_document``), the ``top_n`` captions of other images most similar
    by TF-IDF cosine, best first, never one of the same words; ``index``: the ``caption_collection``'s
    postings (``retrieval.postings.PostingsIndex``), so a shard reads its own captions' terms, not the corpus."""
    from retrieval.tfidf import BLOCK_ENTRIES

    exclude = {"key": [d["key"] for d in documents], "words": [d["words"] for d in documents]}
    found = index.search(vectorizer.transform(documents), top_n, exclude, block_entries or BLOCK_ENTRIES)
    gathered = index.gather(found, ["key", "source", "text_index", "text"])  # the words served the exclusion
    return [list(zip(gathered.rows(hits.ties), hits.scores.tolist(), strict=True)) for hits in found]


def caption_documents(root: str, max_chars: int, source: str, shard: int) -> list[dict]:
    return [caption_document(*caption) for caption in shard_captions(root, max_chars, source, shard)]


def caption_collection(root: str, sources: tuple[str, ...], max_chars: int, digest: str,
                       config: TfidfNegativeConfig) -> Collection:
    """Every caption of the corpus (``digest`` names its state) as a sharded TF-IDF collection searched through
    its postings: one matrix and row store per raw shard under ``_stats/tfidf-<digest>-<max_df>-<all|capN>/``.
    Float32 and terms in order of first appearance: the negatives' stored cosines stay what they were."""
    from retrieval.tfidf import words

    shards = tuple((source, shard) for source in sources for shard in raw_shards(root, source))
    cap = "all" if config.postings_cap is None else f"cap{config.postings_cap}"
    return Collection(storage.join(root, layout.stats(FOLDER), f"tfidf-{digest}-{config.max_df:g}-{cap}"), shards,
                      partial(caption_documents, root, max_chars), words, "text",
                      ("key", "source", "text_index", "text", "words"), max_df=config.max_df, dtype="float32",
                      sorted_terms=False, postings=True, cap=config.postings_cap)


@lru_cache(maxsize=1)
def _opened(collection: Collection):
    """The collection's postings index and its vectorizer, once per process (the vocabulary, never the
    captions)."""
    return collection.index(), collection.vectorizer()


def run_rewrite(config: CorpusConfig, sources: list[str] | None, runner: RunnerConfig, overwrite: bool = False,
                show_progress: bool = True) -> list[StageResult]:
    """Rewrite the captions of ``sources`` (default: the corpus, ``annotate.rewrite.sources``, else every
    source with pair samples): the corpus statistics first, then every shard of ``sources``."""
    check_models(config)
    section, root = config.annotate.rewrite, config.output
    storage.configure(pipeline_options(runner))
    probe = RewriteAnnotator(section, root, [], "")
    corpus = applicable_sources(config, probe, section.sources)  # negatives come from all of it, always
    names = applicable_sources(config, probe, sources) if sources else corpus
    corpus += [name for name in names if name not in corpus]
    if not names:
        return []
    digest = build_statistics(root, corpus, section, runner)
    if section.scene_graph.enabled:
        build_similar_nodes(root, digest, section, config.retrieval.embed, config.text.nltk_data)
    factory = partial(RewriteAnnotator, section, root, corpus, digest, config.retrieval.embed.model)
    return run_sidecar_stage(config, factory, names, runner, overwrite, show_progress)


def example_rewrites(config: CorpusConfig, per_method: int = 2) -> dict | None:
    """One caption's rewrites to show: the first caption (by key) that every method rewrote, with its best
    ``per_method`` rewrites of each method; None before the stage has run."""
    return next(iter_example_rewrites(config, per_method), None)


def iter_example_rewrites(config: CorpusConfig, per_method: int = 2) -> Iterator[dict]:
    """Every caption that every method rewrote (by source, then key), as ``example_rewrites`` shows one."""
    for source in config.annotate.rewrite.sources or config.sources:
        by_caption: dict[tuple[str, int], list[dict]] = {}
        for row in read_sidecar(config.output, FOLDER, source, ["key", "text_index", "method", "text", "score"]):
            by_caption.setdefault((row["key"], row["text_index"]), []).append(row)
        for (key, text_index), rows in sorted(by_caption.items()):
            methods = sorted({row["method"] for row in rows})
            if len(methods) == 3:
                shard = read_shard_input(config.output, source, shard_of(key, config.sources[source].shards))
                sample = next((row for row in shard.rows if row["key"] == key), None)
                if sample is None:  # removed by a clean after this table was made: not shown
                    continue
                yield {"key": key, "caption": dict(sample_texts(sample))[text_index],
                       "rewrites": [(row["method"], row["score"], row["text"]) for method in methods
                                    for row in [r for r in rows if r["method"] == method][:per_method]]}


def wordnet_refusals(config: CorpusConfig) -> dict[str, dict[str, int]]:
    """Per source, the WordNet refusals corpus.json records for the last rewrite run (none when off)."""
    from pipelines.manifest_io import read_manifest

    entries = read_manifest(config.output)["stages"].get(STAGE, {})
    return {name: entry["counts"]["wordnet_refused"] for name, entry in sorted(entries.items())
            if "wordnet_refused" in entry.get("counts", {})}


def example_text(config: CorpusConfig) -> str:
    """What ``unicorpus annotate rewrite`` shows after its summary: the WordNet refusals, an example."""
    from pipelines.summary import format_example_rewrites, format_refusals

    return format_refusals(wordnet_refusals(config)) + format_example_rewrites(example_rewrites(config))
