"""The mini corpus generator: deterministic, loadable, and its files hold what expected.json says.

The per-format checks re-count each source from its files with plain json/csv/tarfile/lzma/pyarrow and
the rules of docs/SOURCES.md: a sanity check of the generator's bookkeeping, not of the readers.
"""

import csv
import io
import itertools
import json
import lzma
import os
import re
import tarfile
from collections import Counter, defaultdict

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.minicorpus import CONFIG, EXPECTED, SPECS, generate, source_entries, total_samples
from pipelines.minicorpus.__main__ import main
from schemas.config import load_config
from schemas.records import AFTER_INGEST, Reason
from tests.conftest import tree_digest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("minicorpus")
    config_path = generate(str(out), seed=0, scale=1)
    with open(os.path.join(out, EXPECTED)) as f:
        expected = json.load(f)
    return out, config_path, expected


def _root(corpus, name):
    out, config_path, _ = corpus
    return load_config(config_path).sources[name].root


def _decodes(path_or_bytes) -> bool:
    try:
        with Image.open(io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes) as im:
            im.load()
        return True
    except Exception:
        return False


def _check(expected, name, samples, rejects):
    want = expected[name]
    got_rejects = {reason: n for reason, n in rejects.items() if n}
    assert (samples, got_rejects) == (want["samples"], want["rejects"]), name
    assert want["records"] == samples + sum(got_rejects.values())


# --- determinism, config, oracle shape ------------------------------------------------------------


def test_same_seed_gives_identical_bytes(tmp_path, corpus):
    out, config_path, _ = corpus
    again = generate(str(tmp_path / "again"), seed=0, scale=1)
    assert os.path.basename(again) == CONFIG
    first, second = tree_digest(out), tree_digest(tmp_path / "again")
    assert len(first) > 100 and first == second


def test_different_seed_gives_different_files(tmp_path, corpus):
    out, _, _ = corpus
    generate(str(tmp_path / "other"), seed=1, scale=1)
    first, second = tree_digest(out), tree_digest(tmp_path / "other")
    shared = set(first.values()) & set(second.values())
    assert first != second and len(shared) < 0.05 * len(first)  # words.txt and the like may coincide


def test_regenerating_in_place_replaces_the_datasets(tmp_path):
    generate(str(tmp_path), seed=3, scale=2)
    generate(str(tmp_path), seed=0, scale=1)
    fresh = tmp_path / "fresh"
    generate(str(fresh), seed=0, scale=1)
    assert tree_digest(tmp_path / "datasets") == tree_digest(fresh / "datasets")
    os.remove(tmp_path / EXPECTED)
    with pytest.raises(ValueError, match="not overwriting"):
        generate(str(tmp_path))
    with pytest.raises(ValueError, match="scale"):
        generate(str(tmp_path / "x"), scale=0)


def test_config_loads_with_one_source_per_format(corpus):
    out, config_path, expected = corpus
    config = load_config(config_path)
    assert config.output == os.path.join(str(out), "corpus")
    assert config.text.pack == "sentence"
    kinds = {name: source.kind for name, source in config.sources.items()}
    assert (
        kinds == {spec.name: spec.kind for spec in SPECS} == {n: e["kind"] for n, e in source_entries(expected).items()}
    )
    assert len(set(kinds.values())) == 11  # every reader kind, bookcorpus in both layouts
    assert config.sources["coco"].instances and config.sources["vg"].objects and config.sources["openimages"].boxes
    assert config.sources["openimages"].pseudo_pairs.enabled and config.sources["imagenet"].pseudo_pairs.enabled
    assert config.sources["bookcorpus_lines"].layout == "lines"
    assert all(2 <= source.shards <= 4 for source in config.sources.values())


def test_expected_names_real_reasons_and_plants_every_one(corpus):
    _, _, expected = corpus
    reasons = {r.value for r in Reason if r not in AFTER_INGEST}
    planted = set()
    for name, entry in source_entries(expected).items():
        assert entry["samples"] > 0 and set(entry["rejects"]) <= reasons, name
        assert all(n > 0 for n in entry["rejects"].values())
        assert sum(p["count"] for p in entry["planted"]) == sum(entry["rejects"].values())
        planted |= set(entry["rejects"])
    assert planted == reasons


def test_scale_multiplies_records_and_cli_writes_the_corpus(tmp_path, corpus, capsys):
    _, _, one = corpus
    assert main([str(tmp_path), "--seed", "0", "--scale", "2"]) == 0
    assert "samples" in capsys.readouterr().out
    with open(tmp_path / EXPECTED) as f:
        two = json.load(f)
    assert two["coco"]["samples"] == 2 * one["coco"]["samples"]
    assert two["coco"]["rejects"] == one["coco"]["rejects"]
    assert two["imagenet"]["rejects"]["no_label"] == 2 * one["imagenet"]["rejects"]["no_label"]
    assert total_samples(two) > 1.8 * total_samples(one)


