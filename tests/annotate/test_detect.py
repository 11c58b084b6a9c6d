"""detect: location encodings, letterbox geometry, region selection, the YOLO detector against plain
ultralytics predict, and the stage through DirectRunner on the ingested mini corpus."""

import dataclasses
import json
import math
import os
import pickle
import random
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.annotators.detect import (
    ANNOTATION,
    DETECTOR,
    Detection,
    Detector,
    Letterbox,
    annotation_objects,
    class_distribution,
    detector_regions,
    import_ultralytics,
)
from pipelines.minicorpus.scenes import draw, sample_scene
from pipelines.runner import RunnerConfig
from pipelines.sidecar_tables import read_shard_input, read_sidecar
from pipelines.stages.detect import run_detect
from schemas.config_errors import ConfigError
from schemas.regions import muvla_location, uniter_location
from schemas.tables import CLASSES_KEY, DIM_KEY, MODEL_KEY
from tests.conftest import tree_digest

# --- pure functions ----------------------------------------------------------------------------------


def test_location_encodings_derive_from_the_box():
    box = [0.1, 0.2, 0.5, 0.6]
    assert uniter_location(box) == pytest.approx([0.1, 0.2, 0.5, 0.6, 0.4, 0.4, 0.16])
    assert muvla_location(box) == pytest.approx([0.1, 0.2, 0.5, 0.6, 0.16])
    with pytest.raises(ValueError, match="normalised"):
        uniter_location([0.5, 0.2, 0.1, 0.6])
    with pytest.raises(ValueError, match="x1, y1, x2, y2"):
        muvla_location([0.1, 0.2, 0.5])


