"""Evaluation splits in their public formats, and decontamination against them (UNITER §3.3, App. A.1).

UNITER removes from pre-training every image of a downstream val/test split (VQA, COCO/Flickr30K
retrieval, COCO captioning Karpathy split, RefCOCO/+/g, BUTD), from every source; Flickr30K overlap is
found by URL. A sample is matched to an eval set by, in this order:

1. ``coco_id``: the COCO image id (COCO samples, Visual Genome's ``coco_id``);
2. ``flickr_id``: the Flickr photo id (Visual Genome's ``flickr_id``, or read off a Flickr URL, on
   either side: Flickr serves one photo under many hosts and size suffixes);
3. ``url``: the normalised image URL (``normalise_url``);
4. ``phash``: the pHash within ``max_distance`` bits of an eval image's pHash (the blocked search of
   ``pipelines.dedup.hamming_pairs``), when the caller filled ``EvalSet.phashes``.

Readers validate their file and raise ``ValueError`` naming the file and the line, element or field.
A split selection that matches nothing in the file is an error too: decontaminating against an empty
set would silently decontaminate nothing.
"""

from __future__ import annotations

import codecs
import io
import json
import pickle
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from pipelines.dedup import hamming_pairs, parse_phash

KARPATHY_EVAL_SPLITS = ("val", "test")  # restval and train are training images
REFCOCO_EVAL_SPLITS = ("val", "testA", "testB", "test")
_URL_KINDS = {"visual_genome", "conceptual_captions", "img2dataset", "sbu", "openimages"}
_TEXT_KINDS = {"bookcorpus", "wikipedia", "openwebtext"}
_PHASH_ONLY_KINDS = {"image_folder", "imagenet21k"}  # no id an eval split could name
_COCO_FILE = re.compile(r"COCO_[a-z]+\d{4}_0*(\d+)\.(?:jpe?g|png)", re.IGNORECASE)
# Flickr30k "ID.jpg", Flickr8k "ID_SECRET.jpg"
_FLICKR_FILE = re.compile(r"(\d+)(?:_[0-9a-f]+)?\.jpe?g", re.IGNORECASE)
_FLICKR_STATIC = re.compile(r"(\d+)_[0-9a-f]+(?:_[a-z0-9]+)?\.(?:jpe?g|png|gif)", re.IGNORECASE)
_FLICKR_PAGE = re.compile(r"/photos/[^/]+/(\d+)(?:/|$)")
_DIGITS = re.compile(r"[0-9]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass
class EvalSet:
    name: str
    coco_ids: set[int] = field(default_factory=set)
    flickr_ids: set[int] = field(default_factory=set)
    urls: set[str] = field(default_factory=set)  # normalised (normalise_url)
    phashes: set[str] = field(default_factory=set)  # filled by the caller from eval images; may be empty


# --- ids and URLs ----------------------------------------------------------------------------------


def normalise_url(url: str) -> str:
    """The URL as matching compares it: no scheme (http and https are the same image), host lower-cased
    without a default port, path and query kept as they are (a query can name the image, e.g.
    ``show.php?id=7``), fragment dropped (never sent to the server)."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return url
    host = parts.hostname.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None and port != _DEFAULT_PORTS[parts.scheme.lower()]:
        host = f"{host}:{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{host}{parts.path or '/'}{query}"


def flickr_id_from_url(url: str) -> int | None:
    """The photo id of a Flickr static-image URL (``static.flickr.com``, ``farmN.staticflickr.com``,
    ``live.staticflickr.com``, ...: ``.../SERVER/ID_SECRET[_SIZE].jpg``) or photo page
    (``flickr.com/photos/USER/ID``); None for any other URL."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
    except ValueError:
        return None
    if host.endswith(("staticflickr.com", "static.flickr.com")):
        match = _FLICKR_STATIC.fullmatch(parts.path.rsplit("/", 1)[-1])
        return int(match.group(1)) if match else None
    if host == "flickr.com" or host.endswith(".flickr.com"):
        match = _FLICKR_PAGE.search(parts.path)
        return int(match.group(1)) if match else None
    return None


def _as_id(value: Any) -> int | None:
    """An image id as releases write it (an integer or a string of digits); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value)
    return None


# --- readers ---------------------------------------------------------------------------------------


def load_karpathy(path: str, name: str, splits: Iterable[str] = KARPATHY_EVAL_SPLITS) -> EvalSet:
    """Karpathy's ``dataset_coco.json`` / ``dataset_flickr30k.json`` (/ ``dataset_flickr8k.json``):
    the images of ``splits``. COCO images by ``cocoid`` (else the ``COCO_val2014_000000391895.jpg``
    filename), Flickr images by the photo id in ``filename`` (Karpathy's ``imgid`` is only a
    position)."""
    return _karpathy(_read_json(path), path, name, tuple(splits))


def _karpathy(data: Any, path: str, name: str, splits: tuple[str, ...]) -> EvalSet:
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise ValueError(f"{path}: a Karpathy split file needs a top-level 'images' list")
    dataset = str(data.get("dataset", "")).lower()
    result = EvalSet(name)
    for index, image in enumerate(images):
        where = f"{path}: images[{index}]"
        if not isinstance(image, dict) or not isinstance(image.get("split"), str):
            raise ValueError(f"{where}: needs a 'split' string")
        if image["split"] not in splits:
            continue
        filename = image.get("filename")
        filename = filename if isinstance(filename, str) else ""
        coco_file = _COCO_FILE.fullmatch(filename)
        if "cocoid" in image or coco_file:
            coco_id = _as_id(image["cocoid"]) if "cocoid" in image else int(coco_file.group(1))
            if coco_id is None:
                raise ValueError(f"{where}: 'cocoid' {image['cocoid']!r} is not an image id")
            result.coco_ids.add(coco_id)
            continue
        flickr_file = _FLICKR_FILE.fullmatch(filename)
        if flickr_file and dataset in ("", "flickr30k", "flickr8k"):
            result.flickr_ids.add(int(flickr_file.group(1)))
            continue
        raise ValueError(f"{where}: neither a 'cocoid' nor a COCO or Flickr 'filename' ({filename!r})")
    return _not_empty(result, path, splits)


def load_vqa_questions(path: str, name: str) -> EvalSet:
    """VQA ``v2_OpenEnded_mscoco_{val2014,test2015}_questions.json``: the COCO images of every question
    (an annotations file, ``{annotations: [{image_id, ...}]}``, reads the same)."""
    return _vqa(_read_json(path), path, name)


def _vqa(data: Any, path: str, name: str) -> EvalSet:
    field_name = next((k for k in ("questions", "annotations") if isinstance(data, dict) and k in data), None)
    if field_name is None or not isinstance(data[field_name], list):
        raise ValueError(f"{path}: a VQA file needs a top-level 'questions' (or 'annotations') list")
    result = EvalSet(name)
    for index, question in enumerate(data[field_name]):
        image_id = _as_id(question.get("image_id")) if isinstance(question, dict) else None
        if image_id is None:
            raise ValueError(f"{path}: {field_name}[{index}]: needs an integer 'image_id'")
        result.coco_ids.add(image_id)
    return _not_empty(result, path, ())


def load_refcoco(path: str, name: str, splits: Iterable[str] = REFCOCO_EVAL_SPLITS) -> EvalSet:
    """RefCOCO/RefCOCO+/RefCOCOg ``refs(unc).p`` / ``refs(umd).p`` (/ ``refs(google).p``): a pickle of a
    list of ``{ref_id, image_id, split, sentences, ann_id, category_id}``; the COCO images of the refs
    in ``splits``. The pickle is read with a loader that refuses every class (plain data only)."""
    with open(path, "rb") as f:
        return _refcoco(_unpickle(f.read(), path), path, name, tuple(splits))


def _refcoco(refs: Any, path: str, name: str, splits: tuple[str, ...]) -> EvalSet:
    if not isinstance(refs, list):
        raise ValueError(f"{path}: a refs pickle holds a list of refs, got {type(refs).__name__}")
    result = EvalSet(name)
    for index, ref in enumerate(refs):
        where = f"{path}: refs[{index}]"
        if not isinstance(ref, dict) or not isinstance(ref.get("split"), str):
            raise ValueError(f"{where}: needs a 'split' string")
        if ref["split"] not in splits:
            continue
        image_id = _as_id(ref.get("image_id"))
        if image_id is None:
            raise ValueError(f"{where}: needs an integer 'image_id'")
        result.coco_ids.add(image_id)
    return _not_empty(result, path, splits)


def load_id_list(path: str, name: str) -> EvalSet:
    """Plain text, one image a line: ``coco:391895``, ``flickr:1000092795``, ``phash:<16 hex digits>``
    or an http(s) URL; blank lines and lines starting with ``#`` are ignored (for BUTD and any other
    list of eval images)."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 ({error})") from None
    return _id_list(text, path, name)


