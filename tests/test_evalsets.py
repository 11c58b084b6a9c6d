import json
import pickle

import pytest

from pipelines.evalsets import (
    Contamination,
    EvalSet,
    SampleRef,
    find_contamination,
    flickr_id_from_url,
    load_evalset,
    load_id_list,
    load_karpathy,
    load_refcoco,
    load_vqa_questions,
    normalise_url,
    sample_ref,
)


def _write_json(path, data):
    path.write_text(json.dumps(data))
    return str(path)


def _karpathy_image(split, sentence="a man rides a horse", **ids):
    return {"split": split, "sentences": [{"raw": sentence, "tokens": sentence.split()}], **ids}


def test_karpathy_coco_keeps_val_and_test_only(tmp_path):
    images = [
        _karpathy_image("train", filepath="train2014", filename="COCO_train2014_000000000009.jpg", cocoid=9, imgid=0),
        _karpathy_image("restval", filepath="val2014", filename="COCO_val2014_000000000042.jpg", cocoid=42, imgid=1),
        _karpathy_image("val", filepath="val2014", filename="COCO_val2014_000000391895.jpg", cocoid=391895, imgid=2),
        _karpathy_image("test", filepath="val2014", filename="COCO_val2014_000000000073.jpg", cocoid=73, imgid=3),
        _karpathy_image("test", filepath="val2014", filename="COCO_val2014_000000000074.jpg", imgid=4),  # no cocoid
    ]
    path = _write_json(tmp_path / "dataset_coco.json", {"dataset": "coco", "images": images})
    evalset = load_karpathy(path, "coco_karpathy")
    assert evalset == EvalSet("coco_karpathy", {391895, 73, 74}, set(), set(), set())
    assert load_karpathy(path, "coco_test", splits=("test",)).coco_ids == {73, 74}
    assert load_evalset(path, "x").coco_ids == {391895, 73, 74}


def test_karpathy_flickr_ids_come_from_the_filename_not_imgid(tmp_path):
    images = [
        _karpathy_image("train", filename="1000092795.jpg", imgid=0),
        _karpathy_image("val", filename="10002456.jpg", imgid=1),
        _karpathy_image("test", filename="1007129816.jpg", imgid=2),
    ]
    path = _write_json(tmp_path / "dataset_flickr30k.json", {"dataset": "flickr30k", "images": images})
    evalset = load_karpathy(path, "f30k")
    assert evalset.flickr_ids == {10002456, 1007129816} and not evalset.coco_ids
    f8k = _write_json(
        tmp_path / "dataset_flickr8k.json",
        {"dataset": "flickr8k", "images": [_karpathy_image("test", filename="2513260012_03d33305cf.jpg")]},
    )
    assert load_karpathy(f8k, "f8k").flickr_ids == {2513260012}


