"""The prose splitters against the hand-split gold set (tests/data/sentences_gold.txt), and the punkt
splitter's set-up: parameters from the NLTK data folder, a clear error when they are missing."""

import pickle

import pytest

from benchmarks.sentences import boundaries, read_gold, score
from pipelines.nltk_data import PUNKT, data_dir
from pipelines.sources.sentences import PunktSplitter, sentence_splitter, split_sentences
from pipelines.sources.text import BookCorpusReader, WikipediaReader
from schemas.config import BookCorpusConfig, ConfigError, TextConfig, WikipediaConfig


@pytest.fixture(scope="module")
def gold():
    return read_gold()


def test_gold_set_is_large_and_hard(gold):
    sentences = [s for paragraph in gold for s in paragraph]
    assert len(sentences) >= 200
    text = " ".join(sentences)
    for hard in ("et al.", "e.g.", "i.e.", "Fig. 1", "Dr. ", "U.S. ", "J. R. R. ", "3.5 m", "No. 5"):
        assert hard in text


def test_boundaries():
    text = "A b. C d. E."
    assert boundaries(text, ["A b.", "C d.", "E."]) == {4, 9}
    assert boundaries(text, [text]) == set()
    with pytest.raises(ValueError, match="not in the paragraph"):
        boundaries(text, ["A b.", "X."])


def test_punkt_default_on_gold(gold):
    """The project's punkt (English parameters + the abbreviations scholarly prose needs, lower-case pieces
    joined back) finds every gold boundary with at most two false splits, where NLTK's bare English
    parameters cut after "Fig.", "Sec.", "e.g.", "No." and "approx."."""
    default = score(sentence_splitter(TextConfig()), gold)
    bare = score(PunktSplitter(data_dir(), abbreviations=(), join_lower=False), gold)
    assert default["recall"] == 1.0 and default["found"] - default["correct"] <= 2
    assert bare["found"] - bare["correct"] >= 10 * (default["found"] - default["correct"])
    assert default["f1"] > bare["f1"]
    text = "See Fig. 1 of Kiss et al. (2006), e.g. the table. Results improved."
    assert sentence_splitter(TextConfig())(text) == ["See Fig. 1 of Kiss et al. (2006), e.g. the table.",
                                                     "Results improved."]


def test_rules_splitter_is_the_rule_function(gold):
    """``text.splitter: rules`` is the rule-based splitter itself, so its output stays byte-identical."""
    assert sentence_splitter(TextConfig(splitter="rules")) is split_sentences
    assert score(split_sentences, gold)["recall"] == 1.0


def test_punkt_splitter_pickles_for_workers():
    split = sentence_splitter(TextConfig())
    again = pickle.loads(pickle.dumps(split))
    text = '"Go!" she said. Dr. Smith waved.'
    assert again(text) == split(text) == ['"Go!" she said.', "Dr. Smith waved."]


def test_missing_punkt_fails_with_what_to_put_where(tmp_path):
    config = TextConfig(nltk_data=str(tmp_path))
    with pytest.raises(
        ConfigError, match=r"text.splitter: punkt needs .*tokenizers/punkt_tab/english/.*make nltk-data"
    ):
        sentence_splitter(config, check=True)
    reader = WikipediaReader("wiki", WikipediaConfig(root=str(tmp_path)), config)
    with pytest.raises(ConfigError, match="punkt_tab"):
        reader.parts()  # before any pipeline starts
    assert sentence_splitter(TextConfig(splitter="rules", nltk_data=str(tmp_path)), check=True) is split_sentences
    (tmp_path / "books_large_p1.txt").write_text("one sentence a line .\n")
    lines = BookCorpusReader("bc", BookCorpusConfig(root=str(tmp_path), layout="lines"), config)
    assert len(lines.parts()) == 1  # lines are sentences already: no splitter, no check


def test_nltk_data_folder_order(tmp_path, monkeypatch):
    monkeypatch.setenv("NLTK_DATA", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert data_dir() == str(tmp_path / "a")
    assert data_dir(str(tmp_path / "c")) == str(tmp_path / "c")
    monkeypatch.delenv("NLTK_DATA")
    assert data_dir().endswith(".nltk_data")
    assert (tmp_path / "a").joinpath(PUNKT).parts[-3:] == ("tokenizers", "punkt_tab", "english")
