"""Text that every reader must survive: a byte-order mark at the start of a file (stripped, never part of
the first caption or label), and lone surrogates in JSON strings (valid JSON, not encodable as UTF-8:
a ``non_utf8`` reject naming the file and record, never a dead run)."""

import io
import json
import lzma
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.sources.coco import CocoReader
from pipelines.sources.conceptual import ConceptualCaptionsReader, Img2datasetReader
from pipelines.sources.imagenet import load_words
from pipelines.sources.sbu import SbuReader
from pipelines.sources.text import BookCorpusReader, OpenWebTextReader, WikipediaReader
from pipelines.sources.visual_genome import VisualGenomeReader
from schemas.config import (
    BookCorpusConfig,
    CocoConfig,
    ConceptualCaptionsConfig,
    Img2datasetConfig,
    OpenWebTextConfig,
    SbuConfig,
    TextConfig,
    VisualGenomeConfig,
    WikipediaConfig,
)
from schemas.keys import make_key
from tests.sources.helpers import by_location, jpeg_bytes, read_all, split, write_jpeg

BOM = b"\xef\xbb\xbf"


def _texts(reader) -> list[str]:
    candidates, rejects = split(read_all(reader))
    assert rejects == []
    return [c.text for c in candidates]


# --- a leading BOM ----------------------------------------------------------------------------------


def test_tsv_and_line_files_lose_a_leading_bom(tmp_path):
    (tmp_path / "cc.tsv").write_bytes(BOM + b"a dog on a beach\thttp://x/a.jpg\nsecond\thttp://x/b.jpg\n")
    cc = ConceptualCaptionsConfig(root=str(tmp_path), tsv="cc.tsv", images=None)
    assert _texts(ConceptualCaptionsReader("cc", cc, TextConfig())) == ["a dog on a beach", "second"]

    (tmp_path / "urls.txt").write_bytes(BOM + b"http://x/a.jpg\n")
    (tmp_path / "caps.txt").write_bytes(BOM + b"a cat\n")
    sbu = SbuConfig(root=str(tmp_path), urls="urls.txt", captions="caps.txt", images=None)
    (candidate,) = split(read_all(SbuReader("sbu", sbu, TextConfig())))[0]
    assert (candidate.text, candidate.image_url) == ("a cat", "http://x/a.jpg")

    (tmp_path / "books" / "b").mkdir(parents=True)
    (tmp_path / "books" / "b" / "one.txt").write_bytes(BOM + b"It was late. She left.\n")
    books = BookCorpusConfig(root=str(tmp_path / "books"), shards=1)
    assert _texts(BookCorpusReader("books", books, TextConfig())) == ["It was late.", "She left."]
    (tmp_path / "books" / "b" / "one.txt").write_bytes(BOM + b"it was late .\n")
    lines = BookCorpusConfig(root=str(tmp_path / "books"), layout="lines")
    assert _texts(BookCorpusReader("books", lines, TextConfig())) == ["it was late ."]


def test_wikipedia_files_with_a_bom_are_still_recognised(tmp_path):
    (tmp_path / "AA").mkdir()
    (tmp_path / "AA" / "wiki_00").write_bytes(
        BOM + b'<doc id="1" url="u" title="Cats">\nCats\nCats purr. They sleep.\n</doc>\n')
    (tmp_path / "AB").mkdir()
    (tmp_path / "AB" / "wiki_00").write_bytes(BOM + json.dumps({"id": "2", "text": "Dogs bark."}).encode() + b"\n")
    wiki = WikipediaConfig(root=str(tmp_path))
    assert _texts(WikipediaReader("wiki", wiki, TextConfig())) == ["Cats purr.", "They sleep.", "Dogs bark."]


