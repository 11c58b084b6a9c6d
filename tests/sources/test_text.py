import io
import json
import lzma
import tarfile
from pathlib import Path

import pytest

from pipelines.sources import SourceError
from pipelines.sources.text import BookCorpusReader, OpenWebTextReader, WikipediaReader
from schemas.config import BookCorpusConfig, OpenWebTextConfig, TextConfig, WikipediaConfig
from schemas.keys import make_key
from schemas.records import Candidate, Modality
from tests.sources.helpers import by_location, read_all, split


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def texts(candidates: list[Candidate], doc_id: str) -> list[str]:
    return [c.text for c in candidates if c.meta["doc_id"] == doc_id]


def assert_text_candidates(candidates: list[Candidate], source: str) -> None:
    for c in candidates:
        assert c.modality is Modality.TEXT and c.image_path is None and c.image_bytes is None
        assert c.key == make_key(source, c.meta["doc_id"], c.meta["chunk"])
        assert c.text and c.meta["sentences"] >= 1


# --- BookCorpus ------------------------------------------------------------------------------------

BOOK = (
    b"Chapter One\n"  # 1
    b"\n"  # 2
    b"It was a dark night. Mr. Smith\n"  # 3: a paragraph hard-wrapped over lines 3-5
    b"waited by the door\xff\xfe.\n"  # 4: not UTF-8
    b"He left at 3.14 a.m. sharp!\n"  # 5
    b"\n\n"  # 6-7
    b'"Go!" she said. Then silence.\n'  # 8
)


def test_books_layout(tmp_path):
    write(tmp_path / "books1/epubtxt/dark-night.epub.txt", BOOK)
    write(tmp_path / "books1/epubtxt/blank.epub.txt", "\n  \n\t\n")
    write(tmp_path / "top.txt", "Root level book. Found by **/*.txt too.")
    config = BookCorpusConfig(root=str(tmp_path))
    reader = BookCorpusReader("books", config, TextConfig())
    assert [Path(p).name for p in reader.parts()] == ["blank.epub.txt", "dark-night.epub.txt", "top.txt"]
    candidates, rejects = split(read_all(reader))
    assert by_location(rejects) == {
        "books1/epubtxt/dark-night.epub.txt:4": "non_utf8",
        "books1/epubtxt/blank.epub.txt": "empty_text",
    }
    assert_text_candidates(candidates, "books")
    doc = "books1/epubtxt/dark-night.epub"
    assert texts(candidates, doc) == [
        "Chapter One",
        "It was a dark night.",
        "Mr. Smith He left at 3.14 a.m. sharp!",  # the rest of the paragraph goes on without line 4
        '"Go!" she said.',
        "Then silence.",
    ]
    located = [(c.location, c.meta["chunk"]) for c in candidates if c.meta["doc_id"] == doc]
    assert located == [(f"{doc}.txt:{line}", chunk) for chunk, line in enumerate([1, 3, 3, 8, 8])]
    assert texts(candidates, "top") == ["Root level book.", "Found by **/*.txt too."]
    first = candidates[[c.meta["doc_id"] for c in candidates].index(doc)]
    assert first.meta == {"doc_id": doc, "chunk": 0, "sentences": 1}
    assert first.source_id == f"{doc}-0"


def test_books_layout_token_packing(tmp_path):
    write(tmp_path / "b.txt", BOOK)
    config = BookCorpusConfig(root=str(tmp_path))
    candidates, _ = split(read_all(BookCorpusReader("books", config, TextConfig(pack="tokens", max_tokens=8))))
    assert [(c.text, c.meta["sentences"]) for c in candidates] == [
        ("Chapter One It was a dark night.", 2),
        ("Mr. Smith He left at 3.14 a.m. sharp!", 1),
        ('"Go!" she said. Then silence.', 2),
    ]
    assert [c.key for c in candidates] == [make_key("books", "b", i) for i in range(3)]