# --- every format, re-counted from its files --------------------------------------------------------


def test_coco(corpus):
    _, _, expected = corpus
    root = _root(corpus, "coco")
    with open(os.path.join(root, "annotations/captions_train2017.json")) as f:
        captions = json.load(f)
    with open(os.path.join(root, "annotations/instances_train2017.json")) as f:
        instances = json.load(f)
    assert set(captions) == {"info", "licenses", "images", "annotations"}
    assert instances["images"] == captions["images"] and instances["categories"]
    rejects = Counter()
    images = {}
    for image in captions["images"]:
        assert image["file_name"] == f"{image['id']:012d}.jpg"
        if image["id"] in images:
            rejects["duplicate_id"] += 1
        images.setdefault(image["id"], image)
    valid, seen = Counter(), set()
    for ann in captions["annotations"]:
        if ann["id"] in seen:
            rejects["duplicate_id"] += 1
            continue
        seen.add(ann["id"])
        if ann["image_id"] not in images:
            rejects["unknown_reference"] += 1
        elif not ann["caption"].strip():
            rejects["empty_text"] += 1
        else:
            valid[ann["image_id"]] += 1
    categories = {c["id"] for c in instances["categories"]}
    for box in instances["annotations"]:
        if box["image_id"] not in images or box["category_id"] not in categories:
            rejects["unknown_reference"] += 1
        else:
            x, y, w, h = box["bbox"]
            image = images[box["image_id"]]
            assert 0 <= x and 0 <= y and x + w <= image["width"] and y + h <= image["height"]
    samples, modes, rotated = 0, Counter(), 0
    for image_id, image in images.items():
        path = os.path.join(root, "train2017", image["file_name"])
        if not valid[image_id]:
            rejects["empty_text"] += 1
        elif not os.path.exists(path):
            rejects["missing_image"] += 1
        elif not _decodes(path):
            rejects["corrupt_image"] += 1
        else:
            samples += 1
            with Image.open(path) as im:
                modes[im.mode] += 1
                rotated += im.getexif().get(0x0112, 1) == 6
                assert sorted(im.size) == sorted((image["width"], image["height"]))
    assert modes["L"] == 1 and rotated == 1 and 4 <= min(valid[i] for i in valid) and max(valid.values()) <= 7
    _check(expected, "coco", samples, rejects)


def test_coco_unlabeled(corpus):
    _, _, expected = corpus
    import warnings

    from schemas.config import ImageConfig

    folder = os.path.join(_root(corpus, "coco_unlabeled"), "unlabeled2017")
    modes, rejects = Counter(), Counter()
    for name in os.listdir(folder):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(os.path.join(folder, name)) as im:
                if im.width * im.height > ImageConfig().max_pixels:
                    rejects["too_large"] += 1
                else:
                    modes[(im.format, im.mode)] += 1
    assert modes[("PNG", "P")] == 1 and modes[("PNG", "RGBA")] == 1 and rejects["too_large"] == 1
    _check(expected, "coco_unlabeled", sum(modes.values()), rejects)


def test_visual_genome(corpus):
    _, _, expected = corpus
    root = _root(corpus, "vg")
    load = lambda name: json.load(open(os.path.join(root, name)))  # noqa: E731
    images = {d["image_id"]: d for d in load("image_data.json")}
    rejects, samples, folders = Counter(), 0, Counter()
    for entry in load("region_descriptions.json"):
        if entry["id"] not in images:
            rejects["unknown_reference"] += len(entry["regions"])
            continue
        phrases = [r["phrase"] for r in entry["regions"]]
        assert all(r["image_id"] == entry["id"] for r in entry["regions"])
        rejects["empty_text"] += sum(not p.strip() for p in phrases)
        file_name = images[entry["id"]]["url"].rsplit("/", 1)[1]
        found = [d for d in ("VG_100K", "VG_100K_2") if os.path.exists(os.path.join(root, d, file_name))]
        if not any(p.strip() for p in phrases):
            rejects["empty_text"] += 1
        elif not found:
            rejects["missing_image"] += 1
        else:
            samples += 1
            folders[found[0]] += 1
    for entry in load("objects.json"):
        if entry["image_id"] not in images:
            rejects["unknown_reference"] += len(entry["objects"])
        assert all({"names", "synsets", "x", "y", "w", "h"} <= set(o) for o in entry["objects"])
    assert folders["VG_100K"] and folders["VG_100K_2"]
    _check(expected, "vg", samples, rejects)