def _id_list(text: str, path: str, name: str) -> EvalSet:
    result = EvalSet(name)
    for number, line in enumerate(io.StringIO(text), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        prefix, _, value = entry.partition(":")
        prefix = prefix.lower()
        if prefix in ("coco", "flickr") and _DIGITS.fullmatch(value.strip()):
            (result.coco_ids if prefix == "coco" else result.flickr_ids).add(int(value))
        elif prefix == "phash":
            result.phashes.add(f"{parse_phash(value.strip(), f'{path}:{number}'):016x}")
        elif prefix in ("http", "https") and value.startswith("//") and urlsplit(entry).hostname:
            result.urls.add(normalise_url(entry))
        else:
            expected = "coco:ID, flickr:ID, phash:HEX or an http(s) URL"
            raise ValueError(f"{path}:{number}: expected {expected}, got {entry!r}")
    return _not_empty(result, path, ())


def load_evalset(path: str, name: str) -> EvalSet:
    """Any of the formats above, by content: a pickle (``.p``/``.pkl``, or pickle bytes) is RefCOCO refs;
    JSON with ``images`` is a Karpathy split file, with ``questions``/``annotations`` a VQA file;
    anything else an id list. Default eval splits throughout."""
    with open(path, "rb") as f:
        raw = f.read().removeprefix(codecs.BOM_UTF8)
    if path.endswith((".p", ".pkl", ".pickle")) or raw[:1] == b"\x80":
        return _refcoco(_unpickle(raw, path), path, name, REFCOCO_EVAL_SPLITS)
    if path.endswith(".json") or raw.lstrip()[:1] == b"{":
        data = _parse_json(raw, path)
        if isinstance(data, dict) and "images" in data:
            return _karpathy(data, path, name, KARPATHY_EVAL_SPLITS)
        if isinstance(data, dict) and ("questions" in data or "annotations" in data):
            return _vqa(data, path, name)
        raise ValueError(f"{path}: JSON that is neither a Karpathy split file ('images') nor VQA ('questions')")
    try:
        return _id_list(raw.decode("utf-8"), path, name)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 ({error})") from None


def _read_json(path: str) -> Any:
    with open(path, "rb") as f:
        return _parse_json(f.read(), path)


def _parse_json(raw: bytes, path: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not JSON ({error})") from None


class _DataOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only plain data is read)")


def _unpickle(raw: bytes, path: str) -> Any:
    try:
        # latin1: refs pickles were written by Python 2; only ids and split names are read here
        return _DataOnly(io.BytesIO(raw), encoding="latin1").load()
    except Exception as error:  # noqa: BLE001 - any unpickling failure is a malformed file
        raise ValueError(f"{path}: not a readable refs pickle ({type(error).__name__}: {error})") from None


def _not_empty(result: EvalSet, path: str, splits: tuple[str, ...]) -> EvalSet:
    if not (result.coco_ids or result.flickr_ids or result.urls or result.phashes):
        which = f" of splits {', '.join(splits)}" if splits else ""
        raise ValueError(f"{path}: no evaluation images{which} in this file")
    return result


# --- samples ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleRef:
    """What decontamination needs of one pre-training sample."""

    key: str
    source: str
    coco_id: int | None
    flickr_id: int | None
    url: str | None
    phash: str | None


def sample_ref(key: str, source: str, kind: str, meta: dict, phash: str | None) -> SampleRef:
    """The ids of a sample of source ``kind`` from its ``meta`` (docs/SOURCES.md): COCO ``image_id``;
    Visual Genome ``coco_id``, ``flickr_id``, ``url``; CC, img2dataset, SBU, OpenImages ``url``. The
    Flickr id of a Flickr URL counts as ``flickr_id`` (UNITER finds Flickr30K overlap by URL). Text
    kinds have no image (their ``url`` is a web page): an empty ref. Unknown kinds: ``url``,
    ``coco_id`` and ``flickr_id`` of ``meta`` where present."""
    if kind in _TEXT_KINDS:
        return SampleRef(key, source, None, None, None, None)
    coco_id = flickr_id = url = None
    if kind == "coco":
        coco_id = _meta_id(meta, "image_id", key)
    elif kind in _URL_KINDS:
        url = _meta_url(meta, key)
    elif kind not in _PHASH_ONLY_KINDS:  # unknown kind: whatever ids it carries
        coco_id, flickr_id = _meta_id(meta, "coco_id", key), _meta_id(meta, "flickr_id", key)
        url = _meta_url(meta, key)
    if kind == "visual_genome":
        coco_id, flickr_id = _meta_id(meta, "coco_id", key), _meta_id(meta, "flickr_id", key)
    if flickr_id is None and url is not None:
        flickr_id = flickr_id_from_url(url)
    if phash is not None:
        phash = f"{parse_phash(phash, f'{key}: phash'):016x}"
    return SampleRef(key, source, coco_id, flickr_id, url, phash)


def _meta_url(meta: dict, key: str) -> str | None:
    value = meta.get("url")
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key}: meta 'url' {value!r} is not a string")
    return value.strip() or None if value is not None else None


