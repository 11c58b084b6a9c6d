"""Config sections of the stages after ingest: ``annotate:`` (detect, parse, rewrite) and ``retrieval:``
(embed, index, retrieve, serve), as validated dataclasses (``schemas/config.py`` builds them).

Models always come from local paths. A path is checked when the stage that needs it starts, not when
the config is loaded (an ingest does not need a detector): ``require_model`` fails with what to put where.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from schemas.config_errors import ConfigError, choice, positive


def require_model(path: str | None, where: str, what: str) -> str:
    """``path`` if it exists; else a ConfigError saying which key, which path and what belongs there."""
    if not path:
        raise ConfigError(f"{where}: no model configured; {what}")
    if not os.path.exists(path):
        raise ConfigError(f"{where}: no such file or directory: {path}; {what}")
    return path


# --- annotate ----------------------------------------------------------------------------------------


@dataclass
class DetectConfig:
    """Object detection and tags (UNIMO §3.2: boxes with class confidence > 0.2, at most 100 per image)."""

    model: str | None = None  # ultralytics weights (.pt) or a model yaml (random weights: tests only)
    min_confidence: float = 0.2
    max_boxes: int = 100
    image_size: int = 640  # the detector's input side
    batch_size: int = 16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    sources: list[str] | None = None  # default: every source with images

    def validate(self, where: str) -> None:
        if not 0 <= self.min_confidence < 1:
            raise ConfigError(f"{where}.min_confidence: expected 0 <= x < 1, got {self.min_confidence}")
        for name in ("max_boxes", "image_size", "batch_size"):
            positive(getattr(self, name), f"{where}.{name}")


@dataclass
class ParseConfig:
    """spaCy noun phrases (mu-VLA §3.3.2) and scene graphs (UNIMO §2.1) of captions and sentences."""

    model: str = "en_core_web_sm"  # an installed spaCy package name or a local model folder
    batch_size: int = 256
    max_chars: int = 2000  # longer texts are rejects (overlong_text), not silently cut
    sources: list[str] | None = None  # default: every source with text

    def validate(self, where: str) -> None:
        positive(self.batch_size, f"{where}.batch_size")
        positive(self.max_chars, f"{where}.max_chars")


@dataclass
class TranslationPair:
    """One pivot of back-translation: source -> pivot and pivot -> source seq2seq models (local paths)."""

    pivot: str
    forward: str  # e.g. a Marian en->zh model folder
    backward: str  # e.g. a Marian zh->en model folder


@dataclass
class BackTranslationConfig:
    """Positives by back-translation through pivot languages (UNIMO §2.1: zh, fr, es)."""

    enabled: bool = True
    pivots: list[TranslationPair] = field(default_factory=list)
    batch_size: int = 32
    max_length: int = 128  # generation cap, tokens
    num_beams: int = 1
    device: str = "auto"


@dataclass
class SceneGraphNegativeConfig:
    """Phrase/word-level hard negatives: replace one scene-graph node, rank by fluency (UNIMO §2.1)."""

    enabled: bool = True
    top_n: int = 100  # kept rewrites per caption
    candidates_per_node: int = 10  # similar replacements tried per object, attribute or relation
    min_count: int = 1  # vocabulary entries seen fewer times are not used as replacements
    language_model: str | None = None  # a causal LM folder; default: an n-gram model of the corpus captions


@dataclass
class TfidfNegativeConfig:
    """Sentence-level hard negatives: the most similar captions of other images by TF-IDF (UNIMO §2.1)."""

    enabled: bool = True
    top_n: int = 100


@dataclass
class RewriteConfig:
    back_translation: BackTranslationConfig = field(default_factory=BackTranslationConfig)
    scene_graph: SceneGraphNegativeConfig = field(default_factory=SceneGraphNegativeConfig)
    tfidf: TfidfNegativeConfig = field(default_factory=TfidfNegativeConfig)
    sources: list[str] | None = None  # default: every source with captions (pairs)

    def validate(self, where: str) -> None:
        positive(self.back_translation.batch_size, f"{where}.back_translation.batch_size")
        positive(self.back_translation.max_length, f"{where}.back_translation.max_length")
        positive(self.scene_graph.top_n, f"{where}.scene_graph.top_n")
        positive(self.scene_graph.candidates_per_node, f"{where}.scene_graph.candidates_per_node")
        positive(self.tfidf.top_n, f"{where}.tfidf.top_n")


@dataclass
class AnnotateConfig:
    detect: DetectConfig = field(default_factory=DetectConfig)
    parse: ParseConfig = field(default_factory=ParseConfig)
    rewrite: RewriteConfig = field(default_factory=RewriteConfig)

    def validate(self, where: str) -> None:
        self.detect.validate(f"{where}.detect")
        self.parse.validate(f"{where}.parse")
        self.rewrite.validate(f"{where}.rewrite")


# --- retrieval ---------------------------------------------------------------------------------------


@dataclass
class EmbedConfig:
    """Sentence embeddings (mu-VLA §3.2: sentence-BERT for tag queries and candidate sentences)."""

    model: str | None = None  # a sentence-transformers model folder
    batch_size: int = 64
    device: str = "auto"
    sources: list[str] | None = None  # default: every source

    def validate(self, where: str) -> None:
        positive(self.batch_size, f"{where}.batch_size")


@dataclass
class IndexConfig:
    """How FAISS indexes are chosen and tuned."""

    memory_budget_mb: int = 4096  # the index must fit in this
    recall_target: float = 0.95  # recall@k against exact search on a held-out sample
    recall_k: int = 5
    flat_below: int = 100_000  # fewer vectors: exact (flat) search
    shard_size: int = 1_000_000  # vectors per build shard (merged afterwards)
    use_gpu: str = "auto"  # auto | never | always

    def validate(self, where: str) -> None:
        if not 0 < self.recall_target <= 1:
            raise ConfigError(f"{where}.recall_target: expected 0 < x <= 1, got {self.recall_target}")
        for name in ("memory_budget_mb", "recall_k", "flat_below", "shard_size"):
            positive(getattr(self, name), f"{where}.{name}")
        choice(self.use_gpu, ("auto", "never", "always"), f"{where}.use_gpu")


@dataclass
class WeakPairsConfig:
    """mu-VLA §3.2: an image's tag query retrieves the top K sentences (K = 5; ablation 1 < 5 > 10)."""

    name: str
    images: list[str]  # sources whose images are the queries
    texts: list[str]  # sources whose sentences are the candidates
    k: int = 5