def test_conceptual_captions(corpus):
    _, _, expected = corpus
    root = _root(corpus, "cc")
    rejects, samples = Counter(), 0
    with open(os.path.join(root, "Train_GCC-training.tsv"), "rb") as f:
        for row, line in enumerate(f.read().split(b"\n")[:-1]):
            try:
                fields = line.decode("utf-8").split("\t")
            except UnicodeDecodeError:
                rejects["non_utf8"] += 1
                continue
            if len(fields) != 2:
                rejects["malformed"] += 1
            elif not fields[0].strip():
                rejects["empty_text"] += 1
            elif not os.path.exists(os.path.join(root, "images", f"{row:08d}.jpg")):
                rejects["missing_image"] += 1
            else:
                samples += 1
    _check(expected, "cc", samples, rejects)


def test_img2dataset(corpus):
    _, _, expected = corpus
    root = _root(corpus, "cc_img2dataset")
    rejects, samples = Counter(), 0
    parquets = sorted(n for n in os.listdir(root) if n.endswith(".parquet"))
    assert parquets == ["00000.parquet", "00001.parquet"]
    for name in parquets:
        table = pq.read_table(os.path.join(root, name))
        assert table.column_names == ["key", "url", "caption", "status", "error_message", "width", "height",
                                      "original_width", "original_height", "exif", "sha256"]
        with tarfile.open(os.path.join(root, name.replace(".parquet", ".tar"))) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for row in table.to_pylist():
            key = row["key"]
            if row["status"] != "success":
                assert row["status"] == "failed_to_download" and row["error_message"]
                assert not any(m.startswith(key + ".") for m in members)
                rejects["failed_download"] += 1
                continue
            assert members[f"{key}.txt"].decode() == row["caption"]
            assert json.loads(members[f"{key}.json"])["key"] == key
            if f"{key}.jpg" not in members:
                rejects["missing_image"] += 1
            else:
                assert _decodes(members[f"{key}.jpg"])
                samples += 1
    _check(expected, "cc_img2dataset", samples, rejects)


def test_sbu(corpus):
    _, _, expected = corpus
    root = _root(corpus, "sbu")
    read = lambda name: open(os.path.join(root, name), "rb").read().split(b"\n")[:-1]  # noqa: E731
    urls, captions = read("SBU_captioned_photo_dataset_urls.txt"), read("SBU_captioned_photo_dataset_captions.txt")
    rejects, samples = Counter({"malformed": abs(len(urls) - len(captions))}), 0
    for row, (_url, caption) in enumerate(zip(urls, captions, strict=False)):  # unequal on purpose
        try:
            text = caption.decode("utf-8")
        except UnicodeDecodeError:
            rejects["non_utf8"] += 1
            continue
        if not text.strip():
            rejects["empty_text"] += 1
        elif not os.path.exists(os.path.join(root, "images", f"{row:08d}.jpg")):
            rejects["missing_image"] += 1
        else:
            samples += 1
    _check(expected, "sbu", samples, rejects)


def test_openimages(corpus):
    _, _, expected = corpus
    root = _root(corpus, "openimages")
    rows = lambda name: list(csv.reader(open(os.path.join(root, name), newline="")))  # noqa: E731
    classes = dict(rows("class-descriptions-boxable.csv"))
    assert all(mid.startswith("/m/") for mid in classes)
    image_rows = rows("train-images-boxable-with-rotation.csv")
    assert image_rows[0] == ["ImageID", "Subset", "OriginalURL", "OriginalLandingURL", "License", "AuthorProfileURL",
                             "Author", "Title", "OriginalSize", "OriginalMD5", "Thumbnail300KURL", "Rotation"]
    assert all(len(r) == 12 for r in image_rows) and any("," in r[7] for r in image_rows[1:])
    image_ids = {r[0] for r in image_rows[1:]}
    rejects, positives, negatives = Counter(), defaultdict(set), 0
    labels = rows("train-annotations-human-imagelabels-boxable.csv")
    assert labels[0] == ["ImageID", "Source", "LabelName", "Confidence"]
    for row in labels[1:]:
        if len(row) != 4:
            rejects["malformed"] += 1
        elif row[0] not in image_ids or row[2] not in classes:
            rejects["unknown_reference"] += 1
        elif row[3] == "1":
            positives[row[0]].add(row[2])
        else:
            negatives += row[3] == "0"
    boxes = rows("train-annotations-bbox.csv")
    assert boxes[0][:8] == ["ImageID", "Source", "LabelName", "Confidence", "XMin", "XMax", "YMin", "YMax"]
    for row in boxes[1:]:
        if row[0] not in image_ids or row[2] not in classes:
            rejects["unknown_reference"] += 1
        else:
            assert row[2] in positives[row[0]] and 0 <= float(row[4]) < float(row[5]) <= 1
    samples = 0
    for image_id in image_ids:
        assert _decodes(os.path.join(root, "images", f"{image_id}.jpg"))
        if positives[image_id]:
            samples += 1
        else:
            rejects["no_label"] += 1
    assert negatives > 0
    _check(expected, "openimages", samples, rejects)


