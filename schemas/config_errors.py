"""The config's error type and the small checks every section shares."""

from __future__ import annotations

import dataclasses


class ConfigError(ValueError):
    """A config that cannot be used, with the dotted path of the bad key in the message."""


def positive(value: int | None, where: str) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{where}: expected a positive integer, got {value}")


def validate_sections(section, where: str) -> None:
    """Validate every sub-section of a config section (each field that has ``validate``)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if hasattr(value, "validate"):
            value.validate(f"{where}.{f.name}".lstrip("."))