def test_karpathy_malformed(tmp_path):
    bad = _write_json(tmp_path / "a.json", {"images": [_karpathy_image("val", cocoid=1), {"filename": "x.jpg"}]})
    with pytest.raises(ValueError, match=r"a\.json: images\[1\]: needs a 'split'"):
        load_karpathy(bad, "x")
    bad = _write_json(tmp_path / "b.json", {"images": [_karpathy_image("val", filename="cat.jpg")]})
    with pytest.raises(ValueError, match=r"b\.json: images\[0\]: neither"):
        load_karpathy(bad, "x")
    bad = _write_json(tmp_path / "c.json", {"images": [_karpathy_image("test", cocoid="abc")]})
    with pytest.raises(ValueError, match=r"c\.json: images\[0\]: 'cocoid'"):
        load_karpathy(bad, "x")
    only_train = _write_json(tmp_path / "d.json", {"images": [_karpathy_image("train", cocoid=1)]})
    with pytest.raises(ValueError, match=r"d\.json: no evaluation images of splits val, test"):
        load_karpathy(only_train, "x")
    (tmp_path / "e.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"e\.json: not JSON"):
        load_karpathy(str(tmp_path / "e.json"), "x")
    with pytest.raises(ValueError, match=r"f\.json: a Karpathy split file needs"):
        load_karpathy(_write_json(tmp_path / "f.json", [1, 2]), "x")


def test_vqa_questions(tmp_path):
    questions = [
        {"image_id": 262148, "question": "Where is he looking?", "question_id": 262148000},
        {"image_id": 262148, "question": "What is he on top of?", "question_id": 262148001},
        {"image_id": 393225, "question": "Is the bowl full?", "question_id": 393225000},
    ]
    data = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014",
            "questions": questions, "license": {}}
    path = _write_json(tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json", data)
    assert load_vqa_questions(path, "vqa").coco_ids == {262148, 393225}
    assert load_evalset(path, "vqa").coco_ids == {262148, 393225}
    bad = _write_json(tmp_path / "q.json", {"questions": [questions[0], {"question": "?"}]})
    with pytest.raises(ValueError, match=r"q\.json: questions\[1\]: needs an integer 'image_id'"):
        load_vqa_questions(bad, "vqa")


def _ref(ref_id, image_id, split):
    return {
        "sent_ids": [ref_id * 10],
        "file_name": f"COCO_train2014_{image_id:012d}_{ref_id}.jpg",
        "ann_id": ref_id + 1000,
        "ref_id": ref_id,
        "image_id": image_id,
        "split": split,
        "category_id": 1,
        "sentences": [{"tokens": ["man", "left"], "raw": "man left", "sent_id": ref_id * 10, "sent": "man left"}],
    }


def test_refcoco_pickle(tmp_path):
    refs = [_ref(0, 581857, "train"), _ref(1, 581857, "train"), _ref(2, 580957, "val"), _ref(3, 1000, "testA"),
            _ref(4, 1001, "testB"), _ref(5, 1002, "test")]
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(refs, protocol=2))
    assert load_refcoco(str(path), "refcoco").coco_ids == {580957, 1000, 1001, 1002}
    assert load_refcoco(str(path), "refcoco", splits=("testA",)).coco_ids == {1000}
    assert load_evalset(str(path), "refcoco").coco_ids == {580957, 1000, 1001, 1002}


def test_refcoco_malformed_and_unsafe_pickles(tmp_path):
    path = tmp_path / "refs(umd).p"
    path.write_bytes(pickle.dumps([_ref(0, 1, "val"), {"image_id": 2}], protocol=2))
    with pytest.raises(ValueError, match=r"refs\(umd\)\.p: refs\[1\]: needs a 'split'"):
        load_refcoco(str(path), "x")
    path.write_bytes(pickle.dumps({"refs": []}))
    with pytest.raises(ValueError, match="list of refs"):
        load_refcoco(str(path), "x")
    path.write_bytes(pickle.dumps([EvalSet("x")]))  # a class: refused, never constructed
    with pytest.raises(ValueError, match=r"refs\(umd\)\.p: not a readable refs pickle.*refusing"):
        load_refcoco(str(path), "x")
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="not a readable refs pickle"):
        load_refcoco(str(path), "x")


def test_id_list(tmp_path):
    path = tmp_path / "butd_eval.txt"
    path.write_text(
        "# BUTD eval images\n\ncoco:391895\n  flickr:1000092795  \nHTTPS://Farm3.StaticFlickr.com/2723/4385058960_b0f291553e_z.jpg\n"
        "http://example.com/img.php?id=7#top\nphash:00FF00FF00FF00FF\n"
    )
    evalset = load_id_list(str(path), "butd")
    assert evalset == EvalSet(
        "butd",
        {391895},
        {1000092795},
        {"farm3.staticflickr.com/2723/4385058960_b0f291553e_z.jpg", "example.com/img.php?id=7"},
        {"00ff00ff00ff00ff"},
    )
    assert load_evalset(str(path), "butd") == evalset


@pytest.mark.parametrize("line", ["coco:abc", "391895", "ftp://example.com/a.jpg", "flickr:", "phash:123", "http:/x"])
def test_id_list_bad_lines_name_file_and_line(tmp_path, line):
    path = tmp_path / "ids.txt"
    path.write_text(f"# header\ncoco:1\n{line}\n")
    with pytest.raises(ValueError, match=r"ids\.txt:3"):
        load_id_list(str(path), "x")


def test_empty_id_list_is_an_error(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no evaluation images"):
        load_evalset(str(path), "x")


def test_unknown_json_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="neither a Karpathy"):
        load_evalset(_write_json(tmp_path / "x.json", {"annotations_x": []}), "x")


