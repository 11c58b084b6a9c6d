import pytest

from pipelines.sources import SourceError
from pipelines.sources.visual_genome import VisualGenomeReader
from schemas.config import TextConfig, VisualGenomeConfig
from schemas.keys import make_key
from schemas.records import Modality
from tests.sources.helpers import by_location, read_all, split, write_jpeg, write_json

URL = "https://cs.stanford.edu/people/rak248/{}/{}.jpg"


def image(image_id, folder="VG_100K", width=800, height=600, coco_id=None, flickr_id=None):
    return {
        "width": width,
        "url": URL.format(folder, image_id),
        "height": height,
        "image_id": image_id,
        "coco_id": coco_id,
        "flickr_id": flickr_id,
    }


def region(region_id, image_id, phrase, x=0, y=0, width=80, height=60):
    return {"region_id": region_id, "width": width, "height": height, "image_id": image_id,
            "phrase": phrase, "y": y, "x": x}


IMAGE_DATA = [
    image(1, "VG_100K", coco_id=None, flickr_id=None),
    image(2, "VG_100K_2", coco_id=139, flickr_id=5891),
    image(3),  # no file in either folder
    image(4),  # only empty phrases
    image(5),  # no region at all
    {"image_id": 6, "url": URL.format("VG_100K", 6), "width": 0, "height": 10},  # malformed
    image(2, "VG_100K_2"),  # duplicate image id
]
REGIONS = [
    {"regions": [
        region(1382, 1, "the clock is green in colour ", x=400, y=300, width=400, height=300),
        region(1200, 1, "shade is along the street", x=80, y=60, width=8000, height=6),
        region(1383, 1, "  "),
        {"region_id": 1384, "image_id": 1, "phrase": "no box"},
    ], "id": 1},
    {"regions": [region(3000, 2, "a tall tree")], "id": 2},
    {"regions": [region(4000, 3, "a missing picture")], "id": 3},
    {"regions": [region(5000, 4, ""), region(5001, 4, " \t ")], "id": 4},
    {"regions": [region(6000, 99, "a region of an unknown image")], "id": 99},
    {"id": 7},  # malformed element: no regions list
    {"regions": [], "id": 98},  # unknown image with no regions
]
OBJECTS = [
    {"image_id": 1, "image_url": URL.format("VG_100K", 1), "objects": [
        {"synsets": ["clock.n.01"], "h": 300, "object_id": 1058498, "merged_object_ids": [],
         "names": ["clock"], "w": 400, "y": 300, "x": 400},
        {"object_id": 1058499, "names": ["shade"], "w": "wide", "h": 1, "x": 0, "y": 0},  # malformed
    ]},
    {"image_id": 2, "image_url": URL.format("VG_100K_2", 2), "objects": [
        {"object_id": 7, "name": "tree", "x": 0, "y": 0, "w": 800, "h": 600},  # older release: ``name``
    ]},
    {"image_id": 77, "objects": [{"names": ["x"], "synsets": [], "x": 0, "y": 0, "w": 1, "h": 1}]},
]


def make_source(tmp_path, objects=True, image_data=IMAGE_DATA, regions=REGIONS):
    write_json(tmp_path / "image_data.json", image_data)
    write_json(tmp_path / "region_descriptions.json", regions, indent=None)
    write_jpeg(tmp_path / "VG_100K" / "1.jpg")
    write_jpeg(tmp_path / "VG_100K_2" / "2.jpg")
    write_jpeg(tmp_path / "VG_100K" / "4.jpg")
    write_jpeg(tmp_path / "VG_100K" / "5.jpg")
    if objects:
        write_json(tmp_path / "objects.json", OBJECTS)
    return VisualGenomeConfig(root=str(tmp_path), objects="objects.json" if objects else None)


def read(config):
    return split(read_all(VisualGenomeReader("vg", config, TextConfig())))


