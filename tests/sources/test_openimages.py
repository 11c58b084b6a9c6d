import csv
import io
from pathlib import Path

import pytest

from pipelines.sources import SourceError
from pipelines.sources.labels import pseudo_caption
from pipelines.sources.openimages import (
    BOXES_HEADER,
    IMAGE_LIST_HEADER,
    LABELS_HEADER,
    OpenImagesReader,
    load_classes,
)
from schemas.config import OpenImagesConfig, PseudoPairConfig, TextConfig
from schemas.keys import make_key
from schemas.records import Modality
from tests.sources.helpers import by_location, read_all, split, write_jpeg

IMAGE_LIST = "train-images-boxable-with-rotation.csv"
LABELS = "train-annotations-human-imagelabels-boxable.csv"
BOXES = "train-annotations-bbox.csv"
A, B, C, D = "000002b66c9c498e", "000002b97e5471a0", "000002c707c9895e", "0000048549557964"


def csv_text(rows, header=None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def image_row(image_id, title="A title", rotation="0.0"):
    return [
        image_id, "train", f"https://farm.staticflickr.com/{image_id}_o.jpg", f"https://www.flickr.com/{image_id}",
        "https://creativecommons.org/licenses/by/2.0/", "https://www.flickr.com/people/x/", "Some Author",
        title, "2000000", "FpBRtNzTADWSb7JGfVVbOA==", f"https://c2.staticflickr.com/{image_id}_z.jpg", rotation,
    ]  # fmt: skip


def write(root: Path, name: str, text: str | bytes) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))


# Line numbers of the files written by ``make_source`` (header = line 1).
IMAGE_ROWS = [
    image_row(A, title='Tortoise, "Tom", on grass'),  # line 2: quoted comma and quotes
    image_row(B, title="two\nlines"),  # lines 3-4: a quoted newline
    image_row(C, rotation=""),  # line 5: no rotation
    image_row(D, rotation="90"),  # line 6: only a negative label
]
LABEL_ROWS = [
    [A, "verification", "/m/011k07", "1"],  # 2
    [A, "crowdsource-verification", "/m/0jbk", "1"],  # 3
    [A, "verification", "/m/01yrx", "0"],  # 4: verified negative
    [A, "verification", "/m/011k07", "1"],  # 5: repeated positive
    [B, "verification", "/m/01yrx", "1.0"],  # 6
    [D, "verification", "/m/0jbk", "0"],  # 7: negative only
    ["ffffffffffffffff", "verification", "/m/0jbk", "1"],  # 8: unknown image
    [A, "verification", "/m/0bogus", "1"],  # 9: unknown class
    [C, "verification", "/m/0jbk", "maybe"],  # 10: bad confidence
]
BOX_ROWS = [
    [A, "xclick", "/m/011k07", "1", "0.1", "0.5", "0.2", "0.9", "0", "0", "0", "0", "0"],  # 2
    [A, "xclick", "/m/0jbk", "1", "0.0", "1.2", "0.3", "0.4", "0", "0", "1", "0", "0"],  # 3: clipped
    ["ffffffffffffffff", "xclick", "/m/0jbk", "1", "0.1", "0.2", "0.1", "0.2", "0", "0", "0", "0", "0"],  # 4
    [B, "xclick", "/m/0bogus", "1", "0.1", "0.2", "0.1", "0.2", "0", "0", "0", "0", "0"],  # 5
    [B, "xclick", "/m/01yrx", "1", "0.6", "0.2", "0.1", "0.2", "0", "0", "0", "0", "0"],  # 6: XMin > XMax
]
CLASS_ROWS = [["/m/011k07", "Tortoise"], ["/m/0jbk", "Animal"], ["/m/01yrx", "Cat"]]


def make_source(root: Path, classes_form="boxable", boxes=True, extra_image_lines="") -> OpenImagesConfig:
    image_list = csv_text(IMAGE_ROWS, IMAGE_LIST_HEADER) + extra_image_lines
    write(root, IMAGE_LIST, image_list)
    write(root, LABELS, csv_text(LABEL_ROWS, LABELS_HEADER))
    if boxes:
        write(root, BOXES, csv_text(BOX_ROWS, BOXES_HEADER))
    if classes_form == "boxable":
        classes = "class-descriptions-boxable.csv"
        write(root, classes, csv_text(CLASS_ROWS))
    else:
        classes = "oidv7-class-descriptions.csv"
        write(root, classes, csv_text(CLASS_ROWS, ["LabelName", "DisplayName"]))
    for image_id in (A, B, C, D):
        write_jpeg(root / "images" / f"{image_id}.jpg")
    return OpenImagesConfig(
        root=str(root), image_list=IMAGE_LIST, labels=LABELS, classes=classes, boxes=BOXES if boxes else None
    )


