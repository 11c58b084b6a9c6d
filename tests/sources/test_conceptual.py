import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.sources import SourceError
from pipelines.sources.conceptual import ConceptualCaptionsReader, Img2datasetReader
from schemas.config import ConceptualCaptionsConfig, Img2datasetConfig, TextConfig
from schemas.keys import make_key
from schemas.records import Modality
from tests.sources.helpers import by_location, jpeg_bytes, read_all, split

TSV = "Train_GCC-training.tsv"
TSV_LINES = [
    b"a very typical bus station\thttp://lh6.ggpht.com/-IvRtNLNcG8o/a.jpg",
    b"sierra looked stunning in this top and this skirt\thttp://example.com/b.jpg\r",
    b"three\tfields\there",
    b"no tab at all",
    b"caf\xe9 latte in latin-1\thttp://example.com/c.jpg",
    b"   \thttp://example.com/d.jpg",
    b"",
    "the cat sat on the mat — ✓\thttp://example.com/e.jpg".encode(),
]


def cc_source(tmp_path, lines=TSV_LINES):
    (tmp_path / TSV).write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "images").mkdir(exist_ok=True)
    return ConceptualCaptionsConfig(root=str(tmp_path))


def test_tsv_rows_become_pairs_with_images_by_row(tmp_path):
    config = cc_source(tmp_path)
    candidates, rejects = split(read_all(ConceptualCaptionsReader("cc3m", config, TextConfig())))
    assert [(c.key, c.text, c.meta, c.location) for c in candidates] == [
        (make_key("cc3m", 0), "a very typical bus station",
         {"url": "http://lh6.ggpht.com/-IvRtNLNcG8o/a.jpg", "row": 0}, f"{TSV}:1"),
        (make_key("cc3m", 1), "sierra looked stunning in this top and this skirt",
         {"url": "http://example.com/b.jpg", "row": 1}, f"{TSV}:2"),
        (make_key("cc3m", 7), "the cat sat on the mat — ✓",
         {"url": "http://example.com/e.jpg", "row": 7}, f"{TSV}:8"),
    ]
    for c in candidates:
        assert c.modality is Modality.PAIR and c.source_id == str(c.meta["row"])
        assert c.image_path == str(tmp_path / "images" / f"{c.meta['row']:08d}.jpg")
    assert by_location(rejects) == {
        f"{TSV}:3": "malformed",
        f"{TSV}:4": "malformed",
        f"{TSV}:5": "non_utf8",
        f"{TSV}:6": "empty_text",
        f"{TSV}:7": "malformed",
    }
    assert {r.key for r in rejects} == {make_key("cc3m", row) for row in (2, 3, 4, 5, 6)}
    assert len(candidates) + len(rejects) == len(TSV_LINES)


def test_image_pattern_and_absent_tsv(tmp_path):
    config = cc_source(tmp_path, TSV_LINES[:1])
    config.images, config.image_pattern = "downloads", "{row}.jpeg"
    (candidate,) = read_all(ConceptualCaptionsReader("cc", config, TextConfig()))
    assert candidate.image_path == str(tmp_path / "downloads" / "0.jpeg")
    (tmp_path / TSV).unlink()
    with pytest.raises(SourceError, match=str(tmp_path / TSV)):
        read_all(ConceptualCaptionsReader("cc", config, TextConfig()))


URL_LINES = [
    b"a very typical bus station\thttp://lh6.ggpht.com/-IvRtNLNcG8o/a.jpg",
    b"no url at all\t",
    b"only blanks for a url\t   ",
    b"padded url\t https://example.com/b.jpg \r",
    b"not really a url\tjust words",  # passed on: the downloader reports invalid_url
]


