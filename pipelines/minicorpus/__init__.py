"""A mini corpus in every raw format, with planted bad records and the exact counts ingest must get.

``generate(out_dir, seed, scale)`` writes, under ``out_dir``:

- ``datasets/<dataset>/``: each public release in its own layout and field names (FORMATS.md):
  synthetic pictures of simple objects (ball, box, tent, tree, car, house, sun, kite) on a sky and
  ground, with true captions, boxes, region phrases and class labels; and English prose for the text
  corpora. A few records of each source are planted to be refused (docs/SOURCES.md names the reason).
- ``corpus.yaml``: a config with one source per format (``output: corpus``, text packed per sentence).
- ``datasets/eval/``: evaluation splits in their public formats, naming some of the corpus' images.
- ``expected.json``: per source name, ``samples`` (written by ingest) and ``rejects`` (reason -> count),
  kept as bookkeeping while generating (not by reading the files back), plus ``kind``, ``modality``,
  ``records`` (samples + rejects) and ``planted`` (what was planted where, for debugging); and under
  ``_clean``, what ``clean`` must find (cleaning.py): ``duplicates`` ``[{key, duplicate_of, kind}]``
  (every copy that is dropped, ``kind`` exact_image | near_image | exact_text, the kept copy being the
  one with the smallest (source position in corpus.yaml, key)), ``contaminated`` ``[{key, eval_set,
  matched_by}]`` (one per sample and evaluation set, ``matched_by`` coco_id | flickr_id | url, or
  duplicate for the dropped copy of a matched sample) and ``planted`` (the copied files, for debugging).
  With ``url_base``, the ``cc_urls`` entry has ``url_status`` too (download status -> URLs).

With ``models=True`` the models of the later stages are built offline under ``models/`` (models.py: a small
random-weight detector with the corpus' classes, tiny Marian translation pairs) and ``corpus.yaml`` gets the
``annotate:`` and ``retrieval:`` sections that name them, so every stage runs on the mini corpus.

The same ``seed`` and ``scale`` give byte-identical files; ``scale`` multiplies the number of images
and documents (planted bad records stay fixed, except ImageNet's unlabelled synset, which scales).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.minicorpus import cleaning, coco, labels, prose, text_sources, visual_genome, web
from pipelines.minicorpus.common import Tally, write_text
from schemas.records import Modality

DATASETS = "datasets"
CONFIG = "corpus.yaml"
EXPECTED = "expected.json"
CLEAN = "_clean"  # expected.json: planted duplicates and evaluation-set matches


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str
    root: str  # under datasets/
    modality: Modality
    write: Callable[[str, random.Random, int, Tally], None]
    options: dict[str, Any] = field(default_factory=dict)


SPECS = (
    Spec("coco", "coco", "coco", Modality.PAIR, coco.write_coco,
         {"shards": 4, "instances": coco.INSTANCES, "tags": "annotations"}),
    Spec("coco_unlabeled", "image_folder", "coco", Modality.IMAGE, coco.write_unlabeled, {"shards": 2}),
    Spec("vg", "visual_genome", "visual_genome", Modality.PAIR, visual_genome.write,
         {"shards": 3, "objects": visual_genome.OBJECTS, "tags": "annotations"}),
    Spec("cc", "conceptual_captions", "conceptual_captions", Modality.PAIR, web.write_cc, {"shards": 2}),
    Spec("cc_img2dataset", "img2dataset", "cc_img2dataset", Modality.PAIR, web.write_img2dataset, {"shards": 2}),
    Spec("sbu", "sbu", "sbu", Modality.PAIR, web.write_sbu, {"shards": 2}),
    Spec("openimages", "openimages", "openimages", Modality.PAIR, labels.write_openimages,
         {"shards": 3, "boxes": labels.OI_BOXES, "pseudo_pairs": {"enabled": True}, "tags": "annotations"}),
    Spec("imagenet", "imagenet21k", "imagenet21k", Modality.PAIR, labels.write_imagenet,
         {"shards": 2, "pseudo_pairs": {"enabled": True}}),
    Spec("bookcorpus", "bookcorpus", "bookcorpus", Modality.TEXT, text_sources.write_books, {"shards": 2}),
    Spec("bookcorpus_lines", "bookcorpus", "bookcorpus_lines", Modality.TEXT, text_sources.write_book_lines,
         {"shards": 2, "layout": "lines", "files": "books_large_p*.txt"}),
    Spec("wiki", "wikipedia", "wikipedia", Modality.TEXT, text_sources.write_wiki, {"shards": 3}),
    Spec("owt", "openwebtext", "openwebtext", Modality.TEXT, text_sources.write_openwebtext,
         {"shards": 2, "files": "**/*.xz"}),
)


def generate(out_dir: str, seed: int = 0, scale: int = 1, url_base: str | None = None, models: bool = False) -> str:
    """Write the mini corpus, ``corpus.yaml`` and ``expected.json`` under ``out_dir``; return the
    config's path. A previous generation's ``datasets/`` there is replaced; anything else is refused.
    With ``url_base`` (a static HTTP server serving ``datasets/web``), a URL-list source is added; with
    ``models``, the later stages' models and config sections."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale: expected a positive integer, got {scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an integer, got {seed!r}")
    out_dir = os.path.abspath(out_dir)
    data_dir = os.path.join(out_dir, DATASETS)
    if os.path.exists(data_dir):
        if not os.path.isfile(os.path.join(out_dir, EXPECTED)):
            raise ValueError(f"{data_dir} exists and is not a generated mini corpus: not overwriting it")
        shutil.rmtree(data_dir)
    os.makedirs(data_dir)

    expected: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    sentences = {prose.normalise(text) for text in text_sources.COPIED}  # shared: no sentence twice by chance
    tallies = []
    for spec in SPECS:
        tally = Tally(spec.name, spec.kind, spec.modality, sentences)
        spec.write(os.path.join(data_dir, spec.root), random.Random(f"minicorpus:{seed}:{spec.name}"), scale, tally)
        tallies.append(tally)
        expected[spec.name] = tally.as_dict()
        sources[spec.name] = {"kind": spec.kind, "root": f"{DATASETS}/{spec.root}", **spec.options}
    good = cleaning.read_good(data_dir)
    eval_sets, contaminated = cleaning.plant_eval_sets(data_dir, good)
    groups, planted = cleaning.plant_duplicates(data_dir, expected, good)
    if url_base is not None:
        rng = random.Random(f"minicorpus:{seed}:{cleaning.CC_URLS}")
        expected[cleaning.CC_URLS] = cleaning.write_url_source(data_dir, url_base, rng, scale)
        sources[cleaning.CC_URLS] = {"kind": "conceptual_captions", "root": f"{DATASETS}/{cleaning.CC_URLS}",
                                     "images": None, "shards": 2}
    duplicates = cleaning.duplicate_entries(groups + cleaning.text_groups(tallies), list(sources))
    contaminated = cleaning.sort_contaminated(contaminated + cleaning.inherited(duplicates, contaminated))
    expected[CLEAN] = {"duplicates": duplicates, "contaminated": contaminated, "planted": planted}

    stages = {}
    if models:
        from pipelines.minicorpus.models import build_models, stage_sections

        build_models(out_dir, seed)
        stages = stage_sections()
    config_path = os.path.join(out_dir, CONFIG)
    write_text(config_path, _yaml(sources, eval_sets, seed, scale, stages))
    write_text(os.path.join(out_dir, EXPECTED), json.dumps(expected, indent=2) + "\n")
    return config_path


def _yaml(sources: dict[str, Any], eval_sets: list[dict[str, str]], seed: int, scale: int, stages: dict) -> str:
    import yaml

    header = (f"# unicorpus mini corpus (pipelines.minicorpus, seed {seed}, scale {scale}).\n"
              "# Roots are relative to this file; expected.json beside it has the counts ingest must get.\n")
    body = yaml.safe_dump({"output": "corpus", "text": {"pack": "sentence"}, "sources": sources,
                           "clean": {"near_duplicate_distance": 4, "eval_sets": eval_sets}, **stages},
                          sort_keys=False, default_flow_style=False)
    return header + body


def source_entries(expected: dict[str, Any]) -> dict[str, Any]:
    """The per-source entries of expected.json (``_clean`` holds the clean stage's oracle)."""
    return {name: entry for name, entry in expected.items() if name != CLEAN}


def total_samples(expected: dict[str, Any]) -> int:
    return sum(entry["samples"] for entry in source_entries(expected).values())


__all__ = ["generate", "SPECS", "CONFIG", "EXPECTED", "CLEAN", "source_entries", "total_samples"]
