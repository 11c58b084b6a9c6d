"""Text corpora: BookCorpus (one ``.txt`` per book, or ``books_large_p*.txt`` one sentence a line),
WikiExtractor output (``<doc>`` blocks or JSON lines) and OpenWebText (``.xz`` tars of ``.txt`` pages).

With ``text: {pack: sentence}`` every sentence is one sample, so a source's expected sample count is
the number of sentences on its valid lines (prose.py guarantees they split unambiguously). No sentence
is written twice (``Tally.sentences``) except the ``COPIED`` ones, planted in books, Wikipedia articles
and web pages for exact text dedup: each copy is recorded with its sample key, ``make_key(source,
doc_id, sentence number in the document)`` (docs/SOURCES.md "Text packing").
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import random

from pipelines.minicorpus import prose
from pipelines.minicorpus.common import Tally, tar_bytes, write_bytes, write_lines
from schemas.keys import make_key
from schemas.records import Reason

BOOKS_DIR = "books1/epubtxt"
BOOKS_PER_SCALE = 4
LINES_FILES = ("books_large_p1.txt", "books_large_p2.txt")
LINES_PER_FILE_PER_SCALE = 30
WIKI_DOCS_PER_FILE_PER_SCALE = 4
OWT_FILES = ("openwebtext/urlsf_subset00-1_data.xz", "openwebtext/urlsf_subset00-2_data.xz")
OWT_DOCS_PER_FILE_PER_SCALE = 5

NON_UTF8_LINE = "The caf\xe9 by the harbour had a blue door and a red awning.".encode("latin-1")

# Sentences planted in several documents (exact text dedup): 0 in two books and a <doc> article,
# 1 in a book and (in capitals) a web page, 2 in a JSON-lines article and a web page.
COPIED = (
    "The lighthouse keeper of Port Ellen counted forty boats before noon.",
    "Snow fell on the market square of Kingsbridge for three whole days.",
    "Nobody in Lowmoor remembered who had planted the crooked pear tree by the mill.",
)


def _paragraphs(rng: random.Random, low: int, high: int, tally: Tally) -> list[list[str]]:
    return [prose.paragraph(rng, seen=tally.sentences) for _ in range(rng.randint(low, high))]


def _plant(rng: random.Random, paragraphs: list[list[str]], text: str) -> int:
    """``text`` as a sentence of a random paragraph; returns its sentence number in the document."""
    at = rng.randrange(len(paragraphs))
    within = rng.randrange(len(paragraphs[at]) + 1)
    paragraphs[at].insert(within, text)
    return _count(paragraphs[:at]) + within


def _copy(rng: random.Random, paragraphs: list[list[str]], which: int, tally: Tally, doc_id: str,
          text: str | None = None) -> None:
    """Plant ``COPIED[which]`` (written as ``text``, a variant) in a document and record its key."""
    chunk = _plant(rng, paragraphs, COPIED[which] if text is None else text)
    tally.copy(COPIED[which], make_key(tally.name, doc_id, chunk))


def _count(paragraphs: list[list[str]]) -> int:
    return sum(len(p) for p in paragraphs)


def write_books(root: str, rng: random.Random, scale: int, tally: Tally) -> None:
    """One file per book: paragraphs one per line, separated by blank lines."""
    n = BOOKS_PER_SCALE * scale
    empty_at = rng.randrange(n + 1)
    good = [i for i in range(n + 1) if i != empty_at]
    copies = {good[0]: 0, good[1]: 0, good[-1]: 1}  # book -> COPIED sentence
    for i in range(n + 1):
        slug = "-".join(prose.title(rng).lower().split())
        rel = f"{BOOKS_DIR}/{i:04d}-{slug}.epub.txt"
        if i == empty_at:
            write_bytes(os.path.join(root, rel), b"\n\n")
            tally.reject(Reason.EMPTY_TEXT, rel, "a book with no text")
            continue
        paragraphs = _paragraphs(rng, 4, 9, tally)
        if i in copies:
            _copy(rng, paragraphs, copies[i], tally, rel[: -len(".txt")])
        lines: list[bytes | str] = []
        for p in paragraphs:
            lines += [" ".join(p), ""]
        if i == (empty_at + 1) % (n + 1):
            at = 2 * rng.randrange(1, len(paragraphs))  # a paragraph of its own, between two others
            lines[at:at] = [NON_UTF8_LINE, ""]
            tally.reject(Reason.NON_UTF8, f"{rel}:{at + 1}", "a Latin-1 byte")
        write_lines(os.path.join(root, rel), lines)
        tally.sample(_count(paragraphs))


def write_book_lines(root: str, rng: random.Random, scale: int, tally: Tally) -> None:
    """``books_large_p*.txt``: one lower-cased, tokenised sentence per line."""
    for f, name in enumerate(LINES_FILES):
        lines: list[bytes | str] = [prose.tokenised(prose.sentence(rng, abbreviations=False, seen=tally.sentences))
                                    for _ in range(LINES_PER_FILE_PER_SCALE * scale)]
        tally.sample(len(lines))
        if f == 0:
            at = rng.randrange(1, len(lines))
            lines.insert(at, prose.tokenised(NON_UTF8_LINE.decode("latin-1")).encode("latin-1"))
            tally.reject(Reason.NON_UTF8, f"{name}:{at + 1}", "a Latin-1 byte")
        write_lines(os.path.join(root, name), lines)


def _doc_block(doc_id: int, title: str, paragraphs: list[bytes | str], close: bool = True) -> list[bytes | str]:
    """WikiExtractor's default output: header, title line, blank line, text lines, blank line, ``</doc>``."""
    url = f"https://en.wikipedia.org/wiki?curid={doc_id}"
    lines: list[bytes | str] = [f'<doc id="{doc_id}" url="{url}" title="{title}">', title, "", *paragraphs]
    return lines + ["", "</doc>"] if close else lines


