import pytest

from pipelines.sources import SourceError
from pipelines.sources.coco import CocoReader
from schemas.config import CocoConfig, TextConfig
from schemas.keys import make_key
from schemas.records import Modality
from tests.sources.helpers import by_location, read_all, split, write_jpeg, write_json

CAPTIONS = "annotations/captions_train2017.json"
INSTANCES = "annotations/instances_train2017.json"
C = CAPTIONS  # short, for reject locations


def image(image_id, file_name, width=640, height=480):
    return {
        "license": 3,
        "file_name": file_name,
        "coco_url": f"http://images.cocodataset.org/train2017/{file_name}",
        "height": height,
        "width": width,
        "date_captured": "2013-11-14 11:18:45",
        "flickr_url": "http://farm4.staticflickr.com/x.jpg",
        "id": image_id,
    }


def caption(ann_id, image_id, text):
    return {"image_id": image_id, "id": ann_id, "caption": text}


def box(ann_id, image_id, category_id, bbox, iscrowd=0):
    return {
        "segmentation": [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]],
        "area": 10.0,
        "iscrowd": iscrowd,
        "image_id": image_id,
        "bbox": bbox,
        "category_id": category_id,
        "id": ann_id,
    }


IMAGES = [
    image(391895, "000000391895.jpg", 640, 360),
    image(522418, "COCO_train2014_000000522418.jpg", 640, 480),
    image(184613, "000000184613.jpg"),  # only an empty caption
    image(318219, "000000318219.jpg"),  # no caption at all
]
ANNOTATIONS = [
    caption(770337, 391895, "A man with a red helmet on a small moped on a dirt road. "),
    caption(156, 391895, "Man riding a motor bike on a dirt road on the countryside."),
    caption(801, 522418, "A woman wearing a net on her head cutting a cake. "),
    caption(802, 184613, "   \n"),
    caption(803, 999999, "A caption of an image that does not exist."),
    caption(156, 522418, "Duplicate annotation id: the first one is kept."),
    caption(804, 522418, ""),
    {"image_id": 522418, "id": 805},  # no caption field
]


def make_source(tmp_path, instances=None, annotations=ANNOTATIONS, images=IMAGES):
    write_json(
        tmp_path / CAPTIONS,
        {"info": {"year": 2017}, "licenses": [], "images": images, "annotations": annotations},
    )
    for entry in images:
        write_jpeg(tmp_path / "train2017" / entry["file_name"])
    if instances is not None:
        write_json(tmp_path / INSTANCES, instances)
    return CocoConfig(root=str(tmp_path), instances=INSTANCES if instances is not None else None)


def read(config):
    return split(read_all(CocoReader("coco", config, TextConfig())))


def test_one_pair_per_image_with_first_caption_by_annotation_id(tmp_path):
    candidates, _ = read(make_source(tmp_path))
    by_key = {c.key: c for c in candidates}
    assert sorted(by_key) == [make_key("coco", 391895), make_key("coco", 522418)]

    first = by_key[make_key("coco", 391895)]
    assert first.modality is Modality.PAIR
    assert first.source == "coco" and first.source_id == "391895"
    assert first.text == "Man riding a motor bike on a dirt road on the countryside."
    assert first.image_path == str(tmp_path / "train2017" / "000000391895.jpg")
    assert first.image_bytes is None
    assert first.location == f"{C}[images][0]"
    assert first.meta == {
        "image_id": 391895,
        "file_name": "000000391895.jpg",
        "width": 640,
        "height": 360,
        "captions": [
            {"id": 156, "caption": "Man riding a motor bike on a dirt road on the countryside."},
            {"id": 770337, "caption": "A man with a red helmet on a small moped on a dirt road."},
        ],
    }

    second = by_key[make_key("coco", 522418)]
    assert second.image_path == str(tmp_path / "train2017" / "COCO_train2014_000000522418.jpg")
    assert second.text == "A woman wearing a net on her head cutting a cake."
    assert [c["id"] for c in second.meta["captions"]] == [801]
    assert "objects" not in second.meta


def test_every_bad_caption_and_image_is_a_reject(tmp_path):
    _, rejects = read(make_source(tmp_path))
    assert by_location(rejects) == {
        f"{C}[annotations][3]": "empty_text",
        f"{C}[annotations][4]": "unknown_reference",
        f"{C}[annotations][5]": "duplicate_id",
        f"{C}[annotations][6]": "empty_text",
        f"{C}[annotations][7]": "malformed",
        f"{C}[images][2]": "empty_text",  # left with no caption
        f"{C}[images][3]": "empty_text",  # never had one
    }
    whole = {r.location: r.key for r in rejects}
    assert whole[f"{C}[images][2]"] == make_key("coco", 184613)
    assert whole[f"{C}[annotations][4]"] is None


