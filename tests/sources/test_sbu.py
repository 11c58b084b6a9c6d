import pytest

from pipelines.sources import SourceError
from pipelines.sources.sbu import SbuReader
from schemas.config import SbuConfig, TextConfig
from schemas.keys import make_key
from schemas.records import Modality
from tests.sources.helpers import by_location, read_all, split

URLS = "SBU_captioned_photo_dataset_urls.txt"
CAPTIONS = "SBU_captioned_photo_dataset_captions.txt"


def make_source(tmp_path, urls, captions):
    (tmp_path / URLS).write_bytes(b"\n".join(urls) + b"\n")
    (tmp_path / CAPTIONS).write_bytes(b"\n".join(captions) + b"\n")
    return SbuConfig(root=str(tmp_path))


def read(config):
    return split(read_all(SbuReader("sbu", config, TextConfig())))


def url(i):
    return f"http://static.flickr.com/2723/{i}_f5f0b4c4e3.jpg".encode()


def test_line_i_of_each_file_makes_row_i(tmp_path):
    captions = [b"Man sits in a rusted car on Waitarere beach ", "Él y su café ☕".encode()]
    candidates, rejects = read(make_source(tmp_path, [url(0), url(1)], captions))
    assert rejects == []
    assert [(c.key, c.text, c.meta, c.location) for c in candidates] == [
        (make_key("sbu", 0), "Man sits in a rusted car on Waitarere beach",
         {"url": url(0).decode(), "row": 0}, f"{CAPTIONS}:1"),
        (make_key("sbu", 1), "Él y su café ☕", {"url": url(1).decode(), "row": 1}, f"{CAPTIONS}:2"),
    ]
    for c in candidates:
        assert c.modality is Modality.PAIR and c.source_id == str(c.meta["row"])
        assert c.image_path == str(tmp_path / "images" / f"{c.meta['row']:08d}.jpg")


def test_bad_lines_are_rejects_and_every_line_is_accounted_for(tmp_path):
    urls = [url(0), b"http://static.flickr.com/\xff.jpg", url(2), url(3)]
    captions = [b"fine caption", b"url line is bad", b"caf\xe9 in latin-1", b"   ", b"extra 1", b"extra 2"]
    candidates, rejects = read(make_source(tmp_path, urls, captions))
    assert [c.meta["row"] for c in candidates] == [0]
    assert by_location(rejects) == {
        f"{URLS}:2": "non_utf8",
        f"{CAPTIONS}:3": "non_utf8",
        f"{CAPTIONS}:4": "empty_text",
        f"{CAPTIONS}:5": "malformed",
        f"{CAPTIONS}:6": "malformed",
    }
    assert {r.key for r in rejects} == {make_key("sbu", row) for row in range(1, 6)}
    assert len(candidates) + len(rejects) == max(len(urls), len(captions))


def test_extra_url_lines_are_malformed(tmp_path):
    candidates, rejects = read(make_source(tmp_path, [url(0), url(1), url(2)], [b"one"]))
    assert len(candidates) == 1
    assert by_location(rejects) == {f"{URLS}:2": "malformed", f"{URLS}:3": "malformed"}
    assert all(CAPTIONS in r.detail for r in rejects)


@pytest.mark.parametrize("missing", [URLS, CAPTIONS])
def test_absent_file_raises_source_error_naming_it(tmp_path, missing):
    config = make_source(tmp_path, [url(0)], [b"one"])
    (tmp_path / missing).unlink()
    with pytest.raises(SourceError, match=str(tmp_path / missing)):
        read(config)


def test_url_mode_emits_the_url_to_fetch(tmp_path):
    urls = [url(0), b"", b"   ", b" " + url(3) + b" \r"]
    captions = [b"zero", b"one has no url", b"two has a blank url", b"three"]
    config = make_source(tmp_path, urls, captions)
    config.images = None
    candidates, rejects = read(config)
    assert [(c.key, c.image_url, c.meta, c.location) for c in candidates] == [
        (make_key("sbu", 0), url(0).decode(), {"url": url(0).decode(), "row": 0}, f"{CAPTIONS}:1"),
        (make_key("sbu", 3), url(3).decode(), {"url": url(3).decode(), "row": 3}, f"{CAPTIONS}:4"),
    ]
    assert all(c.image_path is None and c.modality is Modality.PAIR for c in candidates)
    assert by_location(rejects) == {f"{URLS}:2": "malformed", f"{URLS}:3": "malformed"}  # at the URL line
    assert [(r.key, r.detail) for r in rejects] == [(make_key("sbu", row), "empty url") for row in (1, 2)]


def test_url_mode_keeps_the_other_rejects(tmp_path):
    """Unpaired lines, bad UTF-8 and empty captions are rejected as in folder mode."""
    config = make_source(tmp_path, [url(0), b"http://x/\xff.jpg", url(2), url(3)], [b"ok", b"fine", b"  "])
    config.images = None
    candidates, rejects = read(config)
    assert [c.image_url for c in candidates] == [url(0).decode()]
    assert by_location(rejects) == {
        f"{URLS}:2": "non_utf8", f"{CAPTIONS}:3": "empty_text", f"{URLS}:4": "malformed"}