def _meta_id(meta: dict, name: str, key: str) -> int | None:
    value = meta.get(name)
    if value is None:
        return None
    image_id = _as_id(value)
    if image_id is None:
        raise ValueError(f"{key}: meta {name!r} {value!r} is not an image id")
    return image_id


# --- matching --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contamination:
    key: str
    source: str
    eval_set: str
    matched_by: str  # coco_id | flickr_id | url | phash
    detail: str  # e.g. "coco id 391895", "phash distance 2 to an eval image"


def find_contamination(
    refs: Iterable[SampleRef], evalsets: list[EvalSet], max_distance: int = 4
) -> list[Contamination]:
    """One ``Contamination`` per (sample, eval set) the sample's image belongs to, by the first criterion
    in the order coco_id, flickr_id, url, phash (module doc); sorted by key, then eval set order."""
    sets = []
    for evalset in evalsets:
        urls = {normalise_url(url) for url in evalset.urls}
        from_urls = {fid for fid in map(flickr_id_from_url, evalset.urls) if fid is not None}
        sets.append((evalset, urls, from_urls - evalset.flickr_ids))
    found: dict[tuple[int, int], Contamination] = {}  # (ref number, eval set number)
    refs_seen: list[tuple[str, str]] = []
    hashed: list[int] = []  # ref numbers with a pHash
    hash_values: list[int] = []
    any_phashes = any(evalset.phashes for evalset in evalsets)
    for n, ref in enumerate(refs):
        refs_seen.append((ref.key, ref.source))
        url = normalise_url(ref.url) if ref.url else None
        for e, (evalset, urls, flickr_from_urls) in enumerate(sets):
            how = None
            if ref.coco_id is not None and ref.coco_id in evalset.coco_ids:
                how = "coco_id", f"coco id {ref.coco_id}"
            elif ref.flickr_id is not None and ref.flickr_id in evalset.flickr_ids:
                how = "flickr_id", f"flickr id {ref.flickr_id}"
            elif ref.flickr_id is not None and ref.flickr_id in flickr_from_urls:
                how = "flickr_id", f"flickr id {ref.flickr_id} (of an eval URL)"
            elif url is not None and url in urls:
                how = "url", f"url {url}"
            if how:
                found[n, e] = Contamination(ref.key, ref.source, evalset.name, *how)
        if ref.phash is not None and any_phashes:
            hashed.append(n)
            hash_values.append(parse_phash(ref.phash, f"{ref.key}: phash"))
    if hashed:
        _match_phashes(np.array(hashed), np.array(hash_values, np.uint64), sets, refs_seen, max_distance, found)
    return [found[k] for k in sorted(found, key=lambda k: (refs_seen[k[0]][0], k[1]))]