def test_every_image_and_caption_is_accounted_for(tmp_path):
    candidates, rejects = read(make_source(tmp_path))
    assert len(candidates) + sum(r.location.startswith(f"{C}[images]") for r in rejects) == len(IMAGES)
    kept = sum(len(c.meta["captions"]) for c in candidates)
    rejected = sum(r.location.startswith(f"{C}[annotations]") for r in rejects)
    assert kept + rejected == len(ANNOTATIONS)


INSTANCES_FILE = {
    "info": {},
    "licenses": [],
    "images": IMAGES,
    "annotations": [
        box(2, 391895, 1, [64.0, 36.0, 320.0, 180.0]),
        box(1, 391895, 4, [600.0, 0.0, 80.0, 400.0], iscrowd=1),  # overhangs: clipped to the image
        box(3, 522418, 1, [0, 0, 64, 48]),
        box(4, 777777, 1, [0, 0, 1, 1]),  # unknown image
        box(5, 522418, 99, [0, 0, 1, 1]),  # unknown category
        box(6, 522418, 1, [0, 0, "wide", 1]),  # malformed box
        box(7, 522418, 1, [0, 0, -1, 1]),  # negative width
    ],
    "categories": [  # after the annotations, as in the release
        {"supercategory": "person", "id": 1, "name": "person"},
        {"supercategory": "vehicle", "id": 4, "name": "motorcycle"},
    ],
}


def test_instances_add_objects_with_normalised_boxes(tmp_path):
    candidates, rejects = read(make_source(tmp_path, instances=INSTANCES_FILE))
    by_key = {c.key: c for c in candidates}
    assert by_key[make_key("coco", 391895)].meta["objects"] == [
        {"name": "motorcycle", "box": [0.9375, 0.0, 1.0, 1.0], "iscrowd": 1},
        {"name": "person", "box": [0.1, 0.1, 0.6, 0.6], "iscrowd": 0},
    ]
    assert by_key[make_key("coco", 522418)].meta["objects"] == [
        {"name": "person", "box": [0.0, 0.0, 0.1, 0.1], "iscrowd": 0}
    ]
    instances = {loc: reason for loc, reason in by_location(rejects).items() if loc.startswith(INSTANCES)}
    assert instances == {
        f"{INSTANCES}[annotations][3]": "unknown_reference",
        f"{INSTANCES}[annotations][4]": "unknown_reference",
        f"{INSTANCES}[annotations][5]": "malformed",
        f"{INSTANCES}[annotations][6]": "malformed",
    }


def test_malformed_image_entry_and_duplicate_image_id(tmp_path):
    images = IMAGES[:2] + [{"id": 5, "file_name": "5.jpg"}, dict(IMAGES[1])]
    candidates, rejects = read(make_source(tmp_path, images=images, annotations=ANNOTATIONS[:3]))
    assert len(candidates) == 2
    assert by_location(rejects) == {f"{C}[images][2]": "malformed", f"{C}[images][3]": "duplicate_id"}


def test_json_syntax_error_names_file_line_and_column(tmp_path):
    config = make_source(tmp_path)
    path = tmp_path / CAPTIONS
    lines = path.read_text().splitlines()
    lines[5] = lines[5] + " oops"
    path.write_text("\n".join(lines))
    column = len(lines[5]) - 3  # the "o" of " oops"
    with pytest.raises(SourceError, match=rf"{path}: not valid JSON: .* at line 6 column {column}"):
        read(config)


def test_absent_or_wrong_files_raise_source_error(tmp_path):
    config = make_source(tmp_path)
    (tmp_path / CAPTIONS).unlink()
    with pytest.raises(SourceError, match=str(tmp_path / CAPTIONS)):
        read(config)
    write_json(tmp_path / CAPTIONS, [1, 2])
    with pytest.raises(SourceError, match="expected a JSON object"):
        read(config)
    write_json(tmp_path / CAPTIONS, {"images": []})
    with pytest.raises(SourceError, match="no 'annotations' list"):
        read(config)
    write_json(tmp_path / CAPTIONS, {"images": {}, "annotations": []})
    with pytest.raises(SourceError, match="'images' is a dict"):
        read(config)
    config = make_source(tmp_path, instances={"annotations": [], "categories": []})
    (tmp_path / INSTANCES).unlink()
    with pytest.raises(SourceError, match=str(tmp_path / INSTANCES)):
        read(config)


def test_parts_is_the_captions_file(tmp_path):
    config = make_source(tmp_path)
    assert CocoReader("coco", config, TextConfig()).parts() == [str(tmp_path / CAPTIONS)]
