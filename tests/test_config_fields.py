"""What the config fields' types and marks promise, checked over every field the dataclasses have (a new field
is covered without touching this file): every choice refuses a bad value naming the dotted key and what it
accepts; every model path missing says what to put there; a stage's parameters hash follows exactly the fields
that change its output."""

import copy
import dataclasses
import re
import typing

import pytest

from schemas.config import SOURCE_KINDS, CorpusConfig, load_config, parse_config
from schemas.config_build import accepted, build, fields_of, require_path
from schemas.config_errors import ConfigError
from training.config import TrainConfig, parse_train_config

BAD = "bogus"
_PIVOT = {"pivot": "zh", "forward": "models/en-zh", "backward": "models/zh-en"}
_TRAIN_BASE = {"model": {}, "data": {"kinds": [{"task": "pairs", "objectives": ["mlm"]}]}}


def _corpus_base(root) -> dict:
    (root / "b").mkdir(exist_ok=True)
    return {"output": "out", "sources": {"s": {"kind": "bookcorpus", "root": "b"}},
            "annotate": {"rewrite": {"back_translation": {"pivots": [dict(_PIVOT)]}}}}


def _optional(hint):
    """``X | None`` -> ``X``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, type(int | None)) and len(args) == 1 else hint


def _choice(hint):
    """(accepted values as spelled, whether the field is a list of them) of a choice field; None otherwise."""
    hint = _optional(hint)
    if typing.get_origin(hint) is list:
        return (accepted(typing.get_args(hint)[0]), True) if accepted(typing.get_args(hint)[0]) else None
    return (accepted(hint), False) if accepted(hint) else None


def _choice_keys(cls, where=""):
    return [(key, *_choice(hint)) for key, _, hint in fields_of(cls, where) if _choice(hint)]


CORPUS_CHOICES = [(*entry, None) for entry in _choice_keys(CorpusConfig)] + [
    (key, spelled, many, kind) for kind, cls in SOURCE_KINDS.items()
    for key, spelled, many in _choice_keys(cls, "sources.s")]
TRAIN_CHOICES = _choice_keys(TrainConfig)


def _set(data: dict, key: str, value) -> None:
    """Put ``value`` at dotted ``key`` (``a.b[0].c``), making sections on the way; list items must exist."""
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", key)
    node = data
    for part, following in zip(parts, parts[1:], strict=False):
        node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {} if
                                                                                 not following.startswith("[") else [])
    node[parts[-1]] = value


def test_the_choice_fields_are_found():
    """The walk over the dataclasses reaches nested sections, sources of every kind and lists of sections."""
    keys = {entry[0] for entry in CORPUS_CHOICES + TRAIN_CHOICES}
    assert {"image.encode", "text.pack", "text.splitter", "annotate.detect.device", "retrieval.embed.device",
            "annotate.rewrite.back_translation.device", "retrieval.index.use_gpu", "pack.tasks", "sources.s.tags",
            "sources.s.layout", "device", "amp", "schedule.decay", "eval.head", "data.visual", "data.location",
            "data.kinds[0].mlm_mode", "data.kinds[0].objectives", "model.visual.kind"} <= keys


@pytest.mark.parametrize("key, spelled, many, kind", CORPUS_CHOICES, ids=lambda v: v if isinstance(v, str) else "")
def test_every_corpus_choice_names_the_key_and_what_it_accepts(tmp_path, key, spelled, many, kind):
    data = _corpus_base(tmp_path)
    if kind:
        data["sources"]["s"] = {"kind": kind, "root": "b"}
    _set(data, key, [BAD] if many else BAD)
    where = f"{key}[0]" if many else key
    with pytest.raises(ConfigError, match=f"^{re.escape(where)}: expected {re.escape(spelled)}, got '{BAD}'"):
        parse_config(data, str(tmp_path))


@pytest.mark.parametrize("key, spelled, many", TRAIN_CHOICES, ids=lambda v: v if isinstance(v, str) else "")
def test_every_trainer_choice_names_the_key_and_what_it_accepts(key, spelled, many):
    data = copy.deepcopy(_TRAIN_BASE)
    _set(data, key, [BAD] if many else BAD)
    where = f"{key}[0]" if many else key
    with pytest.raises(ConfigError, match=f"^{re.escape(where)}: expected {re.escape(spelled)}, got '{BAD}'"):
        parse_train_config(data, "/base")


@pytest.mark.parametrize("device, ok", [("auto", True), ("cpu", True), ("cuda", True), ("cuda:3", True),
                                        ("gpu", False), ("cuda:", False), ("cuda:x", False), ("CPU", False)])
def test_devices_are_auto_cpu_cuda_or_cuda_n(tmp_path, device, ok):
    data = _corpus_base(tmp_path)
    _set(data, "annotate.detect.device", device)
    if ok:
        assert parse_config(data, str(tmp_path)).annotate.detect.device == device
    else:
        with pytest.raises(ConfigError, match=rf"^annotate\.detect\.device: expected auto \| cpu \| cuda \| cuda:N, "
                                              rf"got '{device}'"):
            parse_config(data, str(tmp_path))


MODEL_FIELDS = [key for key, f, _ in fields_of(CorpusConfig) if f.metadata.get("path") and f.metadata["what"]]


def test_the_model_fields_are_found():
    assert set(MODEL_FIELDS) == {
        "annotate.detect.model", "annotate.parse.model", "annotate.rewrite.back_translation.pivots[0].forward",
        "annotate.rewrite.back_translation.pivots[0].backward", "annotate.rewrite.scene_graph.language_model",
        "retrieval.embed.model"}


def _section(config, key: str):
    """The section holding dotted ``key``'s field, and the section's own dotted key."""
    where, _, name = key.rpartition(".")
    section = config
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", where):
        section = section[int(part[1:-1])] if part.startswith("[") else getattr(section, part)
    return section, where, name


@pytest.mark.parametrize("key", MODEL_FIELDS)
def test_a_missing_model_names_the_key_and_what_to_put_there(tmp_path, key):
    """Relative model paths are taken from the config file's folder; a stage that finds nothing there names
    the key and what belongs there (said once, on the field)."""
    import yaml

    data = _corpus_base(tmp_path)
    _set(data, key, "models/missing")
    (tmp_path / "corpus.yaml").write_text(yaml.safe_dump(data))
    section, where, name = _section(load_config(str(tmp_path / "corpus.yaml")), key)
    assert getattr(section, name) == str(tmp_path / "models" / "missing")
    what = next(f.metadata["what"] for f in dataclasses.fields(section) if f.name == name)
    with pytest.raises(ConfigError, match=f"^{re.escape(key)}: no such file or directory: "
                                          f"{re.escape(str(tmp_path / 'models' / 'missing'))}; {re.escape(what)}"):
        require_path(section, name, where)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "missing").mkdir()
    assert require_path(section, name, where) == str(tmp_path / "models" / "missing")


# --- parameters hash ------------------------------------------------------------------------------------------


def _changed(value, hint, other_path: str):
    """A different value of the field's type."""
    hint = _optional(hint)
    if typing.get_origin(hint) is typing.Literal:
        return next(v for v in typing.get_args(hint) if v != value)
    if typing.get_origin(hint) is typing.Annotated:  # a device
        return "cpu" if value != "cpu" else "auto"
    if hint is bool:
        return not value
    if hint is int:
        return (value or 0) + 1
    if hint is float:
        return (value or 1.0) / 2
    if hint is str:
        return other_path
    if typing.get_origin(hint) is list:
        return [*(value or []), "changed"]
    raise AssertionError(f"no changed value for {hint}")