def test_lines_layout(tmp_path):
    data = b"the dog barked .\n\nit was , he said , late .\nbad \xc3\x28 line .\n  mr. smith left .  \n"
    write(tmp_path / "books_large_p1.txt", data)
    config = BookCorpusConfig(root=str(tmp_path), files="books_large_p*.txt", layout="lines")
    candidates, rejects = split(read_all(BookCorpusReader("bc", config, TextConfig())))
    assert by_location(rejects) == {"books_large_p1.txt:4": "non_utf8"}
    assert [(c.text, c.location, c.key) for c in candidates] == [
        ("the dog barked .", "books_large_p1.txt:1", make_key("bc", "books_large_p1", 0)),
        ("it was , he said , late .", "books_large_p1.txt:3", make_key("bc", "books_large_p1", 1)),
        ("mr. smith left .", "books_large_p1.txt:5", make_key("bc", "books_large_p1", 2)),
    ]


def test_no_files_match(tmp_path):
    reader = BookCorpusReader("bc", BookCorpusConfig(root=str(tmp_path), files="*.txt"), TextConfig())
    with pytest.raises(SourceError, match=r"no files match \*\.txt"):
        reader.parts()


def wikipedia(root: Path) -> WikipediaReader:
    return WikipediaReader("wiki", WikipediaConfig(root=str(root)), TextConfig())


# --- Wikipedia -------------------------------------------------------------------------------------

WIKI_DOCS = (
    b'<doc id="12" url="https://en.wikipedia.org/wiki?curid=12" title="Anarchism">\n'  # 1
    b"Anarchism\n"  # 2: the title again
    b"\n"  # 3
    b"Anarchism is a political philosophy. It is sceptical of authority.\n"  # 4
    b"Bad \xff line here.\n"  # 5
    b"The word comes from Greek.\n"  # 6
    b"</doc>\n"  # 7
    b'<doc id="25" url="https://en.wikipedia.org/wiki?curid=25" title="&quot;Weird Al&quot; Yankovic">\n'  # 8
    b'"Weird Al" Yankovic\n'  # 9
    b"\n"  # 10
    b"</doc>\n"  # 11: empty document
    b'<doc id="39" url="u39" title="Unclosed">\n'  # 12: never closed
    b"Unclosed\n"  # 13
    b"Some text.\n"  # 14
    b'<doc id="40" url="u40" title="Albedo">\n'  # 15
    b"Albedo\n"  # 16
    b"Albedo is a measure of reflection.\n"  # 17
    b"</doc>\n"  # 18
    b"stray text\n"  # 19
    b"</doc>\n"  # 20: close without open
    b'<doc id="41" url="u41" title="Cut">\n'  # 21: the file ends inside
    b"Cut\n"  # 22
    b"Cut short \xff.\n"  # 23
)


def test_wikipedia_doc_blocks(tmp_path):
    write(tmp_path / "AA/wiki_00", WIKI_DOCS)
    reader = wikipedia(tmp_path)
    candidates, rejects = split(read_all(reader))
    assert by_location(rejects) == {
        "AA/wiki_00:5": "non_utf8",
        "AA/wiki_00:8": "empty_text",
        "AA/wiki_00:12": "malformed",
        "AA/wiki_00:19": "malformed",
        "AA/wiki_00:20": "malformed",
        "AA/wiki_00:21": "malformed",
        "AA/wiki_00:23": "non_utf8",
    }
    assert_text_candidates(candidates, "wiki")
    assert texts(candidates, "12") == [
        "Anarchism is a political philosophy.",
        "It is sceptical of authority.",
        "The word comes from Greek.",
    ]
    locations = [c.location for c in candidates if c.meta["doc_id"] == "12"]
    assert locations == ["AA/wiki_00:4", "AA/wiki_00:4", "AA/wiki_00:6"]
    assert candidates[0].meta == {
        "title": "Anarchism",
        "url": "https://en.wikipedia.org/wiki?curid=12",
        "doc_id": "12",
        "chunk": 0,
        "sentences": 1,
    }
    assert texts(candidates, "40") == ["Albedo is a measure of reflection."]
    assert {c.meta["doc_id"] for c in candidates} == {"12", "40"}
    # every document is accounted for: candidates, or one reject keyed by the document
    documents = {make_key("wiki", c.meta["doc_id"]) for c in candidates} | {r.key for r in rejects if r.key}
    assert documents == {make_key("wiki", doc_id) for doc_id in ("12", "25", "39", "40", "41")}
    unclosed = {r.location: r for r in rejects}["AA/wiki_00:12"]
    assert unclosed.key == make_key("wiki", "39") and "</doc>" in unclosed.detail
    empty = {r.location: r for r in rejects}["AA/wiki_00:8"]
    assert empty.key == make_key("wiki", "25")


