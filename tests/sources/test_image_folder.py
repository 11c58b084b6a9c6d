import os

import pytest

from pipelines.sources import SourceError
from pipelines.sources.image_folder import ImageFolderReader
from schemas.config import ImageFolderConfig, TextConfig
from schemas.keys import make_key
from schemas.records import Modality
from tests.sources.helpers import read_all, split, write_jpeg


def test_every_image_file_below_the_folder_is_an_image_sample(tmp_path):
    folder = tmp_path / "unlabeled2017"
    names = ["000000000008.jpg", "000000000013.JPG", "sub/000000000008.jpg", "sub/deeper/c.png", "d.webp"]
    for name in names:
        write_jpeg(folder / name)
    (folder / "README.txt").write_text("not an image")
    (folder / "sub" / "notes.json").write_text("{}")
    for other in ("a.jpeg", "b.bmp", "c.gif"):
        (folder / other).write_bytes(b"bytes the writer will judge")
    config = ImageFolderConfig(root=str(tmp_path))
    candidates, rejects = split(read_all(ImageFolderReader("coco_unlabeled", config, TextConfig())))

    assert rejects == []
    expected = sorted(names + ["a.jpeg", "b.bmp", "c.gif"])
    assert sorted(c.meta["file_name"] for c in candidates) == expected
    assert len({c.key for c in candidates}) == len(candidates)  # same name in two folders stays distinct
    for c in candidates:
        assert c.modality is Modality.IMAGE and c.text is None and c.image_bytes is None
        assert c.image_path == str(folder / c.meta["file_name"])
        assert c.source_id == os.path.splitext(c.meta["file_name"])[0]
        assert c.key == make_key("coco_unlabeled", c.source_id)
        assert c.location == f"unlabeled2017/{c.meta['file_name']}"
        assert c.meta == {"file_name": c.meta["file_name"]}
    assert make_key("coco_unlabeled", "000000000008") == "coco_unlabeled-000000000008"  # clean keys


def test_empty_folder_gives_nothing_and_absent_folder_raises(tmp_path):
    (tmp_path / "unlabeled2017").mkdir()
    config = ImageFolderConfig(root=str(tmp_path))
    assert read_all(ImageFolderReader("u", config, TextConfig())) == []
    config = ImageFolderConfig(root=str(tmp_path), images="nowhere")
    with pytest.raises(SourceError, match=str(tmp_path / "nowhere")):
        read_all(ImageFolderReader("u", config, TextConfig()))
