"""One reader per raw format (FORMATS.md). Pure Python: testable without Beam.

A reader is built from a source name and its config, splits its input into ``parts`` (units of
parallel work: a file, an archive, a folder) and turns one part into ``Candidate`` and ``Reject``
records. A file that cannot be read at all raises ``SourceError`` naming it: that fails the run, since
guessing would lose data.
"""

from __future__ import annotations

from typing import Iterator, Protocol

from schemas.config import SourceConfig, TextConfig
from schemas.records import Candidate, Reject


class SourceError(RuntimeError):
    """A raw file that cannot be read at all (missing, wrong format); the message names the file."""


class Reader(Protocol):
    def __init__(self, name: str, config: SourceConfig, text: TextConfig) -> None: ...

    def parts(self) -> list[str]: ...

    def read(self, part: str) -> Iterator[Candidate | Reject]: ...


def reader_for(name: str, config: SourceConfig, text: TextConfig) -> Reader:
    from pipelines.sources.registry import reader_class

    return reader_class(config.kind)(name, config, text)
