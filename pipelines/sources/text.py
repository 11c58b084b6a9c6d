"""Text corpora (UNIMO App. A: BookWiki and OpenWebText) as packed text-only samples.

Every document is split into sentences (``text.splitter``: punkt or rules, ``sentences``) and packed by ``TextConfig``
(``sentences.text_records``). Lines are decoded one by one: a line that is not UTF-8 is a ``non_utf8``
reject at ``file:LINE`` (``file::member:LINE`` inside an archive) and the rest of its document goes on.
Parts are the files ``files`` matches under ``root``.
"""

from __future__ import annotations

import html
import json
import lzma
import posixpath
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from pipelines.sources import Reader, SourceError
from pipelines.sources.common import (
    InputFile,
    decode_utf8,
    line_location,
    listed_inputs,
    match_file_stats,
    match_files,
    member_location,
    open_source,
    relative_to,
    require_exists,
    source_lines,
    strip_bom,
)
from pipelines.sources.sentences import sentence_splitter, text_records
from schemas.config import BookCorpusConfig, OpenWebTextConfig, SourceConfig, TextConfig, WikipediaConfig
from schemas.keys import make_key
from schemas.records import Candidate, Reason, Reject

Where = Callable[[int], str]  # line number -> location
Line = tuple[int, str]  # (line number, decoded text)
Located = tuple[str, str]  # (location, sentence)
Split = Callable[[str], list[str]]  # a paragraph -> its sentences


# --- shared line handling --------------------------------------------------------------------------


def decoded_lines(source: str, lines: Iterable[tuple[int, bytes]], where: Where) -> Iterator[Line | Reject]:
    """``(number, text)`` per line, or a ``non_utf8`` reject for a line that is not UTF-8."""
    for number, raw in lines:
        text = decode_utf8(raw, source, where(number))
        yield text if isinstance(text, Reject) else (number, text)


def paragraph_sentences(items: Iterable[Line | Reject], where: Where, split: Split) -> Iterator[Located | Reject]:
    """Sentences of blank-line separated paragraphs (hard-wrapped lines are joined), each located at
    its paragraph's first line. Rejects pass through and do not end a paragraph."""
    start, lines = 0, []
    for item in chain(items, [(0, "")]):  # a final blank line flushes the last paragraph
        if isinstance(item, Reject):
            yield item
        elif item[1].strip():
            start = start or item[0]
            lines.append(item[1])
        elif lines:
            yield from ((where(start), s) for s in split(" ".join(lines)))
            start, lines = 0, []


def line_sentences(
    items: Iterable[Line | Reject], where: Where, split: Split | None
) -> Iterator[Located | Reject]:
    """Each line a paragraph (WikiExtractor) that ``split`` cuts, or with ``split=None`` a sentence already
    (tokenised BookCorpus); blank lines separate nothing and are skipped."""
    for item in items:
        if isinstance(item, Reject):
            yield item
        elif item[1].strip():
            sentences = split(item[1]) if split else [" ".join(item[1].split())]
            yield from ((where(item[0]), s) for s in sentences)


class _FileReader(Reader):
    """Parts are the files ``config.files`` matches under ``config.root``."""

    config: SourceConfig

    def __init__(self, name: str, config: SourceConfig, text: TextConfig) -> None:
        super().__init__(name, config, text)
        self.split = sentence_splitter(text)

    def parts(self) -> list[str]:
        if self.splits:
            sentence_splitter(self.text, check=True)  # before any pipeline: fail with what to put where
        return match_files(self.config.root, self.config.files)

    def inputs(self, parts: list[str]) -> list[InputFile]:
        """The matched files with size and mtime, from one listing (not a request per file)."""
        return listed_inputs(self.config.root, match_file_stats(self.config.root, self.config.files))

    @property
    def splits(self) -> bool:
        """Whether documents are split into sentences (not when lines are sentences already)."""
        return True

    def relpath(self, path: str) -> str:
        return relative_to(path, self.config.root)


# --- BookCorpus ------------------------------------------------------------------------------------


