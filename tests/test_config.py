import os

import pytest

from schemas.config import CocoConfig, ConfigError, load_config, parse_config


def _coco_root(tmp_path):
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "annotations" / "captions_train2017.json").write_text("{}")
    (tmp_path / "coco" / "train2017").mkdir()
    return tmp_path


def _write(tmp_path, text):
    path = tmp_path / "corpus.yaml"
    path.write_text(text)
    return str(path)


def test_minimal_config_uses_release_layout_defaults(tmp_path):
    _coco_root(tmp_path)
    config = load_config(_write(tmp_path, "output: out\nsources:\n  coco: {kind: coco, root: coco, shards: 4}\n"))
    source = config.sources["coco"]
    assert isinstance(source, CocoConfig) and source.shards == 4
    assert source.path(source.captions) == os.path.join(tmp_path, "coco", "annotations", "captions_train2017.json")
    assert config.output == os.path.join(tmp_path, "out")
    assert config.image.encode == "keep" and config.text.pack == "sentence"


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("output: o\nsources:\n  coco: {kind: coco, root: coco, shardz: 4}\n", "sources.coco.shardz: unknown key"),
        (
            "output: o\nsources:\n  coco: {kind: coco, root: coco, shards: four}\n",
            "sources.coco.shards: expected int, got str 'four'",
        ),
        (
            "output: o\nsources:\n  coco: {kind: coco, root: coco, shards: 0}\n",
            "sources.coco.shards: expected a positive integer",
        ),
        ("output: o\nsources:\n  coco: {kind: cocoa, root: coco}\n",
         "sources.coco.kind: expected coco | image_folder | visual_genome"),
        ("output: o\nsources:\n  coco: {kind: coco, root: nowhere}\n", "sources.coco.root: no such directory"),
        (
            "output: o\nsources:\n  coco: {kind: coco, root: coco, instances: x.json}\n",
            "sources.coco.instances: no such file or directory: ",
        ),
        ("output: o\nsources:\n  Coco: {kind: coco, root: coco}\n", "sources.Coco: source names use only"),
        ("sources:\n  coco: {kind: coco, root: coco}\n", "output: missing (required)"),
        ("output: o\nsources:\n  coco: {kind: coco}\n", "sources.coco.root: missing (required)"),
        (
            "output: o\nimage: {encode: gif}\nsources:\n  coco: {kind: coco, root: coco}\n",
            "image.encode: expected keep | jpeg | png, got 'gif'",
        ),
        ("output: o\ntext: {max_tokens: -1}\nsources:\n  coco: {kind: coco, root: coco}\n", "text.max_tokens"),
        ("output: o\ntext: {splitter: spacy}\nsources:\n  coco: {kind: coco, root: coco}\n", "text.splitter"),
        (
            "output: o\nsources:\n  oi: {kind: openimages, root: coco, pseudo_pairs: {templates: ['a photo']}}\n",
            "sources.oi",
        ),
        ("output: [o\n", "not valid YAML"),
    ],
)
def test_errors_name_the_bad_key(tmp_path, yaml_text, message):
    _coco_root(tmp_path)
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, yaml_text))
    assert message in str(error.value)
    assert str(tmp_path / "corpus.yaml") in str(error.value)


def test_nested_pseudo_pair_templates_are_checked(tmp_path):
    for name in ("images.csv", "labels.csv", "classes.csv"):
        (tmp_path / name).write_text("")
    (tmp_path / "images").mkdir()
    spec = {"kind": "openimages", "root": ".", "image_list": "images.csv", "labels": "labels.csv",
            "classes": "classes.csv", "pseudo_pairs": {"enabled": True, "templates": ["no placeholder"]}}
    with pytest.raises(ConfigError, match=r"sources.oi.pseudo_pairs.templates\[0\]: 'no placeholder' has no \{label\}"):
        parse_config({"output": "o", "sources": {"oi": spec}}, str(tmp_path))
    spec["pseudo_pairs"]["templates"] = ["an image of {label}"]
    config = parse_config({"output": "o", "sources": {"oi": spec}}, str(tmp_path))
    assert config.sources["oi"].pseudo_pairs.enabled is True


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read config"):
        load_config(str(tmp_path / "nope.yaml"))