L, IL, X = LABELS, IMAGE_LIST, BOXES
BAD_ROWS = {
    f"{L}:8": "unknown_reference",
    f"{L}:9": "unknown_reference",
    f"{L}:10": "malformed",
    f"{X}:4": "unknown_reference",
    f"{X}:5": "unknown_reference",
    f"{X}:6": "malformed",
}


@pytest.mark.parametrize("classes_form", ["boxable", "oidv7"])
def test_images_with_labels_and_boxes(tmp_path, classes_form):
    config = make_source(tmp_path, classes_form)
    candidates, rejects = split(read_all(OpenImagesReader("oi", config, TextConfig())))
    assert by_location(rejects) == BAD_ROWS
    by_id = {c.source_id: c for c in candidates}
    assert sorted(by_id) == sorted([A, B, C, D])
    a = by_id[A]
    assert a.key == make_key("oi", A) and a.modality is Modality.IMAGE and a.text is None
    assert a.location == f"{IL}:2"
    assert a.image_path == str(tmp_path / "images" / f"{A}.jpg")
    assert a.meta == {
        "image_id": A,
        "labels": ["tortoise", "animal"],  # lower-cased; the negative Cat is not a label; the repeat counted once
        "label_ids": ["/m/011k07", "/m/0jbk"],
        "url": f"https://farm.staticflickr.com/{A}_o.jpg",
        "rotation": 0.0,
        "objects": [
            {"name": "tortoise", "box": [0.1, 0.2, 0.5, 0.9]},
            {"name": "animal", "box": [0.0, 0.3, 1.0, 0.4]},
        ],
    }
    assert by_id[B].location == f"{IL}:3" and by_id[B].meta["labels"] == ["cat"]
    assert by_id[B].meta["objects"] == []
    assert by_id[C].location == f"{IL}:5" and by_id[C].meta["rotation"] is None
    assert by_id[D].location == f"{IL}:6" and by_id[D].meta["rotation"] == 90.0
    assert by_id[D].meta["labels"] == [] and by_id[D].meta["label_ids"] == []


def test_pseudo_pairs(tmp_path):
    config = make_source(tmp_path, boxes=False)
    templates = ["a photo of {label}.", "{label}!"]
    config.pseudo_pairs = PseudoPairConfig(enabled=True, templates=templates, max_labels=1)
    candidates, rejects = split(read_all(OpenImagesReader("oi", config, TextConfig())))
    reasons = by_location(rejects)
    assert reasons.pop(f"{IL}:5") == "no_label"  # C: only a malformed label row
    assert reasons.pop(f"{IL}:6") == "no_label"  # D: only a negative label
    assert reasons == {k: v for k, v in BAD_ROWS.items() if not k.startswith(X)}
    no_label = {r.location: r for r in rejects if r.reason.value == "no_label"}
    assert no_label[f"{IL}:6"].key == make_key("oi", D)
    by_id = {c.source_id: c for c in candidates}
    assert sorted(by_id) == [A, B]
    for c in candidates:
        assert c.modality is Modality.PAIR and c.image_path is not None
        assert "objects" not in c.meta
        assert c.text == pseudo_caption(c.key, c.meta["labels"], config.pseudo_pairs)
    assert by_id[A].text in ("a photo of tortoise.", "tortoise!")


def test_malformed_image_rows(tmp_path):
    extra = csv_text([image_row("00000aaaaaaaaaaa", rotation="sideways"), [A, "train"], image_row("", title="x")])
    config = make_source(tmp_path, extra_image_lines=extra)
    candidates, rejects = split(read_all(OpenImagesReader("oi", config, TextConfig())))
    reasons = by_location(rejects)
    assert {k: reasons.pop(k) for k in (f"{IL}:7", f"{IL}:8", f"{IL}:9")} == dict.fromkeys(
        (f"{IL}:7", f"{IL}:8", f"{IL}:9"), "malformed"
    )
    assert reasons == BAD_ROWS
    assert len(candidates) == 4


def test_non_utf8_row_is_malformed(tmp_path):
    config = make_source(tmp_path)
    path = tmp_path / IMAGE_LIST
    row = csv_text([image_row("00000bbbbbbbbbbb", title="X")]).encode().replace(b"X", b"\xff")
    path.write_bytes(path.read_bytes() + row)
    candidates, rejects = split(read_all(OpenImagesReader("oi", config, TextConfig())))
    assert by_location(rejects)[f"{IL}:7"] == "malformed"
    assert len(candidates) == 4