def _stages(tmp_path):
    """(section class, base YAML mapping, params of a section) of the stages whose params come from a section."""
    from pipelines.pack import PackSettings
    from pipelines.stages.detect import DetectAnnotator
    from pipelines.stages.embed import EmbedAnnotator
    from pipelines.stages.parse import ParseAnnotator
    from pipelines.stages.rewrite import RewriteAnnotator
    from retrieval.index import build_params
    from schemas.stages import CmclPackConfig, DetectConfig, EmbedConfig, IndexConfig, ParseConfig, RewriteConfig

    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    return {
        "detect": (DetectConfig, {"model": str(model)}, lambda c: DetectAnnotator(c, "detector").params()),
        "parse": (ParseConfig, {}, lambda c: ParseAnnotator(c).params()),
        "embed": (EmbedConfig, {"model": "minilm"}, lambda c: EmbedAnnotator(c, "text").params()),
        "rewrite": (RewriteConfig, {"back_translation": {"pivots": [dict(_PIVOT)]}},
                    lambda c: RewriteAnnotator(c, str(tmp_path), [], "corpus-digest", "minilm").params()),
        "index": (IndexConfig, {}, lambda c: build_params(c, "minilm", 384)),
        "pack.cmcl": (CmclPackConfig, {}, lambda c: PackSettings(str(tmp_path), ("cmcl",), c).params()),
    }


