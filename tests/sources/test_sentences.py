import pytest

from pipelines.sources.sentences import iter_chunks, pack, split_sentences, text_records
from schemas.config import TextConfig
from schemas.keys import make_key
from schemas.records import Candidate, Modality, Reason, Reject


@pytest.mark.parametrize(
    "text, expected",
    [
        ("One. Two! Three?", ["One.", "Two!", "Three?"]),
        ("Mr. Smith met Mrs. Jones. They talked.", ["Mr. Smith met Mrs. Jones.", "They talked."]),
        ("Pi is 3.14 roughly. It is irrational.", ["Pi is 3.14 roughly.", "It is irrational."]),
        ("The U.S. Army is large. It has many soldiers.", ["The U.S. Army is large.", "It has many soldiers."]),
        ("Fruit, e.g. apples. Or i.e. Pears here.", ["Fruit, e.g. apples.", "Or i.e. Pears here."]),
        ("J. R. R. Tolkien wrote it. He was British.", ["J. R. R. Tolkien wrote it.", "He was British."]),
        ('"Help!" she cried. "Anyone?" No.', ['"Help!" she cried.', '"Anyone?"', "No."]),
        ("He left (quietly.) Then it rained.", ["He left (quietly.)", "Then it rained."]),
        ("Wait... what? It ended... The end.", ["Wait... what?", "It ended...", "The end."]),
        ("Unicode ellipsis… Next one.", ["Unicode ellipsis…", "Next one."]),
        ("Really?! Yes!! Fine.", ["Really?!", "Yes!!", "Fine."]),
        ("See No. 5 and Fig. 3 on p. 12 today. Done.", ["See No. 5 and Fig. 3 on p. 12 today.", "Done."]),
        ("Born in 1990. 25 years later he died.", ["Born in 1990.", "25 years later he died."]),
        ("It works at 5 p.m. on Monday. Good.", ["It works at 5 p.m. on Monday.", "Good."]),
        ("Better than I. He agreed.", ["Better than I.", "He agreed."]),
        ("St. Louis is a city. So is Mt. Vernon.", ["St. Louis is a city.", "So is Mt. Vernon."]),
        ("  spaced\n out   text.\tNext  line ", ["spaced out text.", "Next line"]),
        ("no terminator at all", ["no terminator at all"]),
        ("", []),
        ("   \n ", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_pack_sentence_mode():
    assert pack(["a b", "c"], TextConfig(pack="sentence")) == [["a b"], ["c"]]
    assert pack([], TextConfig(pack="sentence")) == []


def test_pack_tokens_greedy_whole_sentences():
    config = TextConfig(pack="tokens", max_tokens=5)
    sentences = ["a b", "c d", "e", "f g h i j", "k"]
    assert pack(sentences, config) == [["a b", "c d", "e"], ["f g h i j"], ["k"]]
    for chunk in pack(sentences, config):
        assert sum(len(s.split()) for s in chunk) <= 5


def test_pack_tokens_long_sentence_stands_alone():
    config = TextConfig(pack="tokens", max_tokens=3)
    long = "one two three four five"
    assert pack(["x", long, "y", "z"], config) == [["x"], [long], ["y", "z"]]
    assert pack([long], config) == [[long]]


def test_pack_unknown_mode():
    with pytest.raises(ValueError, match="packing"):
        pack(["a"], TextConfig(pack="words"))


def test_iter_chunks_streams():
    def endless():
        i = 0
        while True:
            yield f"w{i}"
            i += 1

    chunks = iter_chunks(endless(), TextConfig(pack="tokens", max_tokens=2))
    assert next(chunks) == ["w0", "w1"]
    assert next(chunks) == ["w2", "w3"]


def test_text_records_keys_meta_and_locations():
    bad = Reject("src", "f:2", Reason.NON_UTF8)
    items = [("f:1", "One two."), ("f:1", "Three."), bad, ("f:3", "Four five six.")]
    config = TextConfig(pack="tokens", max_tokens=3)
    records = list(text_records("src", "doc/7", items, "f", config, {"title": "T"}))
    candidates = [r for r in records if isinstance(r, Candidate)]
    rejects = [r for r in records if isinstance(r, Reject)]
    assert [r.location for r in rejects] == ["f:2"]
    assert [c.key for c in candidates] == [make_key("src", "doc/7", 0), make_key("src", "doc/7", 1)]
    first, second = candidates
    assert first.text == "One two. Three." and second.text == "Four five six."
    assert first.modality is Modality.TEXT and first.image_path is None and first.image_bytes is None
    assert first.meta == {"title": "T", "doc_id": "doc/7", "chunk": 0, "sentences": 2}
    assert second.meta == {"title": "T", "doc_id": "doc/7", "chunk": 1, "sentences": 1}
    assert (first.location, second.location) == ("f:1", "f:3")
    assert make_key("src", first.source_id) == first.key


def test_text_records_sentence_mode_one_per_sentence():
    items = [("f:1", "A."), ("f:2", "B.")]
    records = list(text_records("src", "d", items, "f", TextConfig()))
    assert [(r.text, r.meta["chunk"], r.meta["sentences"]) for r in records] == [("A.", 0, 1), ("B.", 1, 1)]


def test_text_records_empty_document():
    records = list(text_records("src", "d", [Reject("src", "f:1", Reason.NON_UTF8)], "f", TextConfig()))
    assert [(r.location, r.reason) for r in records] == [("f:1", Reason.NON_UTF8), ("f", Reason.EMPTY_TEXT)]
    assert records[1].key == make_key("src", "d")