def test_url_mode_emits_the_url_to_fetch(tmp_path):
    (tmp_path / TSV).write_bytes(b"\n".join(URL_LINES) + b"\n")
    config = ConceptualCaptionsConfig(root=str(tmp_path), images=None)  # no image folder needed
    candidates, rejects = split(read_all(ConceptualCaptionsReader("cc", config, TextConfig())))
    assert [(c.source_id, c.image_url, c.meta["url"], c.location) for c in candidates] == [
        ("0", "http://lh6.ggpht.com/-IvRtNLNcG8o/a.jpg", "http://lh6.ggpht.com/-IvRtNLNcG8o/a.jpg", f"{TSV}:1"),
        ("3", "https://example.com/b.jpg", "https://example.com/b.jpg", f"{TSV}:4"),
        ("4", "just words", "just words", f"{TSV}:5"),
    ]
    assert all(c.image_path is None and c.image_bytes is None and c.modality is Modality.PAIR for c in candidates)
    assert by_location(rejects) == {f"{TSV}:2": "malformed", f"{TSV}:3": "malformed"}
    assert [(r.key, r.detail) for r in rejects] == [(make_key("cc", 1), "empty url"), (make_key("cc", 2), "empty url")]
    assert len(candidates) + len(rejects) == len(URL_LINES)


def test_url_mode_from_yaml_and_folder_mode_needs_no_url(tmp_path):
    from schemas.config import parse_config

    (tmp_path / TSV).write_bytes(b"\n".join(URL_LINES[:2]) + b"\n")
    corpus = parse_config({"output": "out", "sources": {"cc": {"kind": "conceptual_captions", "root": ".",
                                                                "images": None}}}, str(tmp_path))
    first, empty = read_all(ConceptualCaptionsReader("cc", corpus.sources["cc"], TextConfig()))
    assert first.image_url == "http://lh6.ggpht.com/-IvRtNLNcG8o/a.jpg" and empty.reason.value == "malformed"
    # with an image folder the URL is only meta: a row without one still has its image by row
    config = cc_source(tmp_path, URL_LINES[:2])
    first, second = read_all(ConceptualCaptionsReader("cc", config, TextConfig()))
    assert first.image_url is None and second.image_path == str(tmp_path / "images" / "00000001.jpg")


# --- img2dataset ----------------------------------------------------------------------------------