def write_wiki(root: str, rng: random.Random, scale: int, tally: Tally) -> None:
    """``AA/wiki_00``, ``AA/wiki_01``: ``<doc>`` blocks; ``AB/wiki_00``: ``--json`` lines."""
    n = WIKI_DOCS_PER_FILE_PER_SCALE * scale
    ids = iter(sorted(rng.sample(range(10, 70_000_000), 3 * n + 10)))

    # AA/wiki_00: good documents, one with no text, and at the end one without </doc>.
    lines: list[bytes | str] = []
    empty_at = rng.randrange(n + 1)
    for i in range(n + 1):
        doc_id, title = next(ids), prose.title(rng)
        if i == empty_at:
            lines += _doc_block(doc_id, title, [])
            tally.reject(Reason.EMPTY_TEXT, "AA/wiki_00", f"document {doc_id} has no text")
            continue
        paragraphs = _paragraphs(rng, 2, 5, tally)
        if i == (empty_at + 1) % (n + 1):
            _copy(rng, paragraphs, 0, tally, str(doc_id))
        lines += _doc_block(doc_id, title, [" ".join(p) for p in paragraphs])
        tally.sample(_count(paragraphs))
    doc_id = next(ids)
    lines += _doc_block(doc_id, prose.title(rng), [" ".join(p) for p in _paragraphs(rng, 2, 4, tally)], close=False)
    tally.reject(Reason.MALFORMED, "AA/wiki_00", f"document {doc_id} has no </doc> before the end of the file")
    write_lines(os.path.join(root, "AA", "wiki_00"), lines)

    # AA/wiki_01: good documents, one line of one of them not UTF-8.
    lines = []
    bad_doc = rng.randrange(n)
    for i in range(n):
        doc_id, title = next(ids), prose.title(rng)
        paragraphs = _paragraphs(rng, 2, 5, tally)
        text: list[bytes | str] = [" ".join(p) for p in paragraphs]
        if i == bad_doc:
            at = rng.randrange(1, len(text) + 1)
            text.insert(at, NON_UTF8_LINE)
            tally.reject(Reason.NON_UTF8, f"AA/wiki_01:{len(lines) + 4 + at}", f"a Latin-1 byte in document {doc_id}")
        lines += _doc_block(doc_id, title, text)
        tally.sample(_count(paragraphs))
    write_lines(os.path.join(root, "AA", "wiki_01"), lines)

    # AB/wiki_00: JSON lines, one document with empty text, one truncated line.
    records: list[str] = []
    for i in range(n):
        doc_id, title = next(ids), prose.title(rng)
        paragraphs = _paragraphs(rng, 2, 5, tally)
        if i == 0:
            _copy(rng, paragraphs, 2, tally, str(doc_id))
        records.append(_json_doc(rng, doc_id, title, "\n".join(" ".join(p) for p in paragraphs)))
        tally.sample(_count(paragraphs))
    doc_id = next(ids)
    records.insert(rng.randrange(1, n + 1), _json_doc(rng, doc_id, prose.title(rng), ""))
    tally.reject(Reason.EMPTY_TEXT, "AB/wiki_00", f"document {doc_id} has empty text")
    broken = _json_doc(rng, next(ids), prose.title(rng), "The red ball.")
    at = rng.randrange(1, len(records) + 1)
    records.insert(at, broken[: broken.index('"title"') + 12])  # cut off mid-string
    tally.reject(Reason.MALFORMED, f"AB/wiki_00:{at + 1}", "a JSON line cut short")
    write_lines(os.path.join(root, "AB", "wiki_00"), records)


def _json_doc(rng: random.Random, doc_id: int, title: str, text: str) -> str:
    url = f"https://en.wikipedia.org/wiki?curid={doc_id}"
    return json.dumps({"id": str(doc_id), "revid": str(rng.randint(10**8, 10**9)), "url": url, "title": title,
                       "text": text})


def write_openwebtext(root: str, rng: random.Random, scale: int, tally: Tally) -> None:
    """Each ``urlsf_subsetNN-M_data.xz`` is an xz-compressed tar of ``NNNNNNN-<md5>.txt`` pages."""
    number = 0
    for f, rel in enumerate(OWT_FILES):
        n = OWT_DOCS_PER_FILE_PER_SCALE * scale
        special = rng.randrange(n)
        copy_at = (special + 1) % n  # a page that gets COPIED[1] (file 0, in capitals) or COPIED[2] (file 1)
        members = []
        for i in range(n):
            chunk = None
            if f == 0 and i == special:
                data = b""
                tally.reject(Reason.EMPTY_TEXT, rel, "an empty page")
            else:
                paragraphs = _paragraphs(rng, 2, 6, tally)
                if i == copy_at:
                    chunk = _plant(rng, paragraphs, COPIED[1].upper() if f == 0 else COPIED[2])
                blocks: list[bytes] = [" ".join(p).encode("utf-8") for p in paragraphs]
                if f == 1 and i == special:
                    at = rng.randrange(1, len(blocks) + 1)
                    blocks.insert(at, NON_UTF8_LINE)
                    tally.reject(Reason.NON_UTF8, rel, "a Latin-1 byte in a page")
                data = b"\n\n".join(blocks) + b"\n"
                tally.sample(_count(paragraphs))
            doc_id = f"{number:07d}-{hashlib.md5(data).hexdigest()}"
            if chunk is not None:
                tally.copy(COPIED[1 + f], make_key(tally.name, doc_id, chunk))
            members.append((f"{doc_id}.txt", data))
            number += 1
        write_bytes(os.path.join(root, rel), lzma.compress(tar_bytes(members), format=lzma.FORMAT_XZ))
