"""Text corpora as samples: English sentence splitters, packing, and text candidates.

The text corpora of UNIMO App. A (BookWiki, OpenWebText) become text-only samples of the unified
format: one sentence each, or whole consecutive sentences of a document up to ``max_tokens``
whitespace tokens (``TextConfig``, docs/SOURCES.md "Text packing"). Two splitters (``text.splitter``):
``punkt`` (the default), NLTK's unsupervised punkt model (Kiss & Strunk 2006) with its English
parameters read from the NLTK data folder, and ``rules``, a rule-based splitter that needs no data
files; it favours not splitting where a rule is unsure (an abbreviation, an initial, a lower-case
continuation), since a merged pair of sentences still makes a valid text sample while a cut one does not.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from pipelines.nltk_data import PUNKT, data_dir, punkt_tokenizer, require
from schemas.config import TextConfig
from schemas.keys import make_key
from schemas.records import Candidate, Modality, Reason, Reject

T = TypeVar("T")

# A terminator run (". ! ? ... …" and combinations) with closing quotes/brackets, then whitespace or end.
_BOUNDARY = re.compile(r"""(?P<term>[.!?…]+)(?P<close>["'”’»)\]}]*)(?=\s|$)""")
_OPENERS = "\"'“‘«([{"
# Abbreviations that (almost) never end a sentence: titles before names, "vs.", "cf.", "St. Louis".
_ABBREVIATIONS = frozenset(
    "mr mrs ms mx dr prof rev fr hon gen col lt sgt capt cmdr adm maj gov sen rep pres supt "
    "st mt ft vs cf approx ca viz".split()
)
# Abbreviations that do not end a sentence when a number follows: "No. 5", "p. 12", "Sept. 11".
_BEFORE_NUMBER = frozenset(
    "no nos vol vols p pp fig figs ch chap sec art eq eqs ref refs op ed "
    "jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
# Dotted abbreviations and initials: "U.S", "e.g", "i.e", "Ph.D", "a.m", and a single letter ("J. R.
# R. Tolkien") other than the pronoun "I", which often ends a sentence ("... than I. He").
_DOTTED = re.compile(r"(?:[A-Za-z]{1,2}\.)+[A-Za-z]{1,2}|[A-HJ-Za-z]")


def split_sentences(text: str) -> list[str]:
    """English sentences of ``text`` (a paragraph), whitespace collapsed. A boundary is a terminator
    (``.``, ``!``, ``?``, an ellipsis), optionally followed by closing quotes or brackets, then white
    space and a word that does not start in lower case; after a single ``.``, not when the word before
    it is a known abbreviation or initial. Decimals (``3.14``) have no space after the dot."""
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(text):
        if _is_boundary(text, match):
            sentences.append(text[start : match.end()])
            start = match.end()
    sentences.append(text[start:])
    return [s for s in (" ".join(part.split()) for part in sentences) if s]


# What punkt's English parameters lack and scholarly or encyclopaedic prose has ("et al. (2021)", "Fig. 2",
# "e.g. a dog"): the rules' abbreviations, added to punkt's own (it still splits after one when the next
# word is a likely sentence start).
PUNKT_ABBREVIATIONS = tuple(sorted(_ABBREVIATIONS | _BEFORE_NUMBER | {"al", "e.g", "i.e", "etc", "resp", "w.r.t"}))


class PunktSplitter:
    """``split_sentences`` with NLTK's punkt (English parameters plus ``PUNKT_ABBREVIATIONS``), whitespace
    collapsed the same way. Punkt weighs only a ``.``; after ``!`` or ``?`` it always cuts, so a piece
    that starts in lower case (``"Go!" she said.``) is joined back, as the rules do. Picklable (it holds
    only the configured data folder, resolved where it runs: a worker may have its own ``NLTK_DATA``)
    and options; the model loads once per process."""

    def __init__(
        self, folder: str | None, abbreviations: tuple[str, ...] = PUNKT_ABBREVIATIONS, join_lower: bool = True
    ):
        self.folder, self.abbreviations, self.join_lower = folder, abbreviations, join_lower

    def __call__(self, text: str) -> list[str]:
        sentences: list[str] = []
        for piece in punkt_tokenizer(data_dir(self.folder), self.abbreviations).tokenize(text):
            piece = " ".join(piece.split())
            if sentences and self.join_lower and piece[:1].islower():
                sentences[-1] += " " + piece
            elif piece:
                sentences.append(piece)
        return sentences


def sentence_splitter(config: TextConfig, check: bool = False) -> Callable[[str], list[str]]:
    """The splitter ``text.splitter`` names; ``check``: fail now, saying what to put where, when punkt's
    parameters are not in the NLTK data folder (a stage calls this before its pipeline starts)."""
    if config.splitter == "rules":
        return split_sentences
    if check:
        require(data_dir(config.nltk_data), PUNKT, "text.splitter", "punkt")
    return PunktSplitter(config.nltk_data)


def _is_boundary(text: str, match: re.Match) -> bool:
    following = text[match.end() :].lstrip()
    if not following:
        return True
    if following[0].islower():
        return False  # a sentence starts with a capital, digit or quote: '"Help!" she cried.'
    if match.group("term") != ".":
        return True  # "!", "?", "?!" and ellipses before a capital
    word = text[: match.start()].rsplit(None, 1)[-1:] or [""]
    return not _is_abbreviation(word[0].lstrip(_OPENERS), following)


def _is_abbreviation(word: str, following: str) -> bool:
    """Whether ``word`` (the text before a single ``.``) is an abbreviation the dot belongs to."""
    lower = word.lower()
    if lower in _ABBREVIATIONS or _DOTTED.fullmatch(word):
        return True
    return lower in _BEFORE_NUMBER and following[0].isdigit()


def iter_chunks(
    items: Iterable[T], config: TextConfig, text_of: Callable[[T], str] = str
) -> Iterator[list[T]]:
    """Streaming ``pack``: chunks of ``items`` (whose sentence is ``text_of(item)``) as they fill."""
    if config.pack == "sentence":
        for item in items:
            yield [item]
        return
    if config.pack != "tokens":
        raise ValueError(f"unknown text packing {config.pack!r} (expected 'sentence' or 'tokens')")
    chunk: list[T] = []
    used = 0
    for item in items:
        tokens = len(text_of(item).split())
        if chunk and used + tokens > config.max_tokens:
            yield chunk
            chunk, used = [], 0
        chunk.append(item)
        used += tokens
    if chunk:
        yield chunk


def pack(sentences: Iterable[str], config: TextConfig) -> list[list[str]]:
    """``sentence``: one chunk per sentence; ``tokens``: greedy whole consecutive sentences up to
    ``max_tokens`` whitespace tokens, a longer sentence alone in its chunk."""
    return list(iter_chunks(sentences, config))


def text_records(
    source: str,
    doc_id: str,
    items: Iterable[tuple[str, str] | Reject],
    location: str,
    config: TextConfig,
    meta: dict[str, Any] | None = None,
) -> Iterator[Candidate | Reject]:
    """Text candidates of one document (UNIMO App. A text corpora, docs/SOURCES.md).

    ``items`` are ``(location, sentence)`` in document order, with rejects of bad lines among them
    (passed on as they come, so a long document is streamed). Chunk ``c`` becomes a text candidate
    keyed ``make_key(source, doc_id, c)`` at the location of its first sentence, with ``meta`` plus
    ``doc_id``, ``chunk`` and ``sentences`` (how many it packs). A document without a sentence is one
    ``empty_text`` reject at ``location``.
    """
    rejects: list[Reject] = []

    def sentences() -> Iterator[tuple[str, str]]:
        for item in items:
            if isinstance(item, Reject):
                rejects.append(item)
            else:
                yield item

    chunks = 0
    for chunk in iter_chunks(sentences(), config, text_of=lambda item: item[1]):
        yield from _drain(rejects)
        yield _text_candidate(source, doc_id, chunks, chunk, meta)
        chunks += 1
    yield from _drain(rejects)
    if chunks == 0:
        key = make_key(source, doc_id)
        yield Reject(source, location, Reason.EMPTY_TEXT, f"document {doc_id!r} has no text", key)


def _drain(rejects: list[Reject]) -> Iterator[Reject]:
    while rejects:
        yield rejects.pop(0)


def _text_candidate(
    source: str, doc_id: str, chunk: int, sentences: Sequence[tuple[str, str]], meta: dict[str, Any] | None
) -> Candidate:
    source_id = f"{doc_id}-{chunk}"  # make_key(source, source_id) == make_key(source, doc_id, chunk)
    return Candidate(
        key=make_key(source, doc_id, chunk),
        source=source,
        modality=Modality.TEXT,
        source_id=source_id,
        location=sentences[0][0],
        text=" ".join(sentence for _, sentence in sentences),
        meta={**(meta or {}), "doc_id": doc_id, "chunk": chunk, "sentences": len(sentences)},
    )
