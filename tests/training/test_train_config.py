"""The trainer config fails before any step, naming the dotted key; tiny and command-line overrides."""

import pytest
import yaml

from schemas.config_errors import ConfigError
from training.config import load_train_config, parse_train_config


def _parse(data, **kw):
    return parse_train_config(data, "/base", **kw)


@pytest.mark.parametrize("data, message", [
    ({"model": {}, "data": {}, "optim": {"lr": "fast"}}, r"^optim.lr: expected float, got str 'fast'"),
    ({"model": {}, "data": {}, "optim": {"learning_rate": 1}}, r"^optim.learning_rate: unknown key"),
    ({"model": {}, "data": {}, "schedule": {"decay": "step"}},
     r"^schedule.decay: expected linear \| cosine \| constant, got 'step'"),
    ({"model": {}, "data": {}, "objectives": {"weights": {"mlm": -1.0}}}, r"^objectives.weights.mlm: a loss weight"),
    ({"model": {}, "data": {}, "objectives": {"weights": {"mlm": "x"}}}, r"^objectives.weights.mlm: expected float"),
    ({"model": {}, "data": {}, "curriculum": {"stages": [{"name": "a", "tasks": ["images"]}, {"name": "b"}]}},
     r"^curriculum.stages\[0\]: give its length"),
    ({"model": {}, "data": {}, "amp": "fp8"}, r"^amp: expected auto \| bf16 \| off, got 'fp8'"),
    ({"model": {}, "data": {}, "trainer": {}}, r"^trainer: unknown key"),
    ({"data": {}}, r"^model: missing"),
])
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        _parse(data)


def test_tiny_and_overrides_apply_in_order(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"model": {}, "data": {}, "optim": {"lr": "bad"},
                                    "tiny": {"optim": {"lr": "still bad"}}}))
    with pytest.raises(ConfigError, match=r"t.yaml: optim.lr: expected float, got str 'still bad'"):
        load_train_config(str(path), tiny=True)
    with pytest.raises(ConfigError, match=r"optim.lr: expected float, got str 'worse'"):
        load_train_config(str(path), tiny=True, overrides=["optim.lr=worse"])
    with pytest.raises(ConfigError, match=r"optim.lr: 'optim' is not a section"):
        load_train_config(str(path), overrides=["optim=3", "optim.lr=1"])
    with pytest.raises(ConfigError, match=r"an override is dotted.key=value"):
        load_train_config(str(path), overrides=["optim.lr"])
    path.write_text(yaml.safe_dump({"model": {}, "data": {}}))
    with pytest.raises(ConfigError, match=r"--tiny needs a `tiny:` mapping"):
        load_train_config(str(path), tiny=True)


def test_paths_in_the_file_follow_the_file_and_paths_typed_follow_the_shell(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    path = folder / "t.yaml"
    path.write_text(yaml.safe_dump({"model": {}, "data": {"root": "packed"}, "output": "runs/a"}))
    monkeypatch.chdir(tmp_path)
    from_file = load_train_config(str(path))
    assert (from_file.output, from_file.data.root) == (str(folder / "runs/a"), str(folder / "packed"))
    typed = load_train_config(str(path), overrides=["output=demo-out/train", "data.root=corpus/packed"])
    assert (typed.output, typed.data.root) == (str(tmp_path / "demo-out/train"), str(tmp_path / "corpus/packed"))