def test_imagenet(corpus):
    _, _, expected = corpus
    root = _root(corpus, "imagenet")
    words = {line.split("\t")[0] for line in open(os.path.join(root, "words.txt")).read().splitlines()}
    counts, layouts = {}, Counter()
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if os.path.isdir(path):
            names, wnid = os.listdir(path), entry
            layouts["folder"] += 1
        elif entry.endswith(".tar"):
            with tarfile.open(path) as tar:
                names, wnid = tar.getnames(), entry[:-4]
            layouts["tar"] += 1
        else:
            continue
        assert re.fullmatch(r"n\d{8}", wnid) and all(re.fullmatch(rf"{wnid}_\d+\.JPEG", n) for n in names)
        counts[wnid] = len(names)
    assert layouts["folder"] >= 2 and layouts["tar"] >= 2
    samples = sum(n for w, n in counts.items() if w in words)
    _check(expected, "imagenet", samples, Counter({"no_label": sum(n for w, n in counts.items() if w not in words)}))


# --- text: sentences end in . ! ? before white space; Dr. Mr. Mrs. do not end one ----------------

_TERMINATOR = re.compile(r"[.!?](?=\s|$)")
_TITLE = re.compile(r"\b(?:Dr|Mr|Mrs)\.(?=\s)")


def _sentences(text: str) -> int:
    return len(_TERMINATOR.findall(text)) - len(_TITLE.findall(text))


def _document(lines: list[bytes], rejects: Counter) -> int:
    """Sentences of a document's valid lines; non-UTF-8 lines and a document without text are rejects."""
    count = 0
    for line in lines:
        try:
            count += _sentences(line.decode("utf-8"))
        except UnicodeDecodeError:
            rejects["non_utf8"] += 1
    if count == 0:
        rejects["empty_text"] += 1
    return count


def test_bookcorpus_books_and_lines(corpus):
    _, _, expected = corpus
    root = _root(corpus, "bookcorpus")
    folder = os.path.join(root, "books1", "epubtxt")
    rejects, samples = Counter(), 0
    for name in sorted(os.listdir(folder)):
        assert name.endswith(".txt")
        samples += _document(open(os.path.join(folder, name), "rb").read().split(b"\n"), rejects)
    _check(expected, "bookcorpus", samples, rejects)

    root = _root(corpus, "bookcorpus_lines")
    rejects, samples = Counter(), 0
    for name in ("books_large_p1.txt", "books_large_p2.txt"):
        for line in open(os.path.join(root, name), "rb").read().split(b"\n")[:-1]:
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                rejects["non_utf8"] += 1
                continue
            assert text == text.lower() and _sentences(text) == 1 and text.endswith((" .", " !", " ?"))
            samples += 1
    _check(expected, "bookcorpus_lines", samples, rejects)


def test_wikipedia(corpus):
    _, _, expected = corpus
    root = _root(corpus, "wiki")
    rejects, samples = Counter(), 0
    header = re.compile(rb'<doc id="(\d+)" url="https://en\.wikipedia\.org/wiki\?curid=\1" title="([^"]+)">')
    for name in ("AA/wiki_00", "AA/wiki_01"):
        lines = open(os.path.join(root, name), "rb").read().split(b"\n")[:-1]
        doc = None
        for line in lines:
            match = header.fullmatch(line)
            if match:
                assert doc is None
                doc, title = [], match.group(2)
            elif line == b"</doc>":
                assert doc[0] == title and doc[1] == b""  # WikiExtractor repeats the title, then a blank line
                samples += _document(doc[2:], rejects)
                doc = None
            else:
                doc.append(line)
        if doc is not None:
            rejects["malformed"] += 1  # <doc> without </doc> at the end of the file
    for line in open(os.path.join(root, "AB/wiki_00"), "rb").read().split(b"\n")[:-1]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            rejects["malformed"] += 1
            continue
        assert set(record) == {"id", "revid", "url", "title", "text"}
        samples += _document(record["text"].encode().split(b"\n"), rejects)
    _check(expected, "wiki", samples, rejects)


