"""``Reader.inputs``: the files each source reads, with size and mtime, for the parameters hash (a file
added, removed or edited redoes the shards it touches)."""

import os

from pipelines.sources.coco import CocoReader
from pipelines.sources.conceptual import Img2datasetReader
from pipelines.sources.image_folder import ImageFolderReader
from pipelines.sources.text import BookCorpusReader
from schemas.config import BookCorpusConfig, CocoConfig, ImageFolderConfig, Img2datasetConfig, TextConfig
from schemas.keys import make_key
from tests.sources.helpers import write_jpeg, write_json


def _inputs(reader):
    return {f.path: (f.size, f.key) for f in reader.inputs(reader.parts())}


def _stat(path):
    st = os.stat(path)
    return st.st_size, st.st_mtime


def test_default_inputs_are_the_parts_and_path_fields(tmp_path):
    write_json(tmp_path / "annotations" / "captions_train2017.json", {"images": [], "annotations": []})
    write_jpeg(tmp_path / "train2017" / "1.jpg")
    reader = CocoReader("coco", CocoConfig(root=str(tmp_path)), TextConfig())
    inputs = _inputs(reader)
    assert set(inputs) == {"annotations/captions_train2017.json", "train2017"}  # the folder by its own mtime
    assert inputs["annotations/captions_train2017.json"] == (_stat(reader.parts()[0])[0], None)
    before = {f.path: f.mtime for f in reader.inputs(reader.parts())}
    os.utime(tmp_path / "train2017", (1, 1))  # as when an image is added or removed
    assert {f.path: f.mtime for f in reader.inputs(reader.parts())}["train2017"] != before["train2017"]


def test_image_folder_inputs_are_every_image_with_its_key(tmp_path):
    for name in ("a.jpg", "sub/b.png"):
        write_jpeg(tmp_path / "unlabeled2017" / name)
    (tmp_path / "unlabeled2017" / "notes.txt").write_text("not an image")
    reader = ImageFolderReader("u", ImageFolderConfig(root=str(tmp_path)), TextConfig())
    size = _stat(tmp_path / "unlabeled2017" / "a.jpg")[0]
    assert _inputs(reader) == {"unlabeled2017/a.jpg": (size, make_key("u", "a")),
                               "unlabeled2017/sub/b.png": (size, make_key("u", "sub/b"))}


def test_text_and_img2dataset_inputs_come_from_one_listing(tmp_path):
    (tmp_path / "books" / "x").mkdir(parents=True)
    (tmp_path / "books" / "x" / "one.txt").write_text("It was late.\n")
    (tmp_path / "books" / "two.txt").write_text("She left early.\n")
    books = BookCorpusReader("b", BookCorpusConfig(root=str(tmp_path / "books")), TextConfig())
    assert _inputs(books) == {"x/one.txt": (13, None), "two.txt": (16, None)}
    (tmp_path / "i2d").mkdir()
    for name, data in (("00000.tar", b"t" * 3), ("00000.parquet", b"p" * 5), ("00000_stats.json", b"{}")):
        (tmp_path / "i2d" / name).write_bytes(data)
    shards = Img2datasetReader("i", Img2datasetConfig(root=str(tmp_path / "i2d")), TextConfig())
    assert _inputs(shards) == {"00000.parquet": (5, None), "00000.tar": (3, None)}
