"""The packed training shards: the whole contract between ``pack`` (pipelines) and ``training/``.

``packed/<task>/<source>-NNNNN.tar`` holds self-contained WebDataset samples (one tar per task and raw
shard ``raw/<source>/NNNNN.tar``, samples sorted by key); nothing in a training worker needs random access
to another shard or table. ``packed/<task>/sizes.json`` maps shard file name -> sample
count (the open_clip convention). Every member decodes without our code (JPEG/PNG, UTF-8 text, JSON,
``.npy`` arrays; never pickles).

Members of one sample (``KEY.<member>``):

- ``jpg`` / ``png``: the image (tasks with images), the original bytes from ``raw/``.
- ``txt``: the text the task trains on (caption, sentence, tag sequence); absent for image-only samples.
- ``json``: everything else (below).
- ``region_feats.npy``: float16 ``[R, D]`` region features from ``ann/detect`` (absent when the regions
  came from annotations without a detector: then ``regions.has_features`` is false).
- ``region_probs.npy``: float16 ``[R, C]`` the detector's class distribution per region (MRC-kl, UNITER §3.2),
  absent like ``region_feats.npy``.

``json`` fields (all tasks): ``key`` (the packed sample's key), ``sample_key`` (the raw sample),
``source``, ``task``, ``modality`` (pair | image | text), ``text_index`` (which text of the raw sample,
null for images). With an image: ``regions`` = ``{"width", "height", "boxes": [[x1, y1, x2, y2], ...]
normalised, "labels", "scores", "origins", "has_features", "has_probs"}`` in ``ann/detect`` order (by
score, annotations first; UNIMO §3.2: > 0.2, at most 100); both location encodings derive from the boxes
(``schemas.regions``). ``has_features`` / ``has_probs``: the ``.npy`` members are present (every region has
features / a class distribution; false for an image without regions). With a text: ``phrases`` =
``[{"text", "start", "end"}]`` noun phrases with character offsets (UNIMO whole-phrase masking, mu-VLA
§3.3.2). Per task, in addition:

- ``tag_pairs`` (mu-VLA R-T): ``txt`` is the image's tag sequence; ``phrases`` are its tags.
- ``weak_pairs`` (mu-VLA R-P): ``score`` (retrieval cosine), ``rank``, ``text_key`` (the retrieved
  sentence's sample; also ``text_source``, ``retrieved_text_index``, ``weak_pairs`` = the entry's name),
  ``phrases`` of the retrieved sentence and ``phrase_regions`` = ``[{"start", "end", "phrase", "region", "score"}]``
  (mu-VLA §3.3.2; ``region`` indexes ``regions``).
- ``cmcl`` (UNIMO §2.1, App. A): ``positives`` = ``[{"text", "method"}]`` (back-translations),
  ``negatives`` = ``[{"text", "method", "score", "key"}]`` (scene-graph and TF-IDF rewrites taking turns;
  ``key``: the sample a TF-IDF negative's caption belongs to, null for scene-graph rewrites),
  ``related_texts`` = ``[{"key", "source", "text_index", "text", "score"}]`` and ``related_images`` =
  ``[{"key", "source", "score", "member", "regions"}]`` whose images are inlined as members ``related_<i>.jpg``
  (or ``.png``; the ``member`` field names it) with ``related_<i>.region_feats.npy`` / ``related_<i>.region_probs.npy``.
- ``pairs_aligned_<X>`` (mu-VLA §1, App. A Table 6): ``aligned`` (bool), ``text_from`` and
  ``text_from_index`` (the sample and caption whose text this sample carries; itself when aligned; the
  ``phrases`` are that caption's). Per raw shard exactly ``round(n * X / 100)`` of the n pairs are aligned.

Keys: ``<sample key>`` (images, texts, tag_pairs), ``<sample key>_t<caption>`` (pairs, cmcl,
pairs_aligned_<X>), ``<sample key>_<weak-pairs name>_r<rank>`` (weak_pairs).
"""

from __future__ import annotations

PAIRS = "pairs"
IMAGES = "images"
TEXTS = "texts"
TAG_PAIRS = "tag_pairs"
WEAK_PAIRS = "weak_pairs"
CMCL = "cmcl"
ALIGNED_PREFIX = "pairs_aligned_"

BASE_TASKS = (PAIRS, IMAGES, TEXTS, TAG_PAIRS, WEAK_PAIRS, CMCL)

SIZES_FILE = "sizes.json"
REGION_FEATS = "region_feats.npy"
REGION_PROBS = "region_probs.npy"

# Which members and json fields a task's samples always carry (checked by pack's tests and the loader).
_IMAGE = ("regions",)
_TEXT = ("phrases",)
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    PAIRS: _IMAGE + _TEXT,
    IMAGES: _IMAGE,
    TEXTS: _TEXT,
    TAG_PAIRS: _IMAGE + _TEXT,
    WEAK_PAIRS: _IMAGE + _TEXT + ("score", "rank", "text_key", "phrase_regions"),
    CMCL: _IMAGE + _TEXT + ("positives", "negatives", "related_texts", "related_images"),
}
_COMMON = ("key", "sample_key", "source", "task", "modality", "text_index")


def aligned_task(percent: int) -> str:
    """The alignment-ratio control task with ``percent`` % of pairs aligned (mu-VLA App. A Table 6)."""
    if not 0 <= percent <= 100:
        raise ValueError(f"an alignment ratio is a percentage in 0..100, got {percent}")
    return f"{ALIGNED_PREFIX}{percent}"


def required_fields(task: str) -> tuple[str, ...]:
    """The json fields every sample of ``task`` carries."""
    if task.startswith(ALIGNED_PREFIX):
        return _COMMON + REQUIRED_FIELDS[PAIRS] + ("aligned", "text_from")
    if task not in REQUIRED_FIELDS:
        raise ValueError(f"unknown packed task {task!r}; expected one of {', '.join(BASE_TASKS)} "
                         f"or {ALIGNED_PREFIX}<percent>")
    return _COMMON + REQUIRED_FIELDS[task]


def missing_fields(task: str, meta: dict) -> list[str]:
    """The required json fields a packed sample lacks (empty when it is complete)."""
    return [name for name in required_fields(task) if name not in meta]