def test_openwebtext(corpus):
    _, _, expected = corpus
    root = _root(corpus, "owt")
    rejects, samples, names = Counter(), 0, []
    for name in ("urlsf_subset00-1_data.xz", "urlsf_subset00-2_data.xz"):
        with open(os.path.join(root, "openwebtext", name), "rb") as f:
            archive = lzma.decompress(f.read())
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar.getmembers():
                names.append(member.name)
                samples += _document(tar.extractfile(member).read().split(b"\n"), rejects)
    assert all(re.fullmatch(r"\d{7}-[0-9a-f]{32}\.txt", n) for n in names)
    _check(expected, "owt", samples, rejects)


# --- clean: planted duplicates, evaluation splits, the URL source ------------------------------------

URL_BASE = "http://127.0.0.1:8123"
KARPATHY_EVAL = {"val", "test"}
REFCOCO_EVAL = {"val", "testA", "testB"}
_SPLIT = re.compile(r"(?<!\bDr\.)(?<!\bMr\.)(?<!\bMrs\.)(?<=[.!?])\s+")
_FLICKR_URL = re.compile(r"https?://[^/]*static\.?flickr\.com/\d+/(\d+)_[0-9a-f]+(?:_[a-z])?\.jpg")


@pytest.fixture(scope="module")
def url_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("minicorpus_urls")
    generate(str(out), seed=0, scale=1, url_base=URL_BASE)
    with open(os.path.join(out, EXPECTED)) as f:
        return out, json.load(f)


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def _lines(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        return f.read().split(b"\n")[:-1]


def _hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def _kept_first(expected, members):
    """The copy clean keeps: the smallest (source position in the config, key)."""
    order = list(source_entries(expected))
    return min(members, key=lambda key: (order.index(key.split("-", 1)[0]), key))  # names hold no "-"


def _groups(expected, kind):
    """Planted duplicate groups of ``kind``: kept key -> set of all keys."""
    groups = defaultdict(set)
    for d in expected["_clean"]["duplicates"]:
        if d["kind"] == kind:
            groups[d["duplicate_of"]] |= {d["key"], d["duplicate_of"]}
    return groups


def test_config_has_the_clean_section(corpus):
    import yaml

    out, config_path, _ = corpus
    with open(config_path) as f:
        clean = yaml.safe_load(f)["clean"]
    assert clean["near_duplicate_distance"] == 4
    assert [e["name"] for e in clean["eval_sets"]] == ["coco_karpathy", "flickr30k_karpathy", "vqa_v2_val",
                                                      "refcoco_unc", "extra_ids"]
    assert all(os.path.isfile(os.path.join(out, e["path"])) for e in clean["eval_sets"])
    assert [e.name for e in load_config(config_path).clean.eval_sets] == [e["name"] for e in clean["eval_sets"]]


def _eval_files(out):
    """The evaluation files, parsed with json/pickle: name -> (coco ids, flickr ids, urls) that count,
    checking the public layouts on the way."""
    import pickle

    folder = os.path.join(out, "datasets", "eval")
    sets = {}
    coco = json.load(open(os.path.join(folder, "dataset_coco.json")))
    assert {i["split"] for i in coco["images"]} == {"train", "restval", "val", "test"}
    for image in coco["images"]:
        assert image["filename"] == f"COCO_val2014_{image['cocoid']:012d}.jpg" and image["sentences"]
        assert all(s["tokens"] and s["raw"] for s in image["sentences"])
    sets["coco_karpathy"] = ({i["cocoid"] for i in coco["images"] if i["split"] in KARPATHY_EVAL}, set(), set())
    flickr = json.load(open(os.path.join(folder, "dataset_flickr30k.json")))
    assert {i["split"] for i in flickr["images"]} == {"train", "test"}
    assert all(re.fullmatch(r"\d+\.jpg", i["filename"]) and i["sentences"] for i in flickr["images"])
    sets["flickr30k_karpathy"] = (set(), {int(i["filename"][:-4]) for i in flickr["images"]
                                          if i["split"] in KARPATHY_EVAL}, set())
    vqa = json.load(open(os.path.join(folder, "v2_OpenEnded_mscoco_val2014_questions.json")))
    assert all(set(q) == {"image_id", "question", "question_id"} for q in vqa["questions"])
    assert len({q["question_id"] for q in vqa["questions"]}) == len(vqa["questions"])
    sets["vqa_v2_val"] = ({q["image_id"] for q in vqa["questions"]}, set(), set())
    with open(os.path.join(folder, "refs(unc).p"), "rb") as f:
        refs = pickle.load(f)
    assert all({"ref_id", "image_id", "split", "sentences", "ann_id", "category_id"} <= set(r) for r in refs)
    assert {r["split"] for r in refs} == {"train", "val", "testA", "testB"}
    sets["refcoco_unc"] = ({r["image_id"] for r in refs if r["split"] in REFCOCO_EVAL}, set(), set())
    ids = {"coco": set(), "flickr": set()}
    urls = set()
    for line in open(os.path.join(folder, "eval_urls.txt")).read().splitlines():
        if line.startswith(("coco:", "flickr:")):
            ids[line.split(":")[0]].add(int(line.split(":")[1]))
        elif line.startswith(("http://", "https://")):
            urls.add(line.split("://", 1)[1])
        else:
            assert not line.strip() or line.startswith("#"), line
    sets["extra_ids"] = (ids["coco"], ids["flickr"], urls)
    return sets


def _image_samples(out):
    """(key, coco id, flickr id, url without scheme) of every pair sample ingest keeps that has an id."""
    root = os.path.join(out, "datasets")
    refs = []
    captions = json.load(open(os.path.join(root, "coco/annotations/captions_train2017.json")))
    listed = Counter(i["id"] for i in captions["images"])
    captioned = {a["image_id"] for a in captions["annotations"] if a["caption"].strip()}
    for image in captions["images"]:
        path = os.path.join(root, "coco/train2017", image["file_name"])
        if listed[image["id"]] == 1 and image["id"] in captioned and os.path.exists(path) and _decodes(path):
            refs.append((f"coco-{image['id']}", image["id"], None, None))
    phrased = {e["id"] for e in json.load(open(os.path.join(root, "visual_genome/region_descriptions.json")))
               if any(r["phrase"].strip() for r in e["regions"])}
    for image in json.load(open(os.path.join(root, "visual_genome/image_data.json"))):
        found = any(os.path.exists(os.path.join(root, "visual_genome", d, f"{image['image_id']}.jpg"))
                    for d in ("VG_100K", "VG_100K_2"))
        if image["image_id"] in phrased and found:
            refs.append((f"vg-{image['image_id']}", image["coco_id"], image["flickr_id"], image["url"].split("://")[1]))
    urls = _lines(os.path.join(root, "sbu/SBU_captioned_photo_dataset_urls.txt"))
    for row, _caption in enumerate(_lines(os.path.join(root, "sbu/SBU_captioned_photo_dataset_captions.txt"))):
        if os.path.exists(os.path.join(root, f"sbu/images/{row:08d}.jpg")):
            url = urls[row].decode()
            refs.append((f"sbu-{row}", None, int(_FLICKR_URL.fullmatch(url).group(1)), url.split("://")[1]))
    for row, line in enumerate(_lines(os.path.join(root, "conceptual_captions/Train_GCC-training.tsv"))):
        if os.path.exists(os.path.join(root, f"conceptual_captions/images/{row:08d}.jpg")):
            refs.append((f"cc-{row}", None, None, line.decode().split("\t")[1].split("://")[1]))
    for row in list(csv.reader(open(os.path.join(root, "openimages/train-images-boxable-with-rotation.csv"))))[1:]:
        refs.append((f"openimages-{row[0]}", None, int(_FLICKR_URL.fullmatch(row[2]).group(1)), row[2].split("://")[1]))
    return refs


def test_eval_splits_name_exactly_the_expected_samples(corpus):
    out, _, expected = corpus
    sets = _eval_files(out)
    want = []
    for key, coco_id, flickr_id, url in _image_samples(out):
        for name, (coco_ids, flickr_ids, urls) in sets.items():
            by = ("coco_id" if coco_id in coco_ids else "flickr_id" if flickr_id in flickr_ids
                  else "url" if url in urls else None)
            if by:
                want.append({"key": key, "eval_set": name, "matched_by": by})
    contaminated = expected["_clean"]["contaminated"]
    matched = {(c["key"], c["eval_set"]) for c in contaminated}
    inherited = [{"key": d["key"], "eval_set": c["eval_set"], "matched_by": "duplicate"}
                 for d in expected["_clean"]["duplicates"] for c in want
                 if c["key"] == d["duplicate_of"] and (d["key"], c["eval_set"]) in matched]
    key = lambda c: (c["key"], c["eval_set"])  # noqa: E731
    assert sorted(want + inherited, key=key) == sorted(contaminated, key=key)
    assert len(matched) == len(contaminated)  # one entry per (sample, eval set)
    assert {c["matched_by"] for c in contaminated} == {"coco_id", "flickr_id", "url", "duplicate"}
    assert set(sets) == {c["eval_set"] for c in contaminated}
    assert {c["key"].split("-")[0] for c in contaminated} == {"coco", "coco_unlabeled", "vg", "sbu", "cc"}
    # ids in an eval split that no sample has, and train splits, match nothing
    assert 999_999_001 in sets["coco_karpathy"][0] and 12_000_000_001 in sets["flickr30k_karpathy"][1]


def _image_files(out):
    """(path relative to out, ProcessedImage) of every picture under datasets/, archives included."""
    from pipelines.images import ImageError, process_image
    from schemas.config import ImageConfig

    found = []
    for folder, _, files in sorted(os.walk(os.path.join(out, "datasets"))):
        for name in sorted(files):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, out)
            if name.endswith(".tar"):
                with tarfile.open(path) as tar:
                    members = [(f"{rel}::{m.name}", tar.extractfile(m).read()) for m in tar.getmembers()
                               if m.name.lower().endswith((".jpg", ".jpeg"))]
            elif name.lower().endswith((".jpg", ".jpeg", ".png")):
                members = [(rel, open(path, "rb").read())]
            else:
                continue
            for where, data in members:
                try:
                    found.append((where, process_image(data, ImageConfig())))
                except ImageError:
                    pass  # the planted corrupt files
    return found


