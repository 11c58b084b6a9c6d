import pytest

from pipelines.sources.labels import join_labels, parse_words, parse_words_line, pseudo_caption
from schemas.config import PseudoPairConfig
from schemas.keys import shard_of


def test_join_labels():
    assert join_labels(["dog"]) == "dog"
    assert join_labels(["dog", "cat"]) == "dog and cat"
    assert join_labels(["dog", "cat", "bird"]) == "dog, cat and bird"
    assert join_labels(["a", "b", "c", "d"]) == "a, b, c and d"
    with pytest.raises(ValueError):
        join_labels([])


def test_pseudo_caption_default_template():
    config = PseudoPairConfig(enabled=True)
    assert pseudo_caption("oi-abc", ["Tortoise"], config) == "a photo of Tortoise."
    assert pseudo_caption("oi-abc", ["dog", "cat"], config) == "a photo of dog and cat."


def test_pseudo_caption_uses_first_max_labels():
    config = PseudoPairConfig(enabled=True, max_labels=2)
    assert pseudo_caption("k", ["a", "b", "c"], config) == "a photo of a and b."
    config = PseudoPairConfig(enabled=True, max_labels=3)
    assert pseudo_caption("k", ["a", "b", "c", "d"], config) == "a photo of a, b and c."


def test_pseudo_caption_template_chosen_by_key():
    templates = ["a photo of {label}.", "an image of {label}", "{label} {{literal braces}}"]
    config = PseudoPairConfig(enabled=True, templates=templates)
    seen = set()
    for i in range(60):
        key = f"src-{i}"
        expected = templates[shard_of(key, len(templates))].replace("{label}", "dog")
        caption = pseudo_caption(key, ["dog"], config)
        assert caption == expected
        assert pseudo_caption(key, ["dog"], config) == caption  # a function of the key alone
        seen.add(caption)
    assert "dog {{literal braces}}" in seen  # str.replace, not str.format
    assert len(seen) == 3


def test_parse_words_line():
    assert parse_words_line("n02084071\tdog, domestic dog, Canis familiaris") == (
        "n02084071",
        ["dog", "domestic dog", "Canis familiaris"],
    )
    assert parse_words_line("n00001740\tentity") == ("n00001740", ["entity"])
    for bad in ("n02084071 dog", "n02084071\t", "\tdog", "n02084071\t , "):
        with pytest.raises(ValueError):
            parse_words_line(bad)


def test_parse_words():
    lines = ["n00001740\tentity\r\n", "", "n02084071\tdog, domestic dog", "n02084071\tduplicate"]
    assert parse_words(lines) == {"n00001740": ["entity"], "n02084071": ["dog", "domestic dog"]}
    with pytest.raises(ValueError, match="line 2"):
        parse_words(["n00001740\tentity", "garbage"])
