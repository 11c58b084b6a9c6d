"""Incremental decoding of large JSON files, one top-level element at a time.

Visual Genome's ``region_descriptions.json`` (about 700 MB) and ``objects.json``, and COCO's
``instances_*.json``, are too big to load whole on a worker. These functions decode them from a binary
stream in chunks with ``json.JSONDecoder.raw_decode``: only one element (plus one chunk) is held at a
time. Syntax errors raise ``SourceError`` naming the file, line, column, byte offset and element index:
after a syntax error there is no reliable way to find the next element, so the file cannot be read.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from typing import IO, Any

from pipelines.sources import SourceError

CHUNK_SIZE = 1 << 20
# A decoded value ending this close to the end of the buffer may have been cut by the chunk boundary
# (``12`` of ``123``, ``1`` of ``1e5``); so may an error this close to it. Both are retried with more data.
_MARGIN = 16
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def iter_json_array(
    stream: IO[bytes], where: str, chunk_size: int = CHUNK_SIZE
) -> Iterator[tuple[int, Any]]:
    """``(index, element)`` for each element of a top-level JSON array, in order."""
    scanner = _Scanner(stream, where, chunk_size)
    scanner.expect("[", "a JSON array")
    yield from _elements(scanner)
    scanner.expect_end()


def iter_json_object(
    stream: IO[bytes], where: str, chunk_size: int = CHUNK_SIZE
) -> Iterator[tuple[str, int | None, Any]]:
    """Members of a top-level JSON object: ``(key, index, element)`` for each element of a member whose
    value is a non-empty array (streamed), ``(key, None, value)`` for any other member, an empty array
    included (so every member name shows up). COCO annotation files are such objects (``images``,
    ``annotations`` and ``categories`` arrays)."""
    scanner = _Scanner(stream, where, chunk_size)
    scanner.expect("{", "a JSON object")
    if scanner.peek() == "}":
        scanner.advance()
    else:
        while True:
            key = scanner.value()
            if not isinstance(key, str):
                raise scanner.error("expected a member name (a string)")
            scanner.expect(":", "':' after a member name")
            if scanner.peek() == "[":
                scanner.advance()
                empty = True
                for index, element in _elements(scanner, key):
                    empty = False
                    yield key, index, element
                if empty:
                    yield key, None, []
            else:
                yield key, None, scanner.value()
            if scanner.peek() == "}":
                scanner.advance()
                break
            scanner.expect(",", "',' or '}' after a member")
    scanner.expect_end()


def _elements(scanner: _Scanner, member: str | None = None) -> Iterator[tuple[int, Any]]:
    """Elements of an array whose ``[`` has been consumed, up to and including its ``]``."""
    scanner.context = member
    index = 0
    if scanner.peek() == "]":
        scanner.advance()
    else:
        while True:
            scanner.element = index
            yield index, scanner.value()
            index += 1
            if scanner.peek() == "]":
                scanner.advance()
                break
            scanner.expect(",", "',' or ']' after an element")
    scanner.element = None
    scanner.context = None


class _Scanner:
    """A growing text buffer over a byte stream, with positions reported as line, column and byte."""

    def __init__(self, stream: IO[bytes], where: str, chunk_size: int) -> None:
        self.stream = stream
        self.where = where
        self.chunk_size = max(1, chunk_size)
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
        self.json = json.JSONDecoder()
        self.buf = ""
        self.pos = 0
        self.eof = False
        # Of the text already dropped from the buffer: bytes, newlines, characters since the last newline.
        self.dropped_bytes = 0
        self.dropped_lines = 0
        self.dropped_column = 0
        self.element: int | None = None  # index of the array element being read, for errors
        self.context: str | None = None  # object member whose array is being read, for errors

    def fill(self) -> bool:
        """Read more text (at least as much as is buffered, so a huge element costs linear time)."""
        if self.eof:
            return False
        self._drop_consumed()
        size = max(self.chunk_size, len(self.buf))
        try:
            data = self.stream.read(size)
        except OSError as e:
            raise SourceError(f"{self.where}: cannot read: {e}") from e
        self.eof = not data
        try:
            self.buf += self.decoder.decode(data, final=self.eof)
        except UnicodeDecodeError as e:
            offset = self.dropped_bytes + len(self.buf.encode("utf-8")) + e.start
            raise SourceError(f"{self.where}: not valid UTF-8 at byte {offset}") from None
        return True

    def _drop_consumed(self) -> None:
        done = self.buf[: self.pos]
        self.dropped_bytes += len(done.encode("utf-8"))
        newlines = done.count("\n")
        self.dropped_lines += newlines
        self.dropped_column = (
            len(done) - done.rfind("\n") - 1 if newlines else self.dropped_column + len(done)
        )
        self.buf = self.buf[self.pos :]
        self.pos = 0

    def peek(self) -> str:
        """The next non-whitespace character ("" at the end of the stream), not consumed."""
        while True:
            self.pos = _WHITESPACE.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self.fill():
                return self.buf[self.pos : self.pos + 1]

    def advance(self) -> None:
        self.pos += 1

    def expect(self, char: str, what: str) -> None:
        if self.peek() != char:
            raise self.error(f"expected {what}")
        self.advance()

    def expect_end(self) -> None:
        if self.peek() != "":
            raise self.error("unexpected data after the end of the JSON value")

    def value(self) -> Any:
        """Decode one JSON value at the current position, reading more until it is complete."""
        self.peek()
        while True:
            near_end = len(self.buf) - _MARGIN
            try:
                value, end = self.json.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                truncated = e.msg.startswith("Unterminated string") or e.pos > near_end
                if truncated and self.fill():
                    continue
                raise self.error(e.msg.removesuffix(" at"), e.pos) from None
            if end > near_end and self.fill():
                continue
            self.pos = end
            return value

    def error(self, message: str, pos: int | None = None) -> SourceError:
        pos = self.pos if pos is None else pos
        before = self.buf[:pos]
        newlines = before.count("\n")
        line = self.dropped_lines + newlines + 1
        column = (pos - before.rfind("\n") if newlines else self.dropped_column + pos + 1)
        offset = self.dropped_bytes + len(before.encode("utf-8"))
        inside = ""
        if self.element is not None:
            inside = f", in element {self.element}"
            if self.context is not None:
                inside += f" of {self.context!r}"
        return SourceError(
            f"{self.where}: not valid JSON: {message} at line {line} column {column} "
            f"(byte {offset}{inside})"
        )