def _file_key(rel: str) -> str:
    """The sample key of a planted copy's file (docs/SOURCES.md keys)."""
    stem = os.path.splitext(os.path.basename(rel))[0]
    for prefix, source in (("datasets/coco/train2017/", "coco"), ("datasets/coco/unlabeled2017/", "coco_unlabeled"),
                           ("datasets/visual_genome/", "vg"), ("datasets/conceptual_captions/images/", "cc"),
                           ("datasets/sbu/images/", "sbu")):
        if rel.startswith(prefix):
            return f"{source}-{int(stem) if source in ('cc', 'sbu', 'coco') else stem}"
    raise AssertionError(rel)


def test_planted_image_copies_are_the_only_near_duplicates(url_corpus, corpus):
    out, expected = url_corpus
    assert expected["_clean"] == corpus[2]["_clean"]  # the URL source adds no copy
    images = _image_files(out)
    assert len(images) > 100 and any(rel.startswith("datasets/web/") for rel, _ in images)
    planted = expected["_clean"]["planted"]
    group_of = {rel: n for n, plant in enumerate(planted) for rel in plant["files"]}
    close, nearest = set(), 64
    for (a, pa), (b, pb) in itertools.combinations(images, 2):
        distance = _hamming(pa.phash, pb.phash)
        if pa.sha256 == pb.sha256 or distance <= 4:
            close.add(frozenset((a, b)))
        elif not (a in group_of and group_of.get(b) == group_of[a]):
            nearest = min(nearest, distance)
    want = {frozenset(pair) for plant in planted for pair in itertools.combinations(plant["files"], 2)}
    assert close == want, "accidental near duplicates (or a planted copy too far)"
    assert nearest > 4
    by_file = dict(images)
    for kind in ("exact_image", "near_image"):
        plants = [p for p in planted if p["kind"] == kind]
        assert 2 <= len(plants) <= 3
        keys = [{_file_key(rel) for rel in p["files"]} for p in plants]
        assert sorted(map(sorted, keys)) == sorted(map(sorted, _groups(expected, kind).values()))
        for plant in plants:
            shas = {by_file[rel].sha256 for rel in plant["files"]}
            assert len(shas) == (1 if kind == "exact_image" else len(plant["files"]))
    for kept, members in {**_groups(expected, "exact_image"), **_groups(expected, "near_image")}.items():
        assert kept == _kept_first(expected, members)
    sources = {d["key"].split("-")[0] for d in expected["_clean"]["duplicates"]} | {
        d["duplicate_of"].split("-")[0] for d in expected["_clean"]["duplicates"]}
    assert {"cc", "coco_unlabeled", "sbu", "vg", "coco"} <= sources