def test_wikipedia_title_with_quotes(tmp_path):
    doc = b'<doc id="7" url="u" title="The "Quoted" Title">\nThe "Quoted" Title\nBody text.\n</doc>\n'
    write(tmp_path / "AB/wiki_01", doc)
    candidates, rejects = split(read_all(wikipedia(tmp_path)))
    assert rejects == []
    assert [(c.text, c.meta["title"]) for c in candidates] == [("Body text.", 'The "Quoted" Title')]


def test_wikipedia_json_lines(tmp_path):
    lines = [
        json.dumps(
            {"id": "12", "revid": "1", "url": "u12", "title": "Anarchism", "text": "First para. Second.\nNext para."}
        ),
        "{not json",
        json.dumps({"id": "13", "url": "u13", "title": "No text"}),
        json.dumps(["a", "list"]),
        "",
        json.dumps({"id": "14", "revid": "2", "url": "u14", "title": "Empty", "text": "  \n "}),
        json.dumps({"id": "15", "title": "Bad", "text": "caf\u00e9"}, ensure_ascii=False).replace("é", "\udcff"),
        json.dumps(
            {"id": 16, "revid": "3", "url": "u16", "title": "Ünïcode", "text": "Ça va. Très bien."}, ensure_ascii=False
        ),
    ]
    data = "\n".join(lines).encode("utf-8", errors="surrogateescape") + b"\n"
    write(tmp_path / "AA/wiki_00", data)
    candidates, rejects = split(read_all(wikipedia(tmp_path)))
    assert by_location(rejects) == {
        "AA/wiki_00:2": "malformed",
        "AA/wiki_00:3": "malformed",
        "AA/wiki_00:4": "malformed",
        "AA/wiki_00:6": "empty_text",
        "AA/wiki_00:7": "non_utf8",
    }
    assert_text_candidates(candidates, "wiki")
    assert [(c.text, c.location) for c in candidates if c.meta["doc_id"] == "12"] == [
        ("First para.", "AA/wiki_00:1"),
        ("Second.", "AA/wiki_00:1"),
        ("Next para.", "AA/wiki_00:1"),
    ]
    assert candidates[0].meta == {"title": "Anarchism", "url": "u12", "doc_id": "12", "chunk": 0, "sentences": 1}
    # punkt (the default splitter) knows "Va." (Virginia) as an abbreviation before an unknown capitalised word
    assert texts(candidates, "16") == ["Ça va. Très bien."]
    assert candidates[-1].meta["title"] == "Ünïcode"


def test_wikipedia_files_and_formats(tmp_path):
    write(tmp_path / "AA/wiki_00", b"")
    write(tmp_path / "AA/wiki_01", b"\n\n" + WIKI_DOCS[:300])
    write(tmp_path / "AB/wiki_00", b"plain text, not WikiExtractor output\n")
    reader = wikipedia(tmp_path)
    parts = reader.parts()
    assert [p[len(str(tmp_path)) + 1 :] for p in parts] == ["AA/wiki_00", "AA/wiki_01", "AB/wiki_00"]
    assert list(reader.read(parts[0])) == []
    assert any(isinstance(r, Candidate) for r in reader.read(parts[1]))
    with pytest.raises(SourceError, match="AB/wiki_00:1"):
        list(reader.read(parts[2]))


