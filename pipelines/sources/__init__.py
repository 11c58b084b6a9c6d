"""One reader per raw format (FORMATS.md). Pure Python: testable without Beam.

A reader is built from a source name and its config, splits its input into ``parts`` (units of
parallel work: a file, an archive, a folder) and turns one part into ``Candidate`` and ``Reject``
records. A file that cannot be read at all raises ``SourceError`` naming it: that fails the run, since
guessing would lose data.
"""

from __future__ import annotations

from typing import Iterator

from schemas.config import SourceConfig, TextConfig
from schemas.records import Candidate, Reject


class SourceError(RuntimeError):
    """A raw file that cannot be read at all (missing, wrong format); the message names the file."""


class Reader:
    """Base of every reader: holds the source name and configs; subclasses define the two methods."""

    def __init__(self, name: str, config: SourceConfig, text: TextConfig) -> None:
        self.name = name
        self.config = config
        self.text = text

    def parts(self) -> list[str]:
        raise NotImplementedError

    def read(self, part: str) -> Iterator[Candidate | Reject]:
        raise NotImplementedError


def reader_for(name: str, config: SourceConfig, text: TextConfig) -> Reader:
    from pipelines.sources.registry import reader_class

    return reader_class(config.kind)(name, config, text)