SCHEMA = pa.schema([
    ("key", pa.string()), ("url", pa.string()), ("caption", pa.string()), ("status", pa.string()),
    ("error_message", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
    ("original_width", pa.int64()), ("original_height", pa.int64()), ("exif", pa.string()),
    ("sha256", pa.string()),
])


def row(key, status="success", error=None, caption=None):
    ok = status == "success"
    return {
        "key": key, "url": f"http://example.com/{key}.jpg", "caption": caption or f"caption {key}",
        "status": status, "error_message": error, "width": 4 if ok else None, "height": 3 if ok else None,
        "original_width": 40 if ok else None, "original_height": 30 if ok else None,
        "exif": "{}" if ok else None, "sha256": f"sha-{key}" if ok else None,
    }


def write_shard(folder, shard, rows, members):
    """``members``: (name, bytes) in tar order, as img2dataset writes them (jpg, txt, json per key)."""
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), folder / f"{shard}.parquet")
    with tarfile.open(folder / f"{shard}.tar", "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def sample_members(key, caption=None, image=True):
    members = [(f"{key}.jpg", jpeg_bytes())] if image else []
    members.append((f"{key}.txt", (caption if caption is not None else f"caption {key}").encode("utf-8")))
    members.append((f"{key}.json", json.dumps({"key": key, "status": "success"}).encode()))
    return members


def img2dataset_source(tmp_path):
    folder = tmp_path / "cc3m_img2dataset"
    write_shard(
        folder,
        "00000",
        [
            row("000000000"),
            row("000000001", "failed_to_download", "HTTP Error 404: Not Found"),
            row("000000002", caption="parquet caption"),
            row("000000003"),  # success, but the tar lost its image
            row("000000004", "failed_to_resize", "image file is truncated"),
            row("000000005", caption="  "),  # and an empty .txt: no caption anywhere
            row("000000000", caption="repeated key"),
        ],
        sample_members("000000000")
        + sample_members("000000002", caption="  ")  # empty .txt: the parquet caption is used
        + sample_members("000000003", image=False)
        + sample_members("000000005", caption="")
        + sample_members("000000999"),  # in the tar only: an image with no row is a reject
    )
    write_shard(folder, "00001", [row("000010000")], sample_members("000010000", caption="second shard"))
    (folder / "00000_stats.json").write_text("{}")
    return Img2datasetConfig(root=str(folder))


def test_img2dataset_parts_are_shard_pairs(tmp_path):
    config = img2dataset_source(tmp_path)
    reader = Img2datasetReader("cc", config, TextConfig())
    assert reader.parts() == [f"{config.root}/00000", f"{config.root}/00001"]


def test_img2dataset_success_rows_become_pairs_with_image_bytes(tmp_path):
    config = img2dataset_source(tmp_path)
    candidates, _ = split(read_all(Img2datasetReader("cc", config, TextConfig())))
    by_key = {c.key: c for c in candidates}
    assert sorted(by_key) == [make_key("cc", k) for k in ("000000000", "000000002", "000010000")]
    first = by_key[make_key("cc", "000000000")]
    assert first.modality is Modality.PAIR and first.source_id == "000000000"
    assert first.text == "caption 000000000"
    assert first.image_bytes == jpeg_bytes() and first.image_path is None
    assert first.location == "00000.tar::000000000.jpg"
    assert first.meta == {"url": "http://example.com/000000000.jpg", "key": "000000000", "width": 4,
                          "height": 3, "sha256": "sha-000000000"}
    assert by_key[make_key("cc", "000000002")].text == "parquet caption"
    assert by_key[make_key("cc", "000010000")].text == "second shard"


def test_img2dataset_rejects_and_accounting(tmp_path):
    config = img2dataset_source(tmp_path)
    candidates, rejects = split(read_all(Img2datasetReader("cc", config, TextConfig())))
    assert by_location(rejects) == {
        "00000.parquet[1]": "failed_download",
        "00000.parquet[3]": "missing_image",
        "00000.parquet[4]": "failed_download",
        "00000.tar::000000005.jpg": "empty_text",
        "00000.parquet[6]": "duplicate_id",
        "00000.tar::000000999.jpg": "unknown_reference",
    }
    details = {r.location: r.detail for r in rejects}
    assert details["00000.parquet[1]"] == "HTTP Error 404: Not Found"
    assert details["00000.parquet[4]"] == "image file is truncated"
    assert {r.key for r in rejects if r.reason.value == "failed_download"} == {
        make_key("cc", "000000001"), make_key("cc", "000000004")}
    assert len(candidates) + len(rejects) == 9  # parquet rows of both shards + the image without a row


def test_img2dataset_unreadable_shards_raise_source_error(tmp_path):
    config = img2dataset_source(tmp_path)
    folder = tmp_path / "cc3m_img2dataset"
    reader = Img2datasetReader("cc", config, TextConfig())
    (folder / "00001.tar").unlink()
    with pytest.raises(SourceError, match=str(folder / "00001.tar")):
        list(reader.read(f"{folder}/00001"))
    (folder / "00001.tar").write_bytes(b"not a tar archive at all" * 40)
    with pytest.raises(SourceError, match="00001.tar: not a readable tar"):
        list(reader.read(f"{folder}/00001"))
    (folder / "00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(SourceError, match="00001.parquet: not a readable parquet"):
        list(reader.read(f"{folder}/00001"))
    pq.write_table(pa.table({"key": ["1"], "url": ["u"]}), folder / "00001.parquet")
    with pytest.raises(SourceError, match="00001.parquet: not an img2dataset parquet: no column caption"):
        list(reader.read(f"{folder}/00001"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no img2dataset shards"):
        Img2datasetReader("cc", Img2datasetConfig(root=str(empty)), TextConfig()).parts()