def _text_samples(out):
    """(key, text) of every text sample, by the rules of docs/SOURCES.md (one sample per sentence)."""
    from schemas.keys import make_key

    samples = []

    def document(source, doc_id, paragraphs):
        sentences = [s for p in paragraphs for s in _SPLIT.split(" ".join(p.split())) if s]
        samples.extend((make_key(source, doc_id, n), s) for n, s in enumerate(sentences))

    def valid(lines):
        out = []
        for line in lines:
            try:
                out.append(line.decode("utf-8"))
            except UnicodeDecodeError:
                pass
        return [line for line in out if line.strip()]

    root = os.path.join(out, "datasets")
    folder = os.path.join(root, "bookcorpus", "books1", "epubtxt")
    for name in sorted(os.listdir(folder)):
        document("bookcorpus", f"books1/epubtxt/{name[:-4]}", valid(_lines(os.path.join(folder, name))))
    for name in ("books_large_p1", "books_large_p2"):
        lines = valid(_lines(os.path.join(root, "bookcorpus_lines", f"{name}.txt")))
        samples.extend((make_key("bookcorpus_lines", name, n), " ".join(t.split())) for n, t in enumerate(lines))
    for name in ("AA/wiki_00", "AA/wiki_01"):
        for block in re.findall(rb'<doc id="(\d+)"[^\n]*\n[^\n]*\n(.*?)\n</doc>', open(
                os.path.join(root, "wikipedia", name), "rb").read(), re.S):
            document("wiki", block[0].decode(), valid(block[1].split(b"\n")))
    for line in _lines(os.path.join(root, "wikipedia", "AB/wiki_00")):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        document("wiki", record["id"], [p for p in record["text"].split("\n") if p.strip()])
    for name in ("urlsf_subset00-1_data.xz", "urlsf_subset00-2_data.xz"):
        with tarfile.open(fileobj=io.BytesIO(lzma.decompress(open(os.path.join(root, "openwebtext", "openwebtext",
                                                                                name), "rb").read()))) as tar:
            for member in tar.getmembers():
                document("owt", member.name[:-4], valid(tar.extractfile(member).read().split(b"\n")))
    return samples