class BookCorpusReader(_FileReader):
    """``books``: one document per ``.txt`` book, paragraphs separated by blank lines, split into
    sentences. ``lines``: ``books_large_p*.txt``, already one lower-cased tokenised sentence per line:
    each file is one document whose lines are its sentences (blank lines skipped)."""

    config: BookCorpusConfig

    @property
    def splits(self) -> bool:
        return self.config.layout != "lines"

    def read(self, part: str) -> Iterator[Candidate | Reject]:
        relpath = self.relpath(part)
        doc_id = relpath[: -len(".txt")] if relpath.endswith(".txt") else relpath

        def where(number: int) -> str:
            return line_location(relpath, number)

        lines = decoded_lines(self.name, source_lines(part), where)
        if self.config.layout == "lines":
            sentences = line_sentences(lines, where, split=None)
        else:
            sentences = paragraph_sentences(lines, where, self.split)
        yield from text_records(self.name, doc_id, sentences, relpath, self.text)


# --- Wikipedia -------------------------------------------------------------------------------------

_HEADER = re.compile(rb"^\s*<doc(?:\s[^>]*)?>\s*$")
_END = re.compile(rb"^\s*</doc>\s*$")
_ATTRIBUTES = {
    "id": re.compile(r'\sid="([^"]*)"'),
    "url": re.compile(r'\surl="([^"]*)"'),
    "title": re.compile(r'\stitle="(.*)"\s*>'),  # greedy: titles may hold quotes ("Weird Al" Yankovic)
}


@dataclass
class _Doc:
    """A ``<doc>`` block being read: where it starts, its attributes and its lines (or line rejects)."""

    location: str
    attributes: dict[str, str]
    lines: list[Line | Reject] = field(default_factory=list)


class WikipediaReader(_FileReader):
    """WikiExtractor output. Per file: ``<doc id url title>`` blocks (the first line inside repeats the
    title and is dropped; each line is a paragraph) or ``--json`` lines ``{id, revid, url, title, text}``."""

    config: WikipediaConfig

    def read(self, part: str) -> Iterator[Candidate | Reject]:
        relpath = self.relpath(part)
        lines = source_lines(part)
        head = []
        for number, raw in lines:  # the first non-blank line tells the format
            head.append((number, raw))
            if raw.strip():
                break
        if not head or not head[-1][1].strip():
            return  # an empty file holds no documents
        first = head[-1][1].lstrip()
        if first.startswith(b"<doc"):
            yield from self._doc_blocks(chain(head, lines), relpath)
        elif first.startswith(b"{"):
            yield from self._json_lines(chain(head, lines), relpath)
        else:
            raise SourceError(
                f"{part}:{head[-1][0]}: expected WikiExtractor output (<doc ...> blocks or JSON lines), "
                f"got {first[:60]!r}"
            )

    # --- JSON lines --------------------------------------------------------------------------------

    def _json_lines(self, lines: Iterable[tuple[int, bytes]], relpath: str) -> Iterator[Candidate | Reject]:
        for number, raw in lines:
            if not raw.strip():
                continue
            location = line_location(relpath, number)
            text = decode_utf8(raw, self.name, location)
            doc = text if isinstance(text, Reject) else _json_doc(text, self.name, location)
            if isinstance(doc, Reject):
                yield doc
                continue
            sentences = line_sentences(
                [(number, p) for p in doc["text"].split("\n")], lambda n, location=location: location, self.split
            )
            meta = {"title": doc.get("title", ""), "url": doc.get("url", "")}
            yield from text_records(self.name, str(doc["id"]), sentences, location, self.text, meta)

    # --- <doc> blocks ------------------------------------------------------------------------------

    def _doc_blocks(self, lines: Iterable[tuple[int, bytes]], relpath: str) -> Iterator[Candidate | Reject]:
        doc: _Doc | None = None
        for number, raw in lines:
            location = line_location(relpath, number)
            if _HEADER.match(raw):
                if doc is not None:
                    yield from self._unterminated(doc, f"a new <doc> starts at line {number}")
                doc, reject = self._open(raw, location)
                if reject is not None:
                    yield reject
            elif _END.match(raw):
                if doc is None:
                    yield Reject(self.name, location, Reason.MALFORMED, "</doc> without an open <doc>")
                else:
                    yield from self._close(doc, relpath)
                doc = None
            else:
                text = decode_utf8(raw, self.name, location)
                line = text if isinstance(text, Reject) else (number, text)
                if doc is not None:
                    doc.lines.append(line)
                elif isinstance(line, Reject):
                    yield line
                elif text.strip():
                    yield Reject(self.name, location, Reason.MALFORMED, "text outside <doc> ... </doc>")
        if doc is not None:
            yield from self._unterminated(doc, "the file ends first")

    def _open(self, raw: bytes, location: str) -> tuple[_Doc, Reject | None]:
        """A new block from its header line; a header that is not UTF-8 is a reject, the block goes on."""
        text = decode_utf8(raw, self.name, location)
        reject = text if isinstance(text, Reject) else None
        header = raw.decode("utf-8", errors="replace").strip()
        attributes = {}
        for name, pattern in _ATTRIBUTES.items():
            match = pattern.search(header)
            if match:
                attributes[name] = html.unescape(match.group(1))
        return _Doc(location, attributes), reject

    def _close(self, doc: _Doc, relpath: str) -> Iterator[Candidate | Reject]:
        doc_id = doc.attributes.get("id")
        if not doc_id:
            yield from (line for line in doc.lines if isinstance(line, Reject))
            yield Reject(self.name, doc.location, Reason.MALFORMED, "<doc> without an id attribute")
            return
        title = doc.attributes.get("title", "")
        lines = doc.lines
        first = next((i for i, line in enumerate(lines) if not isinstance(line, Reject)), None)
        if first is not None and html.unescape(lines[first][1].strip()) == title.strip():
            lines = lines[:first] + lines[first + 1 :]  # the title line WikiExtractor repeats
        sentences = line_sentences(lines, lambda number: line_location(relpath, number), self.split)
        meta = {"title": title, "url": doc.attributes.get("url", "")}
        yield from text_records(self.name, doc_id, sentences, doc.location, self.text, meta)

    def _unterminated(self, doc: _Doc, why: str) -> Iterator[Reject]:
        """A block without ``</doc>`` may be cut anywhere: the whole document is refused."""
        yield from (line for line in doc.lines if isinstance(line, Reject))
        doc_id = doc.attributes.get("id")
        key = make_key(self.name, doc_id) if doc_id else None
        detail = f"<doc id={doc_id!r}> is not closed by </doc>: {why}"
        yield Reject(self.name, doc.location, Reason.MALFORMED, detail, key)


