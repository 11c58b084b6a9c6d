"""One builder for every config (corpus and trainer): a YAML mapping -> nested dataclasses, each value checked
against its field's type.

Types say what a field accepts: ``Literal[...]`` choices, ``Accepts`` patterns (``cuda:N``), lists, mappings,
nested sections. An error names the dotted key, what is accepted and what came
(``annotate.detect.device: expected auto | cpu | cuda | cuda:N, got 'gpu'``).

Field metadata marks, once on the field, what the builder and the stages treat alike whatever its name:
- ``path`` (``path_field``): taken from the config file's folder when relative (URIs stay as they are); ``what``
  says what belongs there, which ``require_path`` says when a stage finds nothing; ``package``: a bare name
  (a spaCy package) stays a name.
- ``sources`` (``sources_field``): names of the config's sources, checked by ``marked_values``' caller.
- ``hint``: said after any error of the field (where else to look).
- ``output: False`` (``runtime_field``): how a stage runs (batch size, device, which sources), not what it
  writes; ``output_params`` leaves it out of the stage's parameters hash.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any, NamedTuple

from schemas.config_errors import ConfigError


class Accepts(NamedTuple):
    """A string field's accepted values as a pattern, and as the error message spells them."""

    pattern: str
    spelled: str


Device = Annotated[str, Accepts(r"auto|cpu|cuda(:\d+)?", "auto | cpu | cuda | cuda:N")]


def path_field(default: Any = dataclasses.MISSING, *, what: str = "", package: bool = False,
               output: bool = True) -> Any:
    """A path relative to the config file; ``what``: what to put there (said when a stage finds nothing);
    ``output``: whether it names what is read (a model) or only where (the NLTK data folder)."""
    return dataclasses.field(default=default, metadata={"path": True, "what": what, "package": package,
                                                        "output": output})


def sources_field(default: Any = None, *, output: bool = False) -> Any:
    """Names of sources of this config (None: every applicable source). ``output``: whether they change what
    a shard holds (the sources searched), not only which shards run (the sources annotated)."""
    return dataclasses.field(default=default, metadata={"sources": True, "output": output})


def runtime_field(default: Any) -> Any:
    """How a stage runs (batch size, device), not what it writes: not part of its parameters hash."""
    return dataclasses.field(default=default, metadata={"output": False})


# --- building ------------------------------------------------------------------------------------------


def build(cls: type, data: Any, where: str, base_dir: str | None = None) -> Any:
    """Dataclass ``cls`` from a mapping: unknown keys, missing keys and types checked, path fields taken from
    ``base_dir`` (the config file's folder)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    check_keys(data, cls, where)
    hints = typing.get_type_hints(cls, include_extras=True)
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}".lstrip(".")
        if f.name in data:
            try:
                values[f.name] = _located(f, typed(data[f.name], hints[f.name], key, base_dir), base_dir)
            except ConfigError as e:
                if "hint" not in f.metadata:
                    raise
                raise ConfigError(f"{e} ({f.metadata['hint']})") from None
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: missing (required)")
    return cls(**values)


def check_keys(data: dict, cls: type, where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            path = f"{where}.{key}".lstrip(".")
            raise ConfigError(f"{path}: unknown key (expected one of: {', '.join(sorted(known))})")


def typed(value: Any, hint: Any, where: str, base_dir: str | None = None) -> Any:
    """``value`` checked against type ``hint``; nested dataclasses are built."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return typed(value, inner, where, base_dir)
    if origin is typing.Annotated:
        value = typed(value, args[0], where, base_dir)
        for accepts in (a for a in args[1:] if isinstance(a, Accepts)):
            if not re.fullmatch(accepts.pattern, value):
                raise ConfigError(f"{where}: expected {accepts.spelled}, got {value!r}")
        return value
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected {accepted(hint)}, got {value!r}")
        return value
    if origin is dict:  # a mapping of name -> section (the trainer's objectives, per-task weights)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return {typed(k, args[0], where): typed(v, args[1], f"{where}.{k}", base_dir) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return [typed(v, args[0], f"{where}[{i}]", base_dir) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return build(hint, {} if value is None else value, where, base_dir)  # an empty section: its defaults
    if hint is float and type(value) is int:
        value = float(value)
    if hint in (bool, int, float, str) and type(value) is not hint:
        raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def accepted(hint: Any) -> str | None:
    """How an error spells the values a choice type accepts (``keep | jpeg | png``); None for other types."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin is typing.Annotated:
        return next((a.spelled for a in args[1:] if isinstance(a, Accepts)), None)
    return None


def local(path: str, base_dir: str) -> str:
    """Relative paths are taken from the config file's folder; URIs (gs://, s3://) stay as they are."""
    return path if "://" in path else os.path.normpath(os.path.join(base_dir, path))


