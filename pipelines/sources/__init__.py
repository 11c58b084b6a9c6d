"""One reader per raw format (FORMATS.md). Pure Python: testable without Beam.

A reader is built from a source name and its config, splits its input into ``parts`` (units of
parallel work: a file, an archive, a folder) and turns one part into ``Candidate`` and ``Reject``
records. A file that cannot be read at all raises ``SourceError`` naming it: that fails the run, since
guessing would lose data.
"""

from __future__ import annotations

from collections.abc import Iterator

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

    def inputs(self, parts: list[str]) -> list:
        """The files (``common.InputFile``: path, size, mtime) this source reads, for the parameters hash:
        a file added, removed or edited redoes the shards that depend on it. By default the parts and
        the config's path fields (a folder counts by its own mtime, which changes as entries come and go)."""
        from pipelines.sources.common import input_files

        fields = [getattr(self.config, name) for name in self.config.paths]
        return input_files(self.config.root, [*parts, *(self.config.path(f) for f in fields if f is not None)])

    def looked_in(self, parts: list[str]) -> str:
        """Where the source looked for records, for the error when it found none."""
        return ", ".join(parts[:5]) + (f" (and {len(parts) - 5} more)" if len(parts) > 5 else "")


def reader_for(name: str, config: SourceConfig, text: TextConfig) -> Reader:
    from pipelines.sources.registry import reader_class

    return reader_class(config.kind)(name, config, text)
