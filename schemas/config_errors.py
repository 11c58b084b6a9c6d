"""The config's error type and the small checks every section shares."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config that cannot be used, with the dotted path of the bad key in the message."""


def choice(value: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{where}: expected one of {list(allowed)}, got {value!r}")


def positive(value: int | None, where: str) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{where}: expected a positive integer, got {value}")