_COCO = "output: o\nsources:\n  coco: {kind: coco, root: coco}\n"


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("output: o\nsources:\n  coco: {kind: coco, root: coco, tags: all}\n",
         "sources.coco.tags: expected detector | annotations | both, got 'all'"),
        ("output: o\nsources:\n  coco: {kind: coco, root: coco, tags: both}\n",
         "sources.coco.tags: 'both' needs sources.coco.instances"),
        (_COCO + "annotate: {detect: {min_confidence: 1.5}}\n", "annotate.detect.min_confidence: expected 0 <= x < 1"),
        (_COCO + "annotate: {detect: {max_boxes: 0}}\n", "annotate.detect.max_boxes: expected a positive integer"),
        (_COCO + "annotate: {parse: {sources: [vg]}}\n",
         "annotate.parse.sources[0]: 'vg' is not a source of this config"),
        (_COCO + "annotate: {rewrite: {tfidf: {top_n: 0}}}\n", "annotate.rewrite.tfidf.top_n"),
        (_COCO + "annotate: {rewrite: {back_translation: {pivots: [{pivot: zh}]}}}\n",
         "annotate.rewrite.back_translation.pivots[0].forward: missing (required)"),
        (_COCO + "retrieval: {index: {recall_target: 2}}\n", "retrieval.index.recall_target: expected 0 < x <= 1"),
        (_COCO + "retrieval: {index: {use_gpu: maybe}}\n",
         "retrieval.index.use_gpu: expected auto | never | always, got 'maybe'"),
        (_COCO + "retrieval: {index: {sharded: sometimes}}\n",
         "retrieval.index.sharded: expected auto | never | always, got 'sometimes'"),
        (_COCO + "retrieval: {retrieve: {weak_pairs: [{name: w, images: [coco], texts: [books]}]}}\n",
         "retrieval.retrieve.weak_pairs[0].texts[0]: 'books' is not a source of this config"),
        (_COCO + "retrieval: {retrieve: {weak_pairs: [{name: w, images: [coco], texts: [coco], k: 0}]}}\n",
         "retrieval.retrieve.weak_pairs[0].k: expected a positive integer"),
        (_COCO + "retrieval: {embedd: {}}\n", "retrieval.embedd: unknown key"),
    ],
)
def test_stage_section_errors_name_the_bad_key(tmp_path, yaml_text, message):
    _coco_root(tmp_path)
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, yaml_text))
    assert message in str(error.value)


def test_model_paths_are_taken_from_the_config_folder_and_checked_when_used(tmp_path):
    from schemas.config_build import require_path

    _coco_root(tmp_path)
    config = load_config(_write(tmp_path, _COCO + "annotate: {detect: {model: models/yolo.pt}, parse: {model: "
                                "en_core_web_sm}}\nretrieval: {embed: {model: ../minilm}}\n"))
    detect = config.annotate.detect
    assert detect.model == os.path.join(tmp_path, "models", "yolo.pt")
    assert config.annotate.parse.model == "en_core_web_sm"  # a package name stays a name
    assert config.retrieval.embed.model == os.path.normpath(os.path.join(tmp_path, "..", "minilm"))
    with pytest.raises(ConfigError, match=r"annotate.detect.model: no such file or directory: .*yolo.pt; put the "
                                          r"path of ultralytics YOLO detection weights there"):
        require_path(detect, "model", "annotate.detect")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "yolo.pt").write_bytes(b"")
    assert require_path(detect, "model", "annotate.detect") == detect.model


def test_a_duplicate_key_names_both_lines(tmp_path):
    """YAML itself keeps the last of two equal keys: a second source of the same name would silently replace
    the first, so the loader refuses it, naming the line (and the first one)."""
    _coco_root(tmp_path)
    text = ("output: out\nsources:\n  coco: {kind: coco, root: coco, shards: 4}\n"
            "  other: {kind: coco, root: coco}\n  coco:\n    kind: coco\n    root: coco\n")
    with pytest.raises(ConfigError, match=r"corpus\.yaml:5: sources\.coco: duplicate key \(first at line 3\)"):
        load_config(_write(tmp_path, text))
    nested = "output: out\nsources:\n  coco: {kind: coco, root: coco, shards: 4, shards: 2}\n"
    with pytest.raises(ConfigError, match=r"corpus\.yaml:3: sources\.coco\.shards: duplicate key \(first at line 3\)"):
        load_config(_write(tmp_path, nested))
    anchors = ("output: out\nbase: &b {kind: coco, root: coco}\nsources:\n  coco: {<<: *b, shards: 2}\n"
               "  other: {<<: *b, root: coco}\n")  # a merge key overridden on purpose is not a duplicate
    with pytest.raises(ConfigError, match="base: unknown key"):  # (the anchor's own key is then refused)
        load_config(_write(tmp_path, anchors))