def test_one_pair_per_image_with_its_regions(tmp_path):
    candidates, _ = read(make_source(tmp_path))
    by_key = {c.key: c for c in candidates}
    assert sorted(by_key) == [make_key("vg", 1), make_key("vg", 2)]

    first = by_key[make_key("vg", 1)]
    assert first.modality is Modality.PAIR and first.source_id == "1"
    assert first.text == "shade is along the street"  # lowest region id
    assert first.image_path == str(tmp_path / "VG_100K" / "1.jpg")
    assert first.location == "image_data.json[0]"
    assert first.meta == {
        "image_id": 1,
        "url": URL.format("VG_100K", 1),
        "coco_id": None,
        "flickr_id": None,
        "width": 800,
        "height": 600,
        "regions": [
            {"region_id": 1200, "phrase": "shade is along the street", "box": [0.1, 0.1, 1.0, 0.11]},
            {"region_id": 1382, "phrase": "the clock is green in colour", "box": [0.5, 0.5, 1.0, 1.0]},
        ],
        "objects": [{"names": ["clock"], "synsets": ["clock.n.01"], "box": [0.5, 0.5, 1.0, 1.0]}],
    }

    second = by_key[make_key("vg", 2)]
    assert second.image_path == str(tmp_path / "VG_100K_2" / "2.jpg")  # found in the second folder
    assert (second.meta["coco_id"], second.meta["flickr_id"]) == (139, 5891)
    assert second.meta["objects"] == [{"names": ["tree"], "synsets": [], "box": [0.0, 0.0, 1.0, 1.0]}]


def test_every_bad_input_is_a_reject(tmp_path):
    _, rejects = read(make_source(tmp_path))
    assert by_location(rejects) == {
        "image_data.json[2]": "missing_image",
        "image_data.json[3]": "empty_text",  # left with no region
        "image_data.json[4]": "empty_text",  # never had one
        "image_data.json[5]": "malformed",
        "image_data.json[6]": "duplicate_id",
        "region_descriptions.json[0][regions][2]": "empty_text",
        "region_descriptions.json[0][regions][3]": "malformed",
        "region_descriptions.json[3][regions][0]": "empty_text",
        "region_descriptions.json[3][regions][1]": "empty_text",
        "region_descriptions.json[4][regions][0]": "unknown_reference",
        "region_descriptions.json[5]": "malformed",
        "region_descriptions.json[6]": "unknown_reference",
        "objects.json[0][objects][1]": "malformed",
        "objects.json[2]": "unknown_reference",
    }
    keys = {r.location: r.key for r in rejects}
    assert keys["image_data.json[2]"] == make_key("vg", 3)
    assert keys["region_descriptions.json[4][regions][0]"] is None


def test_every_image_and_region_is_accounted_for(tmp_path):
    candidates, rejects = read(make_source(tmp_path, objects=False))
    image_rejects = [r for r in rejects if r.location.startswith("image_data.json")]
    assert len(candidates) + len(image_rejects) == len(IMAGE_DATA)
    region_rejects = [r for r in rejects if "[regions]" in r.location]
    kept = sum(len(c.meta["regions"]) for c in candidates)
    # regions of image 3 (missing file) go with the image's reject
    assert kept + len(region_rejects) + 1 == sum(len(e.get("regions", [])) for e in REGIONS)
    assert all("objects" not in c.meta for c in candidates)


def test_json_syntax_error_in_the_streamed_file_names_it(tmp_path):
    config = make_source(tmp_path)
    path = tmp_path / "region_descriptions.json"
    path.write_text(path.read_text().replace('{"id": 7}', '{"id": 7,}'))
    pattern = rf"{path}: not valid JSON: .*line 1 column \d+ \(byte \d+, in element 5\)"
    with pytest.raises(SourceError, match=pattern):
        read(config)


def test_absent_files_and_folders_raise_source_error(tmp_path):
    config = make_source(tmp_path)
    (tmp_path / "image_data.json").unlink()
    with pytest.raises(SourceError, match=str(tmp_path / "image_data.json")):
        read(config)
    config = make_source(tmp_path, objects=False)
    config.image_dirs = ["nope", "nada"]
    with pytest.raises(SourceError, match="none of the image folders exists"):
        read(config)