def _stage_fields():
    from schemas.stages import CmclPackConfig, DetectConfig, EmbedConfig, IndexConfig, ParseConfig, RewriteConfig

    classes = {"detect": DetectConfig, "parse": ParseConfig, "embed": EmbedConfig, "rewrite": RewriteConfig,
               "index": IndexConfig, "pack.cmcl": CmclPackConfig}
    return [(stage, key) for stage, cls in classes.items() for key, f, hint in fields_of(cls)
            if not (dataclasses.is_dataclass(hint) or typing.get_origin(hint) is list and key.endswith("pivots"))]


@pytest.mark.parametrize("stage, key", _stage_fields())
def test_params_hash_follows_the_fields_that_change_output(tmp_path, stage, key):
    """A field marked ``output: False`` (device, batch size, which sources run) leaves a shard's hash alone;
    every other field redoes it. Building the same section twice gives the same hash."""
    from pipelines.sidecar_tables import params_hash

    cls, base, params = _stages(tmp_path)[stage]
    other = tmp_path / "other.pt"
    other.write_bytes(b"other weights")
    config = build(cls, copy.deepcopy(base), stage)
    section, _, name = _section(config, key)
    field = next(f for f in dataclasses.fields(section) if f.name == name)
    hint = typing.get_type_hints(type(section), include_extras=True)[name]
    changed = copy.deepcopy(base)
    _set(changed, key, _changed(getattr(section, name), hint, str(other)))
    before = params_hash(params(config), "raw")
    assert params_hash(params(build(cls, copy.deepcopy(base), stage)), "raw") == before
    after = params_hash(params(build(cls, changed, stage)), "raw")
    assert (after != before) == field.metadata.get("output", True), key


def test_runtime_fields_are_the_expected_ones():
    """The fields that do not reach a params hash, listed so that marking one is a visible decision."""
    runtime = {key for key, f, _ in fields_of(CorpusConfig) if f.metadata.get("output", True) is False}
    assert runtime == {
        "text.nltk_data", "annotate.detect.batch_size", "annotate.detect.device", "annotate.detect.sources",
        "annotate.parse.batch_size", "annotate.parse.sources", "annotate.rewrite.back_translation.batch_size",
        "annotate.rewrite.back_translation.device", "annotate.rewrite.sources", "retrieval.embed.batch_size",
        "retrieval.embed.device", "retrieval.embed.sources", "retrieval.retrieve.weak_pairs[0].name",
        "retrieval.retrieve.weak_pairs[0].images", "retrieval.retrieve.related_images_queries",
        "retrieval.retrieve.related_texts_queries", "retrieval.index.shard_size",
        "retrieval.index.sharded", "pack.sources"}


@pytest.mark.parametrize("kind", ["related_images", "related_texts"])
def test_related_items_params_are_their_fields_of_the_retrieve_section(tmp_path, kind):
    from pipelines.linkers import RelatedImages, RelatedTexts
    from schemas.stages import RetrieveConfig

    linker = {"related_images": RelatedImages, "related_texts": RelatedTexts}[kind]

    def params(**changes):
        return linker(str(tmp_path), dataclasses.replace(RetrieveConfig(), **changes), ["q"], ["c"]).params()

    base = params()
    own = sorted(f.name for f in dataclasses.fields(RetrieveConfig)
                 if f.name.startswith(kind) and f.metadata.get("output", True))
    assert own and sorted(k for k in base if k.startswith("related")) == own  # its output fields, only those
    for name in own:
        changed = 7 if name.endswith(("_top_n", "_candidates")) else ["x"]
        assert params(**{name: changed}) != base, name
    other = "related_texts_top_n" if kind == "related_images" else "related_images_top_n"
    assert params(**{other: 7, f"{kind}_queries": ["elsewhere"]}) == base  # another job's field, a runtime one