def test_url_mode_emits_original_url(tmp_path):
    no_url, blank_url = image_row("00000eeeeeeeeeee"), image_row("00000fffffffffff")
    no_url[2], blank_url[2] = "", "   "
    config = make_source(tmp_path, extra_image_lines=csv_text([no_url, blank_url]))
    config.images = None
    candidates, rejects = split(read_all(OpenImagesReader("oi", config, TextConfig())))
    by_id = {c.source_id: c for c in candidates}
    assert sorted(by_id) == sorted([A, B, C, D])
    for image_id, c in by_id.items():
        assert c.image_url == f"https://farm.staticflickr.com/{image_id}_o.jpg" == c.meta["url"]
        assert c.image_path is None and c.modality is Modality.IMAGE
    reasons = by_location(rejects)
    assert {k: reasons.pop(k) for k in (f"{IL}:7", f"{IL}:8")} == {f"{IL}:7": "malformed", f"{IL}:8": "malformed"}
    assert reasons == BAD_ROWS
    url_rejects = {r.key: r.detail for r in rejects if r.location in (f"{IL}:7", f"{IL}:8")}
    assert url_rejects == {make_key("oi", "00000eeeeeeeeeee"): "empty OriginalURL",
                           make_key("oi", "00000fffffffffff"): "empty OriginalURL"}


def test_url_mode_pseudo_pairs(tmp_path):
    config = make_source(tmp_path, boxes=False)
    config.images = None
    config.pseudo_pairs = PseudoPairConfig(enabled=True, templates=["a photo of {label}."], max_labels=2)
    candidates, rejects = split(read_all(OpenImagesReader("oi", config, TextConfig())))
    assert sorted(c.source_id for c in candidates) == [A, B]
    assert all(c.modality is Modality.PAIR and c.image_url == c.meta["url"] and c.text for c in candidates)


@pytest.mark.parametrize("shards", [1, 3, 7])
def test_every_row_read_by_exactly_one_part(tmp_path, shards):
    config = make_source(tmp_path)
    config.shards = shards
    reader = OpenImagesReader("oi", config, TextConfig())
    assert len(reader.parts()) == shards
    candidates, rejects = split(read_all(reader))
    assert sorted(c.source_id for c in candidates) == sorted([A, B, C, D])
    assert by_location(rejects) == BAD_ROWS  # also asserts no row is reported twice
    # records read = candidates + reader rejects: image rows + bad label/box rows
    assert len(candidates) + len(rejects) == len(IMAGE_ROWS) + len(BAD_ROWS)


@pytest.mark.parametrize(
    "name, content",
    [
        (IMAGE_LIST, "ImageID,OriginalURL\nabc,http://x\n"),
        (LABELS, "ImageID,LabelName,Confidence\n"),
        (BOXES, "ImageID,Source,LabelName,Confidence,XMin,YMin,XMax,YMax\n"),
        (LABELS, ""),
    ],
)
def test_wrong_header(tmp_path, name, content):
    config = make_source(tmp_path)
    write(tmp_path, name, content)
    reader = OpenImagesReader("oi", config, TextConfig())
    with pytest.raises(SourceError) as error:
        read_all(reader)
    message = str(error.value)
    assert name in message
    expected = {IMAGE_LIST: IMAGE_LIST_HEADER, LABELS: LABELS_HEADER, BOXES: BOXES_HEADER}[name]
    assert ",".join(expected) in message


def test_header_with_bom_is_accepted(tmp_path):
    config = make_source(tmp_path)
    path = tmp_path / LABELS
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    candidates, rejects = split(read_all(OpenImagesReader("oi", config, TextConfig())))
    assert by_location(rejects) == BAD_ROWS and len(candidates) == 4


def test_classes_forms(tmp_path):
    write(tmp_path, "a.csv", "/m/011k07,Tortoise\n/g/11bc5,\"Cat, domestic\"\n")
    write(tmp_path, "b.csv", "LabelName,DisplayName\n/m/011k07,Tortoise\n")
    assert load_classes(str(tmp_path / "a.csv")) == {"/m/011k07": "tortoise", "/g/11bc5": "cat, domestic"}
    assert load_classes(str(tmp_path / "b.csv")) == {"/m/011k07": "tortoise"}
    write(tmp_path, "c.csv", "ImageID,Source\nx,y\n")
    with pytest.raises(SourceError, match="c.csv.*LabelName,DisplayName"):
        load_classes(str(tmp_path / "c.csv"))
    write(tmp_path, "d.csv", "/m/011k07,Tortoise\n/m/0jbk\n")
    with pytest.raises(SourceError, match="d.csv:2"):
        load_classes(str(tmp_path / "d.csv"))
    with pytest.raises(SourceError, match="missing.csv"):
        load_classes(str(tmp_path / "missing.csv"))