# --- OpenWebText -----------------------------------------------------------------------------------


def write_owt(path: Path, members: dict[str, bytes]) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return write(path, lzma.compress(buffer.getvalue()))


OWT = {
    "0000001-4a1b2c.txt": b"Breaking news today. Markets rose 2.5 percent.\n\nAnalysts were surprised.\n",
    "0000002-5d6e7f.txt": b"First line is fine.\r\nSecond \x80 line is not.\r\nThird line goes on.\r\n",
    "0000003-8a9b0c.txt": b"\n   \n",
}


def test_openwebtext(tmp_path):
    write_owt(tmp_path / "openwebtext/urlsf_subset00-1_data.xz", OWT)
    write_owt(tmp_path / "openwebtext/urlsf_subset00-2_data.xz", {"0000004-aaaa.txt": b"Only one."})
    reader = OpenWebTextReader("owt", OpenWebTextConfig(root=str(tmp_path)), TextConfig())
    assert len(reader.parts()) == 2
    candidates, rejects = split(read_all(reader))
    xz = "openwebtext/urlsf_subset00-1_data.xz"
    assert by_location(rejects) == {
        f"{xz}::0000002-5d6e7f.txt:2": "non_utf8",
        f"{xz}::0000003-8a9b0c.txt": "empty_text",
    }
    assert {r.location: r.key for r in rejects}[f"{xz}::0000003-8a9b0c.txt"] == make_key("owt", "0000003-8a9b0c")
    assert_text_candidates(candidates, "owt")
    assert texts(candidates, "0000001-4a1b2c") == [
        "Breaking news today.",
        "Markets rose 2.5 percent.",
        "Analysts were surprised.",
    ]
    assert [c.location for c in candidates if c.meta["doc_id"] == "0000001-4a1b2c"] == [
        f"{xz}::0000001-4a1b2c.txt:1",
        f"{xz}::0000001-4a1b2c.txt:1",
        f"{xz}::0000001-4a1b2c.txt:3",
    ]
    assert texts(candidates, "0000002-5d6e7f") == ["First line is fine.", "Third line goes on."]
    assert texts(candidates, "0000004-aaaa") == ["Only one."]
    assert candidates[0].meta == {"doc_id": "0000001-4a1b2c", "chunk": 0, "sentences": 1}
    documents = {c.meta["doc_id"] for c in candidates} | {r.key for r in rejects if r.key}
    assert documents == {"0000001-4a1b2c", "0000002-5d6e7f", make_key("owt", "0000003-8a9b0c"), "0000004-aaaa"}


def test_openwebtext_packed(tmp_path):
    write_owt(tmp_path / "a.xz", OWT)
    config = OpenWebTextConfig(root=str(tmp_path))
    reader = OpenWebTextReader("owt", config, TextConfig(pack="tokens", max_tokens=128))
    candidates, _ = split(read_all(reader))
    packed = [(c.meta["doc_id"], c.meta["sentences"]) for c in candidates]
    assert packed == [("0000001-4a1b2c", 3), ("0000002-5d6e7f", 2)]
    assert candidates[0].text == "Breaking news today. Markets rose 2.5 percent. Analysts were surprised."


def test_openwebtext_corrupt_archive(tmp_path):
    path = write_owt(tmp_path / "bad.xz", OWT)
    path.write_bytes(path.read_bytes()[:40])
    write(tmp_path / "plain.xz", b"not xz at all")
    reader = OpenWebTextReader("owt", OpenWebTextConfig(root=str(tmp_path)), TextConfig())
    for part in reader.parts():
        with pytest.raises(SourceError, match=Path(part).name):
            list(reader.read(part))