def test_urls():
    assert normalise_url("HTTP://Example.COM:80/A/b.jpg?x=1#frag") == "example.com/A/b.jpg?x=1"
    assert normalise_url("https://example.com:8443/a.jpg") == "example.com:8443/a.jpg"
    assert normalise_url("https://example.com") == "example.com/"
    for url in [
        "http://static.flickr.com/2723/4385058960_b0f291553e.jpg",
        "https://farm3.staticflickr.com/2723/4385058960_b0f291553e_z.jpg",
        "http://farm3.static.flickr.com/2723/4385058960_b0f291553e_b.jpg",
        "https://live.staticflickr.com/65535/4385058960_b0f291553e_o.png",
        "https://c1.staticflickr.com/3/2723/4385058960_b0f291553e_m.jpg?zz=1",
        "https://www.flickr.com/photos/someone/4385058960/",
    ]:
        assert flickr_id_from_url(url) == 4385058960, url
    for url in ["http://example.com/4385058960_b0f291553e.jpg", "https://static.flickr.com/images/buddyicon.gif",
                "https://www.flickr.com/photos/someone/", "not a url", "http://[::1"]:
        assert flickr_id_from_url(url) is None, url


def test_sample_refs_per_source_kind():
    assert sample_ref("coco-1", "coco", "coco", {"image_id": 391895, "file_name": "x.jpg"}, "00000000000000FF") == \
        SampleRef("coco-1", "coco", 391895, None, None, "00000000000000ff")
    vg = {"url": "https://cs.stanford.edu/people/rak248/VG_100K_2/1.jpg", "coco_id": None, "flickr_id": 1000092795}
    assert sample_ref("vg-1", "vg", "visual_genome", vg, None) == \
        SampleRef("vg-1", "vg", None, 1000092795, vg["url"], None)
    sbu = {"url": "http://static.flickr.com/2723/4385058960_b0f291553e.jpg", "row": 3}
    assert sample_ref("sbu-3", "sbu", "sbu", sbu, None).flickr_id == 4385058960
    cc = sample_ref("cc-1", "cc", "conceptual_captions", {"url": "http://x.com/a.jpg", "row": 1}, None)
    assert (cc.url, cc.flickr_id, cc.coco_id) == ("http://x.com/a.jpg", None, None)
    oi = sample_ref(
        "oi-1",
        "oi",
        "openimages",
        {"image_id": "000002b66c9c498e", "url": "https://farm3.staticflickr.com/2723/4385058960_b0f291553e_o.jpg"},
        None,
    )
    assert (oi.coco_id, oi.flickr_id) == (None, 4385058960)
    imagenet = sample_ref("in-1", "in", "imagenet21k", {"image_id": 7, "synset": "n01"}, "0" * 16)
    assert (imagenet.coco_id, imagenet.url, imagenet.phash) == (None, None, "0" * 16)
    wiki = sample_ref("wiki-1", "wiki", "wikipedia", {"url": "https://en.wikipedia.org/wiki?curid=12"}, None)
    assert wiki == SampleRef("wiki-1", "wiki", None, None, None, None)
    other = sample_ref("dl-1", "dl", "some_new_kind", {"url": "https://a.com/b.jpg", "coco_id": "42"}, None)
    assert (other.coco_id, other.url) == (42, "https://a.com/b.jpg")
    with pytest.raises(ValueError, match="vg-2: meta 'coco_id'"):
        sample_ref("vg-2", "vg", "visual_genome", {"url": "u", "coco_id": 1.5}, None)
    with pytest.raises(ValueError, match="coco-2: phash"):
        sample_ref("coco-2", "coco", "coco", {"image_id": 2}, "nothex")


def _ref_of(key, coco=None, flickr=None, url=None, phash=None):
    if isinstance(phash, int):
        phash = f"{phash:016x}"
    return SampleRef(key, key.split("-")[0], coco, flickr, url, phash)


BASE = 0x0F0F_F0F0_1234_5678