def _json_doc(text: str, source: str, location: str) -> dict[str, Any] | Reject:
    """A WikiExtractor ``--json`` line as a dict with a str/int ``id`` and str ``text`` (``url`` and
    ``title`` strings when present), or a ``malformed`` reject saying what is wrong."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        return Reject(source, location, Reason.MALFORMED, f"not JSON: {e}")
    if not isinstance(doc, dict):
        return Reject(source, location, Reason.MALFORMED, f"expected a JSON object, got {type(doc).__name__}")
    problems = []
    if not isinstance(doc.get("id"), (str, int)) or isinstance(doc.get("id"), bool) or doc.get("id") == "":
        problems.append("id")
    if not isinstance(doc.get("text"), str):
        problems.append("text")
    problems += [name for name in ("url", "title") if not isinstance(doc.get(name, ""), str)]
    if problems:
        return Reject(source, location, Reason.MALFORMED, f"missing or wrong type: {', '.join(problems)}")
    try:
        doc["text"].encode("utf-8")
    except UnicodeEncodeError:
        return Reject(source, location, Reason.NON_UTF8, "text holds an unpaired surrogate escape")
    return doc


# --- OpenWebText -----------------------------------------------------------------------------------


class OpenWebTextReader(_FileReader):
    """Each ``urlsf_subsetNN-M_data.xz`` is an xz-compressed tar of ``.txt`` documents (one web page
    each), streamed with lzma + tarfile (``r|``). ``doc_id`` is the member name without ``.txt``."""

    config: OpenWebTextConfig

    def read(self, part: str) -> Iterator[Candidate | Reject]:
        relpath = self.relpath(part)
        require_exists(part)
        with open_source(part) as raw:
            try:
                with lzma.open(raw) as xz, tarfile.open(fileobj=xz, mode="r|") as tar:
                    for member in tar:
                        if member.isfile():
                            data = tar.extractfile(member).read()
                            yield from self._document(relpath, member.name, data)
            except (lzma.LZMAError, tarfile.TarError, EOFError, OSError) as e:
                raise SourceError(f"{part}: not a readable xz-compressed tar: {e}") from e

    def _document(self, relpath: str, member: str, data: bytes) -> Iterator[Candidate | Reject]:
        location = member_location(relpath, member)
        name = posixpath.normpath(member)
        doc_id = name[: -len(".txt")] if name.endswith(".txt") else name

        def where(number: int) -> str:
            return f"{location}:{number}"

        lines = ((n, raw.rstrip(b"\r")) for n, raw in enumerate(strip_bom(data).split(b"\n"), start=1))
        sentences = paragraph_sentences(decoded_lines(self.name, lines, where), where, self.split)
        yield from text_records(self.name, doc_id, sentences, location, self.text)