def _match_phashes(hashed, hash_values, sets, refs_seen, max_distance: int, found) -> None:
    """pHash criterion: the blocked Hamming search between the samples' and the eval images' pHashes."""
    members: dict[int, list[int]] = {}  # eval pHash -> eval set numbers
    for e, (evalset, _, _) in enumerate(sets):
        for value in evalset.phashes:
            members.setdefault(parse_phash(value, f"eval set {evalset.name}: phash"), []).append(e)
    eval_values = np.array(sorted(members), np.uint64)
    distinct, inverse = np.unique(hash_values, return_inverse=True)
    i, j, dist = hamming_pairs(distinct, max_distance, eval_values)
    best: dict[int, dict[int, int]] = {}  # distinct sample value -> eval set -> smallest distance
    for u, v, d in zip(i.tolist(), j.tolist(), dist.tolist(), strict=True):
        nearest = best.setdefault(u, {})
        for e in members[int(eval_values[v])]:
            nearest[e] = min(d, nearest.get(e, d))
    for n, u in zip(hashed.tolist(), inverse.tolist(), strict=True):
        for e, d in best.get(u, {}).items():
            if (n, e) not in found:
                key, source = refs_seen[n]
                detail = f"phash distance {d} to an eval image"
                found[n, e] = Contamination(key, source, sets[e][0].name, "phash", detail)