def test_archive_members_and_label_files_lose_a_leading_bom(tmp_path):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        body = BOM + b"A web page. It ends here.\n"
        info = tarfile.TarInfo("0001.txt")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    (tmp_path / "owt").mkdir()
    (tmp_path / "owt" / "urlsf_subset00-1_data.xz").write_bytes(lzma.compress(data.getvalue()))
    owt = OpenWebTextConfig(root=str(tmp_path / "owt"))
    assert _texts(OpenWebTextReader("owt", owt, TextConfig())) == ["A web page.", "It ends here."]

    (tmp_path / "words.txt").write_bytes(BOM + b"n02084071\tdog, domestic dog\n")
    assert load_words(str(tmp_path / "words.txt")) == {"n02084071": ["dog", "domestic dog"]}

    root = tmp_path / "i2d"
    root.mkdir()
    with tarfile.open(root / "00000.tar", "w") as tar:
        for name, body in (("00000.jpg", jpeg_bytes()), ("00000.txt", BOM + b"a red bus")):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    rows = {"key": ["00000"], "url": ["http://x/a.jpg"], "caption": ["a red bus"], "status": ["success"],
            "error_message": [None]}
    pq.write_table(pa.table(rows), root / "00000.parquet")
    assert _texts(Img2datasetReader("i2d", Img2datasetConfig(root=str(root)), TextConfig())) == ["a red bus"]


# --- lone surrogates in JSON strings ----------------------------------------------------------------


def _write_json(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")  # ensure_ascii: a lone surrogate stays a \ud800 escape


def test_a_coco_caption_with_a_lone_surrogate_is_a_non_utf8_reject(tmp_path):
    images = [{"id": 1, "file_name": "1.jpg", "width": 4, "height": 3},
              {"id": 2, "file_name": "2.jpg", "width": 4, "height": 3}]
    annotations = [{"id": 10, "image_id": 1, "caption": "lone \ud800 surrogate"},
                   {"id": 11, "image_id": 1, "caption": "a good caption"},
                   {"id": 12, "image_id": 2, "caption": "only \udfff bad"}]
    _write_json(tmp_path / "annotations" / "captions_train2017.json", {"images": images, "annotations": annotations})
    for name in ("1.jpg", "2.jpg"):
        write_jpeg(tmp_path / "train2017" / name)
    candidates, rejects = split(read_all(CocoReader("coco", CocoConfig(root=str(tmp_path)), TextConfig())))
    assert [(c.key, c.text, [x["id"] for x in c.meta["captions"]]) for c in candidates] == [
        (make_key("coco", 1), "a good caption", [11])]
    where = "annotations/captions_train2017.json"
    assert by_location(rejects) == {f"{where}[annotations][0]": "non_utf8", f"{where}[annotations][2]": "non_utf8",
                                    f"{where}[images][1]": "empty_text"}
    bad = next(r for r in rejects if r.location.endswith("[0]"))
    assert "surrogate" in bad.detail and bad.detail.isascii() and bad.key == make_key("coco", 1)


def test_a_visual_genome_phrase_with_a_lone_surrogate_is_a_non_utf8_reject(tmp_path):
    _write_json(tmp_path / "image_data.json", [{"image_id": 1, "url": "http://x/VG_100K/1.jpg", "width": 4,
                                               "height": 3, "coco_id": None, "flickr_id": None}])
    regions = [{"region_id": 5, "image_id": 1, "phrase": "bad \ud83d half", "x": 0, "y": 0, "width": 1, "height": 1},
               {"region_id": 6, "image_id": 1, "phrase": "a good phrase", "x": 0, "y": 0, "width": 1, "height": 1}]
    _write_json(tmp_path / "region_descriptions.json", [{"id": 1, "regions": regions}])
    write_jpeg(tmp_path / "VG_100K" / "1.jpg")
    reader = VisualGenomeReader("vg", VisualGenomeConfig(root=str(tmp_path)), TextConfig())
    candidates, rejects = split(read_all(reader))
    assert [[r["phrase"] for r in c.meta["regions"]] for c in candidates] == [["a good phrase"]]
    assert by_location(rejects) == {"region_descriptions.json[0][regions][0]": "non_utf8"}