def test_each_matching_criterion():
    karpathy = EvalSet("karpathy", coco_ids={391895}, flickr_ids={1000092795})
    listed = EvalSet("listed", urls={normalise_url("http://example.com/a.jpg"),
                                     "https://farm1.staticflickr.com/1/4385058960_abcdef_b.jpg"},
                     phashes={f"{BASE:016x}"})
    refs = [
        _ref_of("coco-1", coco=391895),
        _ref_of("vg-1", flickr=1000092795),
        _ref_of("cc-1", url="HTTPS://EXAMPLE.com/a.jpg#x"),
        _ref_of("cc-2", url="http://example.com/a.jpg?size=2"),  # another query: another image
        _ref_of("sbu-1", flickr=4385058960, url="http://static.flickr.com/2723/4385058960_b0f291553e.jpg"),
        _ref_of("oi-1", phash=BASE ^ 0b101),
        _ref_of("oi-2", phash=BASE ^ 0b11111),  # distance 5
        _ref_of("in-1"),
    ]
    assert find_contamination(refs, [karpathy, listed]) == [
        Contamination("cc-1", "cc", "listed", "url", "url example.com/a.jpg"),
        Contamination("coco-1", "coco", "karpathy", "coco_id", "coco id 391895"),
        Contamination("oi-1", "oi", "listed", "phash", "phash distance 2 to an eval image"),
        Contamination("sbu-1", "sbu", "listed", "flickr_id", "flickr id 4385058960 (of an eval URL)"),
        Contamination("vg-1", "vg", "karpathy", "flickr_id", "flickr id 1000092795"),
    ]
    assert [c.key for c in find_contamination(refs, [listed], max_distance=5)] == ["cc-1", "oi-1", "oi-2", "sbu-1"]


def test_one_contamination_per_sample_and_eval_set_by_the_first_criterion():
    url = "http://images.cocodataset.org/val2014/COCO_val2014_000000391895.jpg"
    a = EvalSet("a", coco_ids={391895}, urls={normalise_url(url)}, phashes={f"{BASE:016x}"})
    b = EvalSet("b", urls={normalise_url(url)}, phashes={f"{BASE ^ 1:016x}"})
    c = EvalSet("c", phashes={f"{BASE ^ 0b1111:016x}", f"{BASE ^ 0b11:016x}"})
    refs = [_ref_of("vg-9", coco=391895, url=url, phash=BASE)]
    assert find_contamination(refs, [a, b, c]) == [
        Contamination("vg-9", "vg", "a", "coco_id", "coco id 391895"),
        Contamination("vg-9", "vg", "b", "url", f"url {normalise_url(url)}"),
        Contamination("vg-9", "vg", "c", "phash", "phash distance 2 to an eval image"),  # the nearest eval image
    ]


def test_phash_matching_over_many_samples_and_shared_eval_hashes():
    import random

    rng = random.Random(0)
    evals = [rng.getrandbits(64) for _ in range(50)]
    a = EvalSet("a", phashes={f"{h:016x}" for h in evals[:30]})
    b = EvalSet("b", phashes={f"{h:016x}" for h in evals[20:]})
    refs = [_ref_of(f"r-{k:05d}", phash=rng.getrandbits(64)) for k in range(5000)]
    refs += [_ref_of(f"r-near{k:02d}", phash=evals[k] ^ (1 << k)) for k in range(50)]
    refs += [_ref_of("r-same", phash=evals[25])]
    found = find_contamination(refs, [a, b])
    expected = {(f"r-near{k:02d}", name) for k in range(50) for name, s in (("a", range(30)), ("b", range(20, 50)))
                if k in s}
    expected |= {("r-same", "a"), ("r-same", "b")}
    assert {(c.key, c.eval_set) for c in found} == expected
    assert all(c.matched_by == "phash" for c in found)
    assert [c.key for c in found] == sorted(c.key for c in found)


def test_files_with_a_byte_order_mark_read_like_without(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"\xef\xbb\xbfcoco:391895\n")
    assert load_id_list(str(ids), "ids").coco_ids == load_evalset(str(ids), "ids").coco_ids == {391895}
    vqa = tmp_path / "questions"  # no .json suffix: recognised by its first character
    vqa.write_bytes(b"\xef\xbb\xbf" + json.dumps({"questions": [{"image_id": 7, "question": "?", "question_id": 1}]})
                    .encode())
    assert load_evalset(str(vqa), "vqa").coco_ids == {7}
