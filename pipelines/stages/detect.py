"""detect: detector regions and ground-truth tags of every image -> ``ann/detect/<source>/`` (Beam shell).

One pipeline per source, because a source's ``tags`` option decides what its annotator does: the
detector (``detector``), the ground-truth objects alone (``annotations``: no model is loaded), or both.
The logic is ``pipelines.annotators.detect``.
"""

from __future__ import annotations

import functools
import json
import os

from pipelines.annotators.detect import (
    IMAGE_MODALITIES,
    Detector,
    DetectSettings,
    annotate_images,
    file_digest,
    uses_detector,
)
from pipelines.results import StageResult
from pipelines.runner import RunnerConfig
from pipelines.stages.per_shard import ShardAnnotator, applicable_sources, run_sidecar_stage
from schemas import layout
from schemas.config import CorpusConfig
from schemas.config_build import output_params, require_path
from schemas.stages import DetectConfig
from schemas.tables import ANN_DETECT, CLASSES_KEY, DIM_KEY, MODEL_KEY


class DetectAnnotator(ShardAnnotator):
    stage = "detect"
    folder = layout.ann("detect")
    schema = ANN_DETECT
    modalities = frozenset(IMAGE_MODALITIES)
    columns = ["key", "modality", "image_offset", "image_size", "json"]

    def __init__(self, config: DetectConfig, tags: str):
        self.config, self.tags = config, tags
        self.model = config.model if uses_detector(tags) else None
        self.detector: Detector | None = None

    def params(self) -> dict:
        params = {"tags": self.tags}
        if self.model:
            params.update(output_params(self.config), model_sha256=file_digest(self.model))
        return params

    def setup(self) -> None:
        if self.model:
            c = self.config
            self.detector = _detector(self.model, os.stat(self.model).st_mtime_ns, c.image_size, c.device,
                                      c.min_confidence, c.max_boxes, c.iou_threshold)

    def annotate(self, shard):
        c = self.config
        return annotate_images(shard, DetectSettings(self.tags, c.batch_size, c.min_confidence, c.max_boxes),
                               self.detector)

    def table_metadata(self) -> dict[bytes, bytes]:
        if self.detector is None:
            return {}
        return {MODEL_KEY: self.model.encode(), DIM_KEY: str(self.detector.dim).encode(),
                CLASSES_KEY: json.dumps(self.detector.names).encode()}


@functools.lru_cache(maxsize=2)
def _detector(path: str, mtime_ns: int, *settings) -> Detector:
    """One detector per process and model file version: the stage runs a pipeline per source, and an
    in-process worker would otherwise load the model again for each."""
    return Detector(path, *settings)


def source_tags(config: CorpusConfig, name: str) -> str:
    """A source's ``tags`` option; sources without ground truth have only the detector."""
    return getattr(config.sources[name], "tags", "detector")


def run_detect(config: CorpusConfig, sources: list[str] | None, runner: RunnerConfig, overwrite: bool = False,
               show_progress: bool = True) -> list[StageResult]:
    detect = config.annotate.detect
    names = applicable_sources(config, DetectAnnotator(detect, "annotations"), sources or detect.sources)
    if any(uses_detector(source_tags(config, name)) for name in names):
        require_path(detect, "model", "annotate.detect")
    results = []
    for name in names:
        factory = functools.partial(DetectAnnotator, detect, source_tags(config, name))
        results += run_sidecar_stage(config, factory, [name], runner, overwrite, show_progress)
    return results