@pytest.mark.parametrize("width,height", [(200, 150), (120, 160), (128, 128), (37, 301)])
def test_letterbox_geometry_matches_ultralytics_padding(width, height):
    import_ultralytics()
    from ultralytics.data.augment import LetterBox

    size = 128
    padded = LetterBox((size, size), auto=False)(image=np.full((height, width, 3), 255, np.uint8))
    ys, xs = np.nonzero(padded[:, :, 0] != 114)
    geometry = Letterbox.of(width, height, size)
    assert geometry.to_input([0, 0, 1, 1]) == pytest.approx([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    box = [0.1, 0.25, 0.7, 0.9]
    assert geometry.to_normalised(geometry.to_input(box)) == pytest.approx(box)
    assert geometry.to_normalised([-5, -5, size + 5, size + 5]) == [0.0, 0.0, 1.0, 1.0]


def test_class_distribution_sums_to_one():
    assert class_distribution(np.array([0.2, 0.6, 0.2])) == pytest.approx([0.2, 0.6, 0.2])
    assert class_distribution(np.array([0.1, 0.3])) == pytest.approx([0.25, 0.75])
    assert class_distribution(np.zeros(2)).tolist() == [0.5, 0.5]


def test_detector_regions_keep_confident_boxes_best_first_up_to_the_cap():
    detection = Detection(
        boxes=[[0, 0, 64, 64], [10, 10, 20, 20], [0, 0, 128, 128], [5, 5, 6, 6]],
        scores=[0.3, 0.9, 0.2, 0.5],
        class_scores=np.array([[0.3, 0.1], [0.1, 0.9], [0.2, 0.0], [0.0, 0.5]], np.float32),
        features=np.array([[1.0], [2.0], [3.0], [4.0]], np.float32),
        extra_features=np.zeros((0, 1), np.float32),
    )
    square = Letterbox.of(128, 128, 128)
    regions = detector_regions(detection, square, ["cat", "dog"], min_confidence=0.2, max_boxes=2)
    assert [r["score"] for r in regions] == [0.9, 0.5]  # 0.2 is not > 0.2; the cap drops 0.3
    assert [r["label"] for r in regions] == ["dog", "dog"]
    assert [r["feature"].tolist() for r in regions] == [[2.0], [4.0]]
    assert regions[0]["box"] == pytest.approx([10 / 128, 10 / 128, 20 / 128, 20 / 128])
    assert regions[0]["class_probs"] == pytest.approx([0.1, 0.9])
    assert {r["origin"] for r in regions} == {DETECTOR}
    everything = detector_regions(detection, square, ["cat", "dog"], min_confidence=0.0, max_boxes=10)
    assert [r["label"] for r in everything] == ["dog", "dog", "cat", "cat"]


def test_annotation_objects_take_coco_names_and_the_first_vg_name():
    meta = {"objects": [{"name": "car", "box": [0, 0, 0.5, 0.5], "iscrowd": 0},
                        {"names": ["kite", "toy"], "synsets": [], "box": [0.1, 0.1, 0.2, 0.2]},
                        {"names": [], "box": [0, 0, 1, 1]}]}
    assert annotation_objects(meta) == [("car", [0, 0, 0.5, 0.5]), ("kite", [0.1, 0.1, 0.2, 0.2])]
    assert annotation_objects({}) == []


def test_box_means_average_the_feature_map_over_each_box():
    import torch

    from pipelines.annotators.detect import box_means

    maps = torch.randn(2, 3, 6, 8)
    boxes = torch.tensor([[1.0, 2.0, 4.0, 5.0], [0.0, 0.0, 8.0, 6.0], [0.5, 0.5, 2.5, 1.5], [3.2, 3.2, 3.3, 3.3]],
                         dtype=torch.float64)
    means = box_means(maps, boxes, torch.tensor([0, 1, 1, 0]))
    assert torch.allclose(means[0], maps[0, :, 2:5, 1:4].mean((1, 2)), atol=1e-5)
    assert torch.allclose(means[1], maps[1].mean((1, 2)), atol=1e-5)
    weights = torch.zeros(6, 8)  # cells 0-2 x 0-1, the border cells half inside
    weights[0:2, 0:3] = 1
    weights[:, 0] *= 0.5
    weights[:, 2] *= 0.5
    weights[0, :] *= 0.5
    weights[1, :] *= 0.5
    assert torch.allclose(means[2], (maps[1] * weights).sum((1, 2)) / weights.sum(), atol=1e-5)
    tiny = torch.zeros(6, 8)  # a box under a cell: widened to the cell around its centre (2.75-3.75)
    tiny[2:4, 2:4] = torch.tensor([[0.25 * 0.25, 0.25 * 0.75], [0.75 * 0.25, 0.75 * 0.75]])
    assert torch.allclose(means[3], (maps[0] * tiny).sum((1, 2)), atol=1e-5)


def test_detect_config_refuses_bad_thresholds():
    from schemas.stages import DetectConfig

    DetectConfig().validate("annotate.detect")
    with pytest.raises(ConfigError, match=r"annotate\.detect\.iou_threshold: expected 0 < x <= 1, got 0"):
        DetectConfig(iou_threshold=0).validate("annotate.detect")
    with pytest.raises(ConfigError, match=r"annotate\.detect\.min_confidence"):
        DetectConfig(min_confidence=1.0).validate("annotate.detect")


# --- the detector ---------------------------------------------------------------------------------------


def _pictures(count, seed=3):
    rng = random.Random(seed)
    return [draw(sample_scene(rng)) for _ in range(count)]


def test_detector_finds_what_plain_ultralytics_predict_finds(detector_path):
    """Same boxes, scores and labels as ``YOLO.predict``, plus a class distribution whose argmax is the label."""
    YOLO = import_ultralytics().YOLO

    pictures = _pictures(3)
    detector = Detector(detector_path, image_size=128, device="cpu", min_confidence=0.3, max_boxes=20)
    detections = detector.detect([np.asarray(p) for p in pictures], [[], [], []])
    results = YOLO(detector_path).predict(pictures, imgsz=128, conf=0.3, iou=0.7, max_det=20, device="cpu",
                                          verbose=False)
    assert sum(len(d.boxes) for d in detections) > 0
    for picture, detection, result in zip(pictures, detections, results, strict=True):
        geometry = Letterbox.of(picture.width, picture.height, 128)
        ours = np.array([geometry.to_normalised(b) for b in detection.boxes]).reshape(-1, 4)
        assert ours == pytest.approx(result.boxes.xyxyn.numpy(), abs=1e-4)
        assert detection.scores == pytest.approx(result.boxes.conf.tolist(), abs=1e-5)
        assert [int(np.argmax(c)) for c in detection.class_scores] == result.boxes.cls.int().tolist()
        assert [max(c) for c in detection.class_scores] == pytest.approx(detection.scores, abs=1e-6)
        assert {len(f) for f in detection.features} <= {detector.dim}


def test_features_are_pooled_at_extra_boxes_the_same_way(detector_path):
    detector = Detector(detector_path, image_size=128, device="cpu", min_confidence=0.0, max_boxes=3)
    images = [np.asarray(p) for p in _pictures(2)]
    first = detector.detect(images, [[], []])
    again = detector.detect(images, [first[0].boxes[:2], []])
    assert np.allclose(again[0].extra_features, first[0].features[:2], atol=1e-5)
    assert again[1].extra_features.shape == (0, detector.dim)
    assert not np.allclose(first[0].features[0], first[1].features[0], atol=1e-3)  # another picture, another feature
    assert detector.dim == 64 + 128 + 256  # yolov8n's P3, P4, P5 channels


def test_a_model_yaml_gives_the_same_random_detector_every_time():
    ultralytics = import_ultralytics()
    yaml = os.path.join(os.path.dirname(ultralytics.__file__), "cfg", "models", "v8", "yolov8.yaml")
    image = np.asarray(_pictures(1)[0])
    first, second = (Detector(yaml, image_size=64, device="cpu", min_confidence=0.0, max_boxes=2).detect([image], [[]])
                     for _ in range(2))
    assert len(first[0].boxes) == 2 and first[0].class_scores.shape == (2, 80)
    assert np.array_equal(first[0].features, second[0].features)
    assert first[0].boxes == second[0].boxes


def test_built_detector_is_deterministic(detector_path, tmp_path):
    import torch

    from pipelines.minicorpus.detector_model import build_detector

    first = torch.load(detector_path, weights_only=False)["model"].state_dict()
    second = torch.load(build_detector(str(tmp_path / "again.pt")), weights_only=False)["model"].state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


# --- the stage ------------------------------------------------------------------------------------------


def _run(config, names, overwrite=False):
    return {r.name: r for r in run_detect(config, names, RunnerConfig(), overwrite=overwrite, show_progress=False)}


def _images(root, name):
    from pipelines.sidecar_tables import raw_shards

    return [row for shard in raw_shards(root, name) for row in read_shard_input(root, name, shard).rows
            if row["modality"] in ("pair", "image")]


def _footers(root, name):
    folder = os.path.join(root, "ann", "detect", name)
    return [pq.read_schema(os.path.join(folder, f)).metadata for f in sorted(os.listdir(folder))]


def _mtimes(root):
    folder = os.path.join(root, "ann", "detect", "cc")
    return {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder)}


def test_stage_annotates_every_image_with_detector_and_ground_truth_regions(detect_corpus, detector_path):
    config, root = detect_corpus
    results = _run(config, ["coco", "cc"])
    for name in ("coco", "cc"):
        images = {row["key"]: row for row in _images(root, name)}
        rows = list(read_sidecar(root, "ann/detect", name))
        assert sorted(r["key"] for r in rows) == sorted(images)
        assert results[name].counts.records_in == results[name].counts.written == len(images)
        footers = {(f[MODEL_KEY], f[DIM_KEY], f[CLASSES_KEY]) for f in _footers(root, name)}
        assert len(footers) == 1  # every shard's table says which model, dimension and classes
        ((model, dim, classes),) = footers
        footer, classes, dim = {MODEL_KEY: model}, json.loads(classes), int(dim)
        assert footer[MODEL_KEY].decode() == detector_path and classes[0] == "ball" and dim == 448
        for row in rows:
            assert (row["width"], row["height"]) == (images[row["key"]]["width"], images[row["key"]]["height"])
            regions = row["regions"]
            truth = [r for r in regions if r["origin"] == ANNOTATION]
            detected = [r for r in regions if r["origin"] == DETECTOR]
            assert regions == truth + detected  # annotations first
            expected = annotation_objects(images[row["key"]]["meta"]) if name == "coco" else []
            assert [(r["label"], r["box"]) for r in truth] == [(label, pytest.approx(box)) for label, box in expected]
            assert all(r["score"] == 1.0 and r["class_probs"] is None and len(r["feature"]) == dim for r in truth)
            assert 1 <= len(detected) <= 5
            scores = [r["score"] for r in detected]
            assert scores == sorted(scores, reverse=True)
            for r in detected:
                assert all(0.0 <= v <= 1.0 for v in r["box"]) and r["box"][0] <= r["box"][2]
                assert len(r["class_probs"]) == len(classes) and math.isclose(sum(r["class_probs"]), 1, rel_tol=1e-5)
                assert r["label"] == classes[int(np.argmax(r["class_probs"]))]
                assert len(r["feature"]) == dim
    assert any(r["origin"] == ANNOTATION for row in read_sidecar(root, "ann/detect", "coco") for r in row["regions"])


def test_rerun_skips_finished_shards_a_changed_parameter_redoes_them(detect_corpus):
    config, root = detect_corpus
    first = _run(config, ["cc"])["cc"]
    assert first.skipped_shards == 0
    digest, times = tree_digest(os.path.join(root, "ann")), _mtimes(root)
    again = _run(config, ["cc"])["cc"]
    assert again.skipped_shards == again.shards == first.shards
    assert _mtimes(root) == times  # not rewritten
    redone = _run(config, ["cc"], overwrite=True)["cc"]
    assert redone.skipped_shards == 0 and _mtimes(root) != times
    assert tree_digest(os.path.join(root, "ann")) == digest  # the same input and parameters: the same bytes
    fewer = dataclasses.replace(config.annotate.detect, max_boxes=2)
    changed = _run(dataclasses.replace(config, annotate=dataclasses.replace(config.annotate, detect=fewer)), ["cc"])
    assert changed["cc"].skipped_shards == 0
    assert max(len(row["regions"]) for row in read_sidecar(root, "ann/detect", "cc")) == 2


def test_annotations_alone_need_no_model(detect_corpus):
    config, root = detect_corpus
    vg = dataclasses.replace(config.sources["vg"], tags="annotations")
    detect = dataclasses.replace(config.annotate.detect, model=None)
    config = dataclasses.replace(config, sources={**config.sources, "vg": vg},
                                 annotate=dataclasses.replace(config.annotate, detect=detect))
    _run(config, ["vg"])
    rows = list(read_sidecar(root, "ann/detect", "vg"))
    images = {row["key"]: row for row in _images(root, "vg")}
    assert len(rows) == len(images)
    for row in rows:
        expected = annotation_objects(images[row["key"]]["meta"])
        assert [(r["label"], r["box"]) for r in row["regions"]] == [(lb, pytest.approx(b)) for lb, b in expected]
        assert all(r["origin"] == ANNOTATION and r["feature"] is None for r in row["regions"])
    assert sum(len(row["regions"]) for row in rows) > 0
    assert all(DIM_KEY not in footer for footer in _footers(root, "vg"))


def test_a_detector_source_without_a_model_fails_naming_the_key(detect_corpus):
    config, _ = detect_corpus
    detect = dataclasses.replace(config.annotate.detect, model=None)
    config = dataclasses.replace(config, annotate=dataclasses.replace(config.annotate, detect=detect))
    with pytest.raises(ConfigError, match=r"annotate\.detect\.model: no model configured; put the path of "
                                          r"ultralytics YOLO"):
        _run(config, ["cc"])


def test_an_undecodable_image_becomes_a_reject(detect_corpus):
    config, root = detect_corpus
    row = read_shard_input(root, "cc", 0).rows[0]
    with open(os.path.join(root, "raw", "cc", "00000.tar"), "r+b") as tar:
        tar.seek(row["image_offset"])
        tar.write(b"\0" * row["image_size"])
    result = _run(config, ["cc"])["cc"]
    assert result.counts.rejected == {"corrupt_image": 1}
    assert result.counts.records_in == result.counts.written + 1
    (reject,) = pq.read_table(os.path.join(root, "rejects", "detect", "cc", "00000.parquet")).to_pylist()
    assert (reject["key"], reject["reason"], reject["location"]) == (row["key"], "corrupt_image", "raw/cc/00000.tar")
    assert "UnidentifiedImageError" in reject["detail"] and str(row["image_offset"]) in reject["detail"]
    assert row["key"] not in {r["key"] for r in read_sidecar(root, "ann/detect", "cc")}


_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_DETECT_IN_A_PROCESS = """
import pickle, sys
import torch
if sys.argv[2] == "torchvision-first":  # as in a process that ran predict() or other stages before
    import torchvision
torch.set_num_threads(int(sys.argv[3]))
from pipelines.runner import RunnerConfig
from pipelines.stages.detect import run_detect
with open(sys.argv[1], "rb") as f:
    config = pickle.load(f)
run_detect(config, ["cc", "coco"], RunnerConfig(), overwrite=True, show_progress=False)
"""


def test_two_processes_with_different_histories_write_identical_tables(detect_corpus, tmp_path):
    """Saturated scores tie; ultralytics' NMS breaks ties by whichever implementation the process has
    imported, and convolutions sum in an order set by the thread count: neither may change the bytes."""
    config, root = detect_corpus
    many = dataclasses.replace(config.annotate.detect, image_size=160, min_confidence=0.2, max_boxes=100)
    with open(tmp_path / "config.pkl", "wb") as f:  # the demo's settings: many boxes with a score of 1.0
        pickle.dump(dataclasses.replace(config, annotate=dataclasses.replace(config.annotate, detect=many)), f)
    digests = []
    for history, threads in (("plain", 2), ("torchvision-first", 1)):
        env = {**os.environ, "PYTHONPATH": _REPO}
        done = subprocess.run([sys.executable, "-c", _DETECT_IN_A_PROCESS, str(tmp_path / "config.pkl"), history,
                               str(threads)], capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr
        digests.append(tree_digest(os.path.join(root, "ann", "detect")))
    assert digests[0] == digests[1] and len(digests[0]) > 2
