"""The mini corpus generator: deterministic, loadable, and its files hold what expected.json says.

The per-format checks re-count each source from its files with plain json/csv/tarfile/lzma/pyarrow and
the rules of docs/SOURCES.md: a sanity check of the generator's bookkeeping, not of the readers.
"""

import csv
import io
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
from schemas.records import Reason
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
    assert kinds == {spec.name: spec.kind for spec in SPECS} == {n: e["kind"] for n, e in source_entries(expected).items()}
    assert len(set(kinds.values())) == 11  # every reader kind, bookcorpus in both layouts
    assert config.sources["coco"].instances and config.sources["vg"].objects and config.sources["openimages"].boxes
    assert config.sources["openimages"].pseudo_pairs.enabled and config.sources["imagenet"].pseudo_pairs.enabled
    assert config.sources["bookcorpus_lines"].layout == "lines"
    assert all(2 <= source.shards <= 4 for source in config.sources.values())


def test_expected_names_real_reasons_and_plants_every_one(corpus):
    _, _, expected = corpus
    reasons = {r.value for r in Reason} - {Reason.DUPLICATE.value, Reason.CONTAMINATED.value}  # clean's own
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
    folder = os.path.join(_root(corpus, "coco_unlabeled"), "unlabeled2017")
    modes = Counter()
    for name in os.listdir(folder):
        with Image.open(os.path.join(folder, name)) as im:
            modes[(im.format, im.mode)] += 1
    assert modes[("PNG", "P")] == 1 and modes[("PNG", "RGBA")] == 1
    _check(expected, "coco_unlabeled", sum(modes.values()), Counter())


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
    for row, (url, caption) in enumerate(zip(urls, captions)):
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
