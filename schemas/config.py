"""The corpus config: YAML in, validated dataclasses out.

Every error names the offending key by its dotted path (``sources.coco.shards``), says what was
expected, and for paths which file is missing, so a user fixes the config in one go.

Paths of a source are relative to its ``root`` (and ``root`` to the config file), with defaults that
match the public releases' own layout (FORMATS.md), so a typical source needs only ``kind`` and ``root``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from schemas.config_build import build, check_keys, marked_values, path_field
from schemas.config_errors import ConfigError
from schemas.config_errors import positive as _positive
from schemas.stages import AnnotateConfig, PackConfig, RetrievalConfig

NAME_PATTERN = re.compile(r"^[a-z0-9_-]+$")
TagOrigin = Literal["detector", "annotations", "both"]  # a source's tags: its detector, its ground truth, or both


@dataclass
class ImageConfig:
    """How images are stored. ``keep`` keeps the original bytes when no pixel had to change."""

    max_side: int | None = None  # resize so the longest side is at most this (keeps aspect)
    encode: Literal["keep", "jpeg", "png"] = "keep"
    jpeg_quality: int = 95
    max_pixels: int = 89_478_485  # larger images are too_large rejects, refused before decoding (PIL's own limit)

    def validate(self, where: str) -> None:
        _positive(self.max_side, f"{where}.max_side")
        _positive(self.max_pixels, f"{where}.max_pixels")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"{where}.jpeg_quality: expected 1..100, got {self.jpeg_quality}")


@dataclass
class TextConfig:
    """How documents become text samples: one sentence each, or whole sentences up to ``max_tokens``."""

    pack: Literal["sentence", "tokens"] = "sentence"
    max_tokens: int = 128  # whitespace tokens per sample when pack == "tokens"
    splitter: Literal["punkt", "rules"] = "punkt"  # how prose (books, Wikipedia, web pages) is cut into sentences
    # NLTK data folder (punkt, WordNet); default $NLTK_DATA, else .nltk_data/. Where, not what: not in ingest's hash
    nltk_data: str | None = path_field(None, output=False)

    def validate(self, where: str) -> None:
        _positive(self.max_tokens, f"{where}.max_tokens")


@dataclass
class DownloadConfig:
    """Fetching images of URL-list sources (CC, SBU, OpenImages with ``images: null``), img2dataset-style."""

    threads: int = 16  # concurrent requests per worker
    timeout_s: float = 10.0  # per request: connect, and the whole body
    retries: int = 2  # extra attempts after a connection error, timeout, truncated body, 429 or 5xx
    backoff_s: float = 0.5  # first wait before a retry; doubles each time
    max_bytes: int = 20_000_000  # larger bodies are refused as too_large
    user_agent: str = "unicorpus/0.1 (+https://github.com/unicorpus)"

    def validate(self, where: str) -> None:
        _positive(self.threads, f"{where}.threads")
        _positive(self.max_bytes, f"{where}.max_bytes")
        if self.timeout_s <= 0 or self.backoff_s < 0 or self.retries < 0:
            raise ConfigError(f"{where}: timeout_s must be > 0, backoff_s and retries >= 0")


@dataclass
class EvalSetConfig:
    """An evaluation split whose images must not enter pre-training (UNITER §3.3)."""

    name: str
    path: str = path_field()  # Karpathy dataset_*.json, VQA questions json, RefCOCO refs(*).p, or a list of ids/URLs
    images: str | None = path_field(None)  # optional folder of the eval images, for near-duplicate matching


@dataclass
class CleanConfig:
    """Deduplication and decontamination after ingest."""

    near_duplicate_distance: int = 4  # pHash Hamming distance for near-duplicate images
    eval_sets: list[EvalSetConfig] = field(default_factory=list)

    def validate(self, where: str) -> None:
        if not 0 <= self.near_duplicate_distance <= 16:
            raise ConfigError(f"{where}.near_duplicate_distance: expected 0..16, got {self.near_duplicate_distance}")
        names = [e.name for e in self.eval_sets]
        for i, eval_set in enumerate(self.eval_sets):
            if not NAME_PATTERN.match(eval_set.name) or names.count(eval_set.name) > 1:
                raise ConfigError(f"{where}.eval_sets[{i}].name: {eval_set.name!r} must be unique, a-z 0-9 _ -")
            for attribute in ("path", "images"):
                path = getattr(eval_set, attribute)
                if path is not None and not os.path.exists(path):
                    raise ConfigError(f"{where}.eval_sets[{i}].{attribute}: no such file or directory: {path}")


@dataclass
class PseudoPairConfig:
    """UNIMO-2 §4: an image's class labels become a caption through prompt templates."""

    enabled: bool = False
    templates: list[str] = field(default_factory=lambda: ["a photo of {label}."])
    max_labels: int = 3

    def validate(self, where: str) -> None:
        if not self.templates:
            raise ConfigError(f"{where}.templates: expected at least one template")
        for i, template in enumerate(self.templates):
            if "{label}" not in template:
                raise ConfigError(f"{where}.templates[{i}]: {template!r} has no {{label}} placeholder")
        _positive(self.max_labels, f"{where}.max_labels")