def test_planted_text_copies_are_the_only_repeated_sentences(corpus):
    out, _, expected = corpus
    samples = _text_samples(out)
    text_samples = sum(e["samples"] for e in source_entries(expected).values() if e["modality"] == "text")
    assert len(samples) == len({key for key, _ in samples}) == text_samples
    by_text = defaultdict(set)
    for key, text in samples:
        by_text[_normalise(text)].add(key)
    repeated = sorted(sorted(keys) for keys in by_text.values() if len(keys) > 1)
    groups = _groups(expected, "exact_text")
    assert repeated == sorted(sorted(keys) for keys in groups.values())
    assert len(groups) == 3 and sum(len(keys) - 1 for keys in groups.values()) == 4
    assert all(kept == _kept_first(expected, keys) for kept, keys in groups.items())
    texts = {key: text for key, text in samples}
    assert any(texts[k] != texts[kept] for kept, keys in groups.items() for k in keys)  # a case variant


def test_url_source_and_its_expected_statuses(url_corpus, corpus):
    out, expected = url_corpus
    entry = expected["cc_urls"]
    config = load_config(os.path.join(out, CONFIG))
    assert config.sources["cc_urls"].kind == "conceptual_captions" and config.sources["cc_urls"].images is None
    web = os.path.join(out, "datasets", "web")
    rows = [line.decode().split("\t") for line in _lines(os.path.join(out, "datasets", "cc_urls",
                                                                      "Train_GCC-training.tsv"))]
    status = Counter()
    for caption, url in rows:
        assert caption and url.startswith(URL_BASE + "/")
        path = os.path.join(web, url[len(URL_BASE) + 1:])
        if not os.path.exists(path):
            status["http_404"] += 1
        elif not path.endswith(".jpg"):
            status["not_an_image"] += 1
        elif not _decodes(path):
            status["decode_error"] += 1
        else:
            status["ok"] += 1
    assert entry["url_status"] == dict(status) and set(status) == {"ok", "http_404", "not_an_image", "decode_error"}
    assert entry["samples"] == status["ok"]
    assert entry["rejects"] == {"failed_download": status["http_404"] + status["not_an_image"],
                                "corrupt_image": status["decode_error"]}
    # Without url_base nothing else changes; the server's address is only in the TSV (and the config).
    plain = tree_digest(corpus[0])
    with_urls = tree_digest(out)
    extra = {p for p in with_urls if p.startswith(("datasets/web/", "datasets/cc_urls/"))}
    assert {p: d for p, d in with_urls.items() if p not in extra and p not in (CONFIG, EXPECTED)} == {
        p: d for p, d in plain.items() if p not in (CONFIG, EXPECTED)}
    assert {k: v for k, v in expected.items() if k != "cc_urls"} == corpus[2]


def test_url_source_bytes_do_not_depend_on_the_address(url_corpus, tmp_path):
    out, _ = url_corpus
    generate(str(tmp_path), seed=0, scale=1, url_base="http://127.0.0.1:9")
    first, second = tree_digest(out), tree_digest(tmp_path)
    assert {p for p in first if first[p] != second[p]} == {"datasets/cc_urls/Train_GCC-training.tsv"}