@dataclass
class RetrieveConfig:
    weak_pairs: list[WeakPairsConfig] = field(default_factory=list)
    phrase_regions: bool = True  # mu-VLA §3.3.2: link each noun phrase of a retrieved sentence to a region
    related_images_top_n: int = 100  # UNIMO App. A
    related_texts_candidates: int = 1000  # TF-IDF top before the embedding rerank (UNIMO App. A)
    related_texts_top_n: int = 100

    def validate(self, where: str) -> None:
        names = [w.name for w in self.weak_pairs]
        for i, weak in enumerate(self.weak_pairs):
            if names.count(weak.name) > 1:
                raise ConfigError(f"{where}.weak_pairs[{i}].name: {weak.name!r} is not unique")
            positive(weak.k, f"{where}.weak_pairs[{i}].k")
        for name in ("related_images_top_n", "related_texts_candidates", "related_texts_top_n"):
            positive(getattr(self, name), f"{where}.{name}")


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None  # bearer token; none: open (loopback only by default)
    max_k: int = 1000


@dataclass
class RetrievalConfig:
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    retrieve: RetrieveConfig = field(default_factory=RetrieveConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def validate(self, where: str) -> None:
        self.embed.validate(f"{where}.embed")
        self.index.validate(f"{where}.index")
        self.retrieve.validate(f"{where}.retrieve")