@dataclass
class SourceConfig:
    """Fields every source has. Subclasses list their path fields in ``paths`` (checked to exist)."""

    kind: ClassVar[str] = ""
    paths: ClassVar[tuple[str, ...]] = ()
    annotation_field: ClassVar[str] = ""  # the field naming ground-truth boxes, for sources with ``tags``
    root: str = path_field()
    shards: int = 8

    def validate(self, where: str) -> None:
        _positive(self.shards, f"{where}.shards")
        tags = getattr(self, "tags", "detector")
        if tags != "detector" and getattr(self, self.annotation_field) is None:
            raise ConfigError(f"{where}.tags: {tags!r} needs {where}.{self.annotation_field} (the ground-truth boxes)")
        if not os.path.isdir(self.root):
            raise ConfigError(f"{where}.root: no such directory: {self.root}")
        for name in self.paths:
            value = getattr(self, name)
            if value is not None and not os.path.exists(self.path(value)):
                raise ConfigError(f"{where}.{name}: no such file or directory: {self.path(value)}")

    def path(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    def relative(self, path: str) -> str:
        """A path as it appears in reject locations and metadata: relative to the source root."""
        return os.path.relpath(path, self.root)


@dataclass
class CocoConfig(SourceConfig):
    kind: ClassVar[str] = "coco"
    annotation_field: ClassVar[str] = "instances"
    paths: ClassVar[tuple[str, ...]] = ("captions", "instances", "images")
    captions: str = "annotations/captions_train2017.json"
    instances: str | None = None  # boxes and categories as ground-truth tags, when given
    images: str = "train2017"
    tags: TagOrigin = "detector"  # annotations: the instances' boxes


@dataclass
class ImageFolderConfig(SourceConfig):
    """An image-only folder, e.g. COCO unlabeled2017."""

    kind: ClassVar[str] = "image_folder"
    paths: ClassVar[tuple[str, ...]] = ("images",)
    images: str = "unlabeled2017"


@dataclass
class VisualGenomeConfig(SourceConfig):
    kind: ClassVar[str] = "visual_genome"
    annotation_field: ClassVar[str] = "objects"
    paths: ClassVar[tuple[str, ...]] = ("image_data", "regions", "objects")
    image_data: str = "image_data.json"
    regions: str = "region_descriptions.json"
    objects: str | None = None  # objects.json, for ground-truth tags
    image_dirs: list[str] = field(default_factory=lambda: ["VG_100K", "VG_100K_2"])
    tags: TagOrigin = "detector"  # annotations: objects.json


@dataclass
class ConceptualCaptionsConfig(SourceConfig):
    """CC3M's headerless ``caption<TAB>url`` TSV; images in a folder by row, or ``images: null`` to
    download them from the URLs (the ``download`` section of the config)."""

    kind: ClassVar[str] = "conceptual_captions"
    paths: ClassVar[tuple[str, ...]] = ("tsv", "images")
    tsv: str = "Train_GCC-training.tsv"
    images: str | None = "images"
    image_pattern: str = "{row:08d}.jpg"  # file name of row N (0-based) in ``images``


@dataclass
class Img2datasetConfig(SourceConfig):
    """A folder written by img2dataset in webdataset format: NNNNN.tar + NNNNN.parquet."""

    kind: ClassVar[str] = "img2dataset"


@dataclass
class SbuConfig(SourceConfig):
    kind: ClassVar[str] = "sbu"
    paths: ClassVar[tuple[str, ...]] = ("urls", "captions", "images")
    urls: str = "SBU_captioned_photo_dataset_urls.txt"
    captions: str = "SBU_captioned_photo_dataset_captions.txt"
    images: str | None = "images"  # null: download from the URLs
    image_pattern: str = "{row:08d}.jpg"


@dataclass
class OpenImagesConfig(SourceConfig):
    kind: ClassVar[str] = "openimages"
    annotation_field: ClassVar[str] = "boxes"
    paths: ClassVar[tuple[str, ...]] = ("image_list", "labels", "classes", "boxes", "images")
    image_list: str = "train-images-boxable-with-rotation.csv"
    labels: str = "train-annotations-human-imagelabels-boxable.csv"
    classes: str = "class-descriptions-boxable.csv"
    boxes: str | None = None  # *-annotations-bbox.csv, for ground-truth tags
    images: str | None = "images"  # null: download from OriginalURL
    pseudo_pairs: PseudoPairConfig = field(default_factory=PseudoPairConfig)
    tags: TagOrigin = "detector"  # annotations: the bbox CSV


@dataclass
class ImageNetConfig(SourceConfig):
    """ImageNet-21k: ``nXXXXXXXX/`` folders or ``nXXXXXXXX.tar`` files under ``images`` (and ``tars``)."""

    kind: ClassVar[str] = "imagenet21k"
    paths: ClassVar[tuple[str, ...]] = ("words", "images", "tars")
    words: str | None = "words.txt"  # null: lemma names from WordNet by the synset's offset (text.nltk_data)
    images: str = "."
    tars: str | None = None  # a second folder of nXXXXXXXX.tar (the release keeps folders and tars apart)
    pseudo_pairs: PseudoPairConfig = field(default_factory=PseudoPairConfig)


@dataclass
class BookCorpusConfig(SourceConfig):
    """``books``: one .txt per book (paragraphs); ``lines``: one sentence per line (books_large_p*.txt)."""

    kind: ClassVar[str] = "bookcorpus"
    files: str = "**/*.txt"
    layout: Literal["books", "lines"] = "books"


@dataclass
class WikipediaConfig(SourceConfig):
    """WikiExtractor output; each file may hold ``<doc>`` blocks or JSON lines (detected per file)."""

    kind: ClassVar[str] = "wikipedia"
    files: str = "*/wiki_*"


@dataclass
class OpenWebTextConfig(SourceConfig):
    kind: ClassVar[str] = "openwebtext"
    files: str = "**/*.xz"


SOURCE_KINDS: dict[str, type[SourceConfig]] = {
    cls.kind: cls
    for cls in (
        CocoConfig,
        ImageFolderConfig,
        VisualGenomeConfig,
        ConceptualCaptionsConfig,
        Img2datasetConfig,
        SbuConfig,
        OpenImagesConfig,
        ImageNetConfig,
        BookCorpusConfig,
        WikipediaConfig,
        OpenWebTextConfig,
    )
}


@dataclass
class CorpusConfig:
    output: str = path_field()
    sources: dict[str, SourceConfig]
    image: ImageConfig = field(default_factory=ImageConfig)
    text: TextConfig = field(default_factory=TextConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    pack: PackConfig = field(default_factory=PackConfig)


def load_config(path: str) -> CorpusConfig:
    """Read and validate a corpus YAML file; relative paths are taken from the file's folder."""
    import yaml

    from schemas.config_yaml import load_yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = load_yaml(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    except ConfigError as e:  # a duplicate key: "LINE: key: ..."
        raise ConfigError(f"{path}:{e}") from e
    try:
        return parse_config(data, base_dir=os.path.dirname(os.path.abspath(path)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def parse_config(data: Any, base_dir: str) -> CorpusConfig:
    """The config from a loaded YAML mapping; relative paths are taken from ``base_dir``."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top, got {type(data).__name__}")
    check_keys(data, CorpusConfig, "")
    for required in ("output", "sources"):
        if required not in data:
            raise ConfigError(f"{required}: missing (required)")
    if not isinstance(data["sources"], dict) or not data["sources"]:
        raise ConfigError("sources: expected a mapping of source name -> source config")
    sources = {name: _source(name, spec, base_dir) for name, spec in data["sources"].items()}
    config = build(CorpusConfig, {**data, "sources": {}}, "", base_dir)
    config.sources = sources
    for f in dataclasses.fields(config):
        section = getattr(config, f.name)
        if hasattr(section, "validate"):
            section.validate(f.name)
    _check_source_names(config)
    _check_pack_names(config.pack, config.retrieval)
    return config


def _check_source_names(config: CorpusConfig) -> None:
    """Every source a stage names (a field marked ``sources``) must be in ``sources``."""
    for where, names in marked_values(config, "", "sources"):
        for i, name in enumerate(names or ()):
            if name not in config.sources:
                raise ConfigError(f"{where}[{i}]: {name!r} is not a source of this config "
                                  f"(have: {', '.join(config.sources)})")


def _check_pack_names(pack: PackConfig, retrieval: RetrievalConfig) -> None:
    """``pack.weak_pairs`` name ``retrieval.retrieve.weak_pairs`` entries."""
    weak = [w.name for w in retrieval.retrieve.weak_pairs]
    for i, name in enumerate(pack.weak_pairs or ()):
        if name not in weak:
            raise ConfigError(f"pack.weak_pairs[{i}]: {name!r} is not a retrieval.retrieve.weak_pairs name "
                              f"(have: {', '.join(weak) or 'none'})")


def _source(name: Any, spec: Any, base_dir: str) -> SourceConfig:
    where = f"sources.{name}"
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(f"{where}: source names use only a-z, 0-9, '_' and '-'")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"{where}.kind: expected {' | '.join(SOURCE_KINDS)}, got {kind!r}")
    source = build(SOURCE_KINDS[kind], {k: v for k, v in spec.items() if k != "kind"}, where, base_dir)
    source.validate(where)
    for sub in dataclasses.fields(source):
        value = getattr(source, sub.name)
        if hasattr(value, "validate") and not isinstance(value, SourceConfig):
            value.validate(f"{where}.{sub.name}")
    return source
