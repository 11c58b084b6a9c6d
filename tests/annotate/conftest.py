"""Fixtures of the detect tests: a random-weight YOLO built once, and a private copy of the ingested
mini corpus (stages write under the corpus root; other tests share the ``ingested`` one)."""

import dataclasses
import shutil

import pytest

DETECT_SOURCES = ("coco", "cc", "vg")


@pytest.fixture(scope="session")
def detector_path(tmp_path_factory):
    from pipelines.minicorpus.detector_model import build_detector

    return build_detector(str(tmp_path_factory.mktemp("detector") / "yolo-mini.pt"))


@pytest.fixture
def detect_corpus(ingested, detector_path, tmp_path):
    """(config, root): the raw shards of a few sources copied to ``tmp_path``, the detector configured small,
    COCO's tags from its instances and the detector both (the mini corpus takes them from the instances)."""
    config, _, _ = ingested
    root = tmp_path / "corpus"
    for name in DETECT_SOURCES:
        shutil.copytree(f"{config.output}/raw/{name}", root / "raw" / name)
    detect = dataclasses.replace(config.annotate.detect, model=detector_path, min_confidence=0.0, max_boxes=5,
                                 image_size=128, batch_size=4, device="cpu")
    annotate = dataclasses.replace(config.annotate, detect=detect)
    sources = {**config.sources, "coco": dataclasses.replace(config.sources["coco"], tags="both")}
    return dataclasses.replace(config, output=str(root), annotate=annotate, sources=sources), str(root)
