import io
import pickle
import tarfile
from pathlib import Path

import pytest

from pipelines.sources import SourceError
from pipelines.sources.imagenet import ImageNetReader, load_words
from pipelines.sources.labels import parse_words, pseudo_caption, wordnet_labels
from schemas.config import ConfigError, ImageNetConfig, PseudoPairConfig, TextConfig
from schemas.keys import make_key
from schemas.records import Modality
from tests.sources.helpers import by_location, jpeg_bytes, read_all, split, write_jpeg

WORDS = "n02084071\tdog, domestic dog, Canis familiaris\nn01440764\ttench, Tinca tinca\nn00001740\tentity\n"
DOG, TENCH, UNKNOWN, CAT = "n02084071", "n01440764", "n09999999", "n02121808"


def write_tar(path: Path, members: dict[str, bytes], folder: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        if folder:
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def make_source(root: Path, images: str = ".") -> tuple[ImageNetConfig, dict[str, bytes]]:
    (root / "words.txt").write_text(WORDS)
    base = root / images
    write_jpeg(base / DOG / f"{DOG}_1.JPEG")
    write_jpeg(base / DOG / f"{DOG}_22.JPEG", (0, 200, 0))
    (base / DOG / "notes.txt").write_text("not an image")
    tench = {f"{TENCH}_10026.JPEG": jpeg_bytes((1, 2, 3)), f"{TENCH}_7.JPEG": jpeg_bytes((9, 9, 9))}
    write_tar(base / f"{TENCH}.tar", tench)
    unknown = {f"{UNKNOWN}/{UNKNOWN}_5.JPEG": jpeg_bytes()}
    write_tar(base / f"{UNKNOWN}.tar", unknown, folder=UNKNOWN)
    (base / "README.txt").write_text("not a synset")
    (base / "other").mkdir()
    by_file_name = {**tench, f"{UNKNOWN}_5.JPEG": unknown[f"{UNKNOWN}/{UNKNOWN}_5.JPEG"]}
    return ImageNetConfig(root=str(root), images=images), by_file_name


@pytest.mark.parametrize("images", [".", "imagenet21k_train"])
def test_folders_and_tars_mixed(tmp_path, images):
    config, tar_bytes = make_source(tmp_path, images)
    reader = ImageNetReader("in21k", config, TextConfig())
    base = tmp_path if images == "." else tmp_path / images
    assert reader.parts() == sorted([str(base / TENCH) + ".tar", str(base / DOG), str(base / UNKNOWN) + ".tar"])
    candidates, rejects = split(read_all(reader))
    assert rejects == []
    by_id = {c.source_id: c for c in candidates}
    assert sorted(by_id) == sorted([f"{DOG}_1", f"{DOG}_22", f"{TENCH}_10026", f"{TENCH}_7", f"{UNKNOWN}_5"])
    prefix = "" if images == "." else f"{images}/"
    dog = by_id[f"{DOG}_1"]
    assert dog.key == make_key("in21k", f"{DOG}_1") and dog.modality is Modality.IMAGE and dog.text is None
    assert dog.image_path == str(base / DOG / f"{DOG}_1.JPEG") and dog.image_bytes is None
    assert dog.location == f"{prefix}{DOG}/{DOG}_1.JPEG"
    assert dog.meta == {
        "image_id": f"{DOG}_1",
        "synset": DOG,
        "labels": ["dog", "domestic dog", "Canis familiaris"],
        "file_name": f"{DOG}_1.JPEG",
    }
    tench = by_id[f"{TENCH}_7"]
    assert tench.image_path is None and tench.image_bytes == tar_bytes[f"{TENCH}_7.JPEG"]
    assert tench.location == f"{prefix}{TENCH}.tar::{TENCH}_7.JPEG"
    assert tench.meta["labels"] == ["tench", "Tinca tinca"] and tench.meta["synset"] == TENCH
    unknown = by_id[f"{UNKNOWN}_5"]
    assert unknown.location == f"{prefix}{UNKNOWN}.tar::{UNKNOWN}/{UNKNOWN}_5.JPEG"
    assert unknown.meta["labels"] == [] and unknown.meta["file_name"] == f"{UNKNOWN}_5.JPEG"
    assert unknown.image_bytes == tar_bytes[f"{UNKNOWN}_5.JPEG"]


def test_pseudo_pairs_and_missing_synset(tmp_path):
    config, _ = make_source(tmp_path)
    config.pseudo_pairs = PseudoPairConfig(enabled=True, max_labels=2)
    candidates, rejects = split(read_all(ImageNetReader("in21k", config, TextConfig())))
    assert by_location(rejects) == {f"{UNKNOWN}.tar::{UNKNOWN}/{UNKNOWN}_5.JPEG": "no_label"}
    assert rejects[0].key == make_key("in21k", f"{UNKNOWN}_5") and "words.txt" in rejects[0].detail
    assert len(candidates) == 4  # records read = candidates + reader rejects
    for c in candidates:
        assert c.modality is Modality.PAIR
        assert c.text == pseudo_caption(c.key, c.meta["labels"], config.pseudo_pairs)
    by_id = {c.source_id: c for c in candidates}
    assert by_id[f"{DOG}_1"].text == "a photo of dog and domestic dog."
    assert by_id[f"{TENCH}_7"].text == "a photo of tench and Tinca tinca."


def test_reader_pickles_without_words_cache(tmp_path):
    config, _ = make_source(tmp_path)
    reader = ImageNetReader("in21k", config, TextConfig())
    assert reader.words()[DOG][0] == "dog"
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._words is None and clone.words() == reader.words()


def test_words_file_errors(tmp_path):
    config, _ = make_source(tmp_path)
    (tmp_path / "words.txt").write_text("n02084071\tdog\nn01440764 tench\n")
    reader = ImageNetReader("in21k", config, TextConfig())
    with pytest.raises(SourceError, match=r"words.txt.*line 2"):
        list(reader.read(reader.parts()[0]))
    (tmp_path / "words.txt").write_bytes(b"n02084071\tdog\xff\n")
    with pytest.raises(SourceError, match="words.txt.*UTF-8"):
        load_words(str(tmp_path / "words.txt"))
    (tmp_path / "words.txt").unlink()
    with pytest.raises(SourceError, match="words.txt"):
        load_words(str(tmp_path / "words.txt"))


def test_corrupt_tar(tmp_path):
    config, _ = make_source(tmp_path)
    path = tmp_path / f"{TENCH}.tar"
    path.write_bytes(path.read_bytes()[:700])  # cut inside the first member
    reader = ImageNetReader("in21k", config, TextConfig())
    with pytest.raises(SourceError, match=f"{TENCH}.tar"):
        list(reader.read(str(path)))


def test_missing_images_folder(tmp_path):
    (tmp_path / "words.txt").write_text(WORDS)
    reader = ImageNetReader("in21k", ImageNetConfig(root=str(tmp_path), images="absent"), TextConfig())
    with pytest.raises(SourceError, match="absent"):
        reader.parts()


def _release(root: Path) -> None:
    """The layout of a downloaded release: synset folders under winter21_whole/, per-synset tars under tars/."""
    (root / "words.txt").write_text(WORDS)
    write_jpeg(root / "winter21_whole" / DOG / f"{DOG}_1.JPEG")
    write_tar(root / "tars" / f"{TENCH}.tar", {f"{TENCH}_7.JPEG": jpeg_bytes()})


def test_folders_and_tars_in_two_places_make_one_source(tmp_path):
    _release(tmp_path)
    config = ImageNetConfig(root=str(tmp_path), images="winter21_whole", tars="tars")
    reader = ImageNetReader("in21k", config, TextConfig())
    assert reader.parts() == [str(tmp_path / "tars" / f"{TENCH}.tar"), str(tmp_path / "winter21_whole" / DOG)]
    candidates, rejects = split(read_all(reader))
    assert rejects == [] and sorted(c.source_id for c in candidates) == [f"{TENCH}_7", f"{DOG}_1"]
    inputs = {f.path for f in reader.inputs(reader.parts())}
    assert inputs == {"tars/n01440764.tar", f"winter21_whole/{DOG}", "words.txt"}


def test_a_root_without_synsets_is_an_error_saying_where_they_are(tmp_path):
    _release(tmp_path)
    reader = ImageNetReader("in21k", ImageNetConfig(root=str(tmp_path)), TextConfig())
    with pytest.raises(SourceError, match=rf"source in21k: no synset folder .* in {tmp_path} \(sources\.in21k\.images\)"
                                          r"; synsets are under tars/, winter21_whole/"):
        reader.parts()


def test_the_readme_example_reads_the_release_layout(tmp_path):
    """The ImageNet-21k line of the README's config example, with its root here, reads every image."""
    import re

    import yaml

    from schemas.config import parse_config

    readme = open(Path(__file__).parents[2] / "README.md", encoding="utf-8").read()
    line = next(m.group(1) for m in re.finditer(r"^  in21k: +(\{.*\})$", readme, re.M))
    spec = {**yaml.safe_load(line), "root": str(tmp_path)}
    _release(tmp_path)
    config = parse_config({"output": "out", "sources": {"in21k": spec}}, str(tmp_path))
    candidates, _ = split(read_all(ImageNetReader("in21k", config.sources["in21k"], TextConfig())))
    assert len(candidates) == 2


def test_labels_from_wordnet_without_words_txt(tmp_path):
    """``words: null``: lemma names from WordNet 3.0 by offset, the same as ImageNet's own words.txt lines."""
    config, _ = make_source(tmp_path)
    (tmp_path / "words.txt").unlink()
    write_jpeg(tmp_path / CAT / f"{CAT}_3.JPEG")
    config.words = None
    config.pseudo_pairs = PseudoPairConfig(enabled=True, templates=["a photo of a {label}."], max_labels=1)
    candidates, rejects = split(read_all(ImageNetReader("in21k", config, TextConfig())))
    by_id = {c.source_id: c for c in candidates}
    assert by_id[f"{DOG}_1"].meta["labels"] == parse_words(WORDS.splitlines())[DOG]
    assert by_id[f"{TENCH}_7"].meta["labels"] == ["tench", "Tinca tinca"]
    assert by_id[f"{CAT}_3"].meta["labels"] == ["domestic cat", "house cat", "Felis domesticus", "Felis catus"]
    assert by_id[f"{CAT}_3"].text == "a photo of a domestic cat."
    assert by_location(rejects) == {f"{UNKNOWN}.tar::{UNKNOWN}/{UNKNOWN}_5.JPEG": "no_label"}
    assert "not in WordNet 3.0" in rejects[0].detail


def test_wordnet_labels_of_bad_ids():
    from pipelines.nltk_data import data_dir, wordnet

    wn = wordnet(data_dir())
    assert wordnet_labels(wn, UNKNOWN) is None and wordnet_labels(wn, "x02084071") is None
    assert wordnet_labels(wn, "n0208407") is None and wordnet_labels(wn, DOG)[0] == "dog"


def test_wordnet_labels_need_wordnet(tmp_path):
    config, _ = make_source(tmp_path)
    config.words = None
    reader = ImageNetReader("in21k", config, TextConfig(nltk_data=str(tmp_path / "nltk")))
    with pytest.raises(ConfigError, match=r"sources.in21k.words: .*corpora/wordnet/.*make nltk-data"):
        reader.parts()
