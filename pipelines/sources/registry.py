"""Source kind -> reader class, imported on first use so a run loads only the readers it needs."""

from __future__ import annotations

import importlib

READERS = {
    "coco": "coco:CocoReader",
    "image_folder": "image_folder:ImageFolderReader",
    "visual_genome": "visual_genome:VisualGenomeReader",
    "conceptual_captions": "conceptual:ConceptualCaptionsReader",
    "img2dataset": "conceptual:Img2datasetReader",
    "sbu": "sbu:SbuReader",
    "openimages": "openimages:OpenImagesReader",
    "imagenet21k": "imagenet:ImageNetReader",
    "bookcorpus": "text:BookCorpusReader",
    "wikipedia": "text:WikipediaReader",
    "openwebtext": "text:OpenWebTextReader",
}


def reader_class(kind: str) -> type:
    module, name = READERS[kind].split(":")
    return getattr(importlib.import_module(f"pipelines.sources.{module}"), name)