def _located(f: dataclasses.Field, value: Any, base_dir: str | None) -> Any:
    """A path field's value taken from ``base_dir``; a package name (no separator, no leading dot) stays."""
    if not f.metadata.get("path") or not isinstance(value, str) or base_dir is None:
        return value
    if f.metadata["package"] and not (os.sep in value or "/" in value or value.startswith(".")):
        return value
    return local(value, base_dir)


# --- what the marks are used for -----------------------------------------------------------------------


def fields_of(cls: type, where: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(dotted key, field, type) of every field of ``cls`` and its sections; a list of sections as ``[0]``."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}".lstrip(".")
        yield key, f, hints[f.name]
        inner = _unwrapped(hints[f.name])
        if typing.get_origin(inner) is list and dataclasses.is_dataclass(_unwrapped(typing.get_args(inner)[0])):
            yield from fields_of(_unwrapped(typing.get_args(inner)[0]), f"{key}[0]")
        elif dataclasses.is_dataclass(inner):
            yield from fields_of(inner, key)


def _unwrapped(hint: Any) -> Any:
    """``X | None`` -> ``X``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint


def marked_values(section: Any, where: str, mark: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every field of a built ``section`` (and its sections, lists of them included)
    whose metadata has ``mark``."""
    for f in dataclasses.fields(section):
        key, value = f"{where}.{f.name}".lstrip("."), getattr(section, f.name)
        if f.metadata.get(mark):
            yield key, value
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            if dataclasses.is_dataclass(item):
                yield from marked_values(item, key if i is None else f"{key}[{i}]", mark)


def output_params(section: Any) -> Any:
    """A section's fields that change what its stage writes (the input of its parameters hash): every field
    but those marked ``output: False``; a sub-section switched off (``enabled: false``) is just ``False``."""
    if isinstance(section, list):
        return [output_params(item) for item in section]
    if not dataclasses.is_dataclass(section):
        return section
    if getattr(section, "enabled", True) is False:
        return False
    return {f.name: output_params(getattr(section, f.name)) for f in dataclasses.fields(section)
            if f.metadata.get("output", True)}


def what_goes_in(cls: type, name: str) -> str:
    """What belongs in path field ``name`` of ``cls``, as the field says."""
    return next(f.metadata["what"] for f in dataclasses.fields(cls) if f.name == name)


def require_path(section: Any, name: str, where: str, why: str = "") -> str:
    """``section.<name>`` if that path exists; else a ConfigError naming the key, the path and what the field
    says belongs there (``why``: which setting needs it, when that is not obvious)."""
    what = what_goes_in(type(section), name) + (f" ({why})" if why else "")
    return check_path(getattr(section, name), f"{where}.{name}", what)


def check_path(path: str | None, key: str, what: str) -> str:
    """``path`` if it exists; else a ConfigError naming ``key``, the path and ``what`` belongs there."""
    if not path:
        raise ConfigError(f"{key}: no model configured; {what}")
    if not os.path.exists(path):
        raise ConfigError(f"{key}: no such file or directory: {path}; {what}")
    return path
