"""retrieval/query.py and retrieval/corpus.py over a real served mini corpus (MiniLM vectors, FAISS
indexes), and `unicorpus query` as a user runs it."""

import hashlib
import io
import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from pipelines.minicorpus import served
from retrieval.query import NotFound, QueryEngine, QueryError


@pytest.fixture(scope="module")
def corpus(ingested, tmp_path_factory):
    config, embedder = served.build(ingested[0], str(tmp_path_factory.getbasetemp() / "served"))
    return config, embedder, QueryEngine(config, embedder=embedder)


def exact(config, space, vector, exclude=None):
    """Every stored vector of ``space`` ranked by cosine with ``vector``: [(score, key, text_index)]."""
    from pipelines.sidecar_tables import read_sidecar

    rows = [row for source in served.SOURCES for row in read_sidecar(config.output, f"emb/{space}", source)
            if row["key"] != exclude]
    scores = np.array([row["vector"] for row in rows], dtype=np.float32) @ vector
    return sorted(
        ((float(s), row["key"], row["text_index"]) for s, row in zip(scores, rows, strict=True)), key=lambda t: -t[0]
    )


def assert_same_ranking(hits, truth, k):
    """Scores equal to the exact top k; each hit one of the exact items with its score (ties may swap)."""
    assert [h.rank for h in hits] == list(range(k))
    np.testing.assert_allclose([h.score for h in hits], [t[0] for t in truth[:k]], atol=1e-5)
    by_item = {(key, i): score for score, key, i in truth}
    for hit in hits:
        assert by_item[(hit.key, hit.text_index)] == pytest.approx(hit.score, abs=1e-5)


def test_free_text_matches_exact_search_over_every_text_index(corpus):
    config, embedder, engine = corpus
    hits = engine.search(text="a red ball on the grass", k=7)
    assert_same_ranking(hits, exact(config, "text", embedder.encode(["a red ball on the grass"])[0]), 7)
    assert {h.source for h in engine.search(text="a red ball on the grass", k=20)} > {"coco"}  # merged over sources
    assert all(h.text for h in hits) and "ball" in hits[0].text


def test_one_source_index_and_default_k(corpus):
    _, _, engine = corpus
    hits = engine.search(text="a tent in the forest", index="text/bookcorpus")
    assert len(hits) == 5 and {h.source for h in hits} == {"bookcorpus"}


def test_tag_list_is_one_tag_query(corpus):
    """mu-VLA §3.2: the tags joined as one sequence (duplicates once) search like that text."""
    _, _, engine = corpus
    by_tags = engine.search(tags=" ball, tree ,ball,", k=5, index="tags")
    by_text = engine.search(text="ball tree", k=5, index="tags")
    assert [(h.key, h.score) for h in by_tags] == [(h.key, h.score) for h in by_text]
    assert engine.search(tags=["ball", "tree"], k=5, index="tags") == by_tags


def test_key_searches_with_its_stored_vector_and_leaves_itself_out(corpus):
    config, _, engine = corpus
    key = "coco-504518"
    own = engine.stored_vectors(key, "text")
    assert len(own) == 6  # one per COCO caption
    hits = engine.search(key=key, k=5)
    assert key not in {h.key for h in hits}
    assert_same_ranking(hits, exact(config, "text", own[0], exclude=key), 5)


def test_key_without_a_vector_in_the_space_uses_its_other_vector(corpus):
    """A book sentence has no tag vector: its text vector searches the images' tag queries."""
    config, _, engine = corpus
    key = engine.search(text="a kite", index="text/bookcorpus", k=1)[0].key
    assert engine.stored_vectors(key, "tags") == []
    hits = engine.search(key=key, index="tags", k=3)
    assert {h.source for h in hits} <= set(served.GROUND_TRUTH)
    assert_same_ranking(hits, exact(config, "tags", engine.stored_vectors(key, "text")[0]), 3)


def test_keys_that_cannot_be_searched(corpus):
    _, _, engine = corpus
    unembedded = engine.corpus.locate("coco_unlabeled-000000393268")[2]["key"]  # ingested, not embedded
    with pytest.raises(NotFound, match="no stored vector"):
        engine.search(key=unembedded)
    for key in ("coco-999999999", "nosuchsource-1"):
        with pytest.raises(NotFound, match="no sample with key"):
            engine.search(key=key)
        with pytest.raises(NotFound, match="no sample with key"):
            engine.sample(key)


@pytest.mark.parametrize("request_, message", [
    ({"text": "   "}, "empty query"),
    ({}, "exactly one of"),
    ({"text": "ball", "tags": "ball"}, r"exactly one of .*\(got text, tags\)"),
    ({"text": "ball", "k": 0}, "1 <= k <= 1000"),
    ({"text": "ball", "k": 1001}, "1 <= k <= 1000"),
    ({"text": "ball", "k": "ten"}, "expected an integer"),
    ({"text": "ball", "k": 2.5}, "expected an integer"),
    ({"text": "ball", "k": True}, "expected an integer"),
    ({"text": 42}, "text: expected a string"),
    ({"tags": " , ,"}, "empty tag list"),
    ({"tags": 7}, "comma-separated"),
    ({"key": ""}, "key: empty"),
    ({"text": "ball", "index": "images"}, "unknown space 'images'"),
    ({"text": "ball", "index": "text/nope"}, "no index 'text/nope'"),
])
def test_bad_requests_say_what_is_wrong(corpus, request_, message):
    _, _, engine = corpus
    with pytest.raises(QueryError, match=message) as raised:
        engine.search(**request_)
    assert raised.value.status == 400


def test_related_items_come_from_the_links_in_rank_order(corpus):
    _, _, engine = corpus
    key = "coco-504518"  # a box and a ball
    links = engine.corpus.links("related-images", key)
    hits = engine.related(key, "images", k=3)
    assert [(h.key, h.score) for h in hits] == [(row["key"], pytest.approx(row["score"])) for row in links[:3]]
    assert key not in {h.key for h in hits} and hits[0].score >= hits[-1].score
    assert len(engine.related(key, "images", k=1000)) == len(links)
    texts = engine.corpus.links("related-texts", key)
    for text_index in (0, 2):  # related texts are per caption
        expected = [(row["key"], row["text_index"]) for row in texts if row["query_text_index"] == text_index][:4]
        assert [(h.key, h.text_index) for h in engine.related(key, "texts", 4, str(text_index))] == expected
    assert engine.related(key, "texts", 4) == engine.related(key, "texts", 4, 0)
    book = engine.search(text="a tent", index="text/bookcorpus", k=1)[0].key
    with pytest.raises(NotFound, match="no links/related-images/bookcorpus/ table; run `unicorpus retrieve`"):
        engine.related(book, "images")
    for args, message in (((key, "videos"), "kind: expected one of images, texts"),
                          ((key, "images", 3, 0), "text_index: only for kind=texts"),
                          ((key, "texts", 3, "-1"), "text_index: expected a non-negative integer")):
        with pytest.raises(QueryError, match=message):
            engine.related(*args)
    with pytest.raises(NotFound):
        engine.related("coco-999999999")


def test_sample_thumbnail_and_original_image(corpus):
    from PIL import Image

    _, _, engine = corpus
    sample = engine.sample("coco-504518")
    assert sample["has_image"] and sample["modality"] == "pair" and len(sample["meta"]["captions"]) == 6
    assert sorted(r["label"] for r in sample["regions"]) == ["ball", "box"]
    thumb, mime = engine.image("coco-504518", thumb=True)
    assert mime == "image/jpeg"
    with Image.open(io.BytesIO(thumb)) as image:
        assert image.format == "JPEG" and max(image.size) <= engine.thumbnail_side
    original, mime = engine.image("coco-504518", thumb=False)
    assert hashlib.sha256(original).hexdigest() == engine.corpus.row("coco-504518")["sha256"]
    text_only = engine.search(text="a tent", index="text/bookcorpus", k=1)[0].key
    assert not engine.sample(text_only)["has_image"]
    with pytest.raises(NotFound, match="has no image"):
        engine.image(text_only)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "cli.main", "query", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_help_imports_no_heavy_framework():
    code = ("import sys\nfrom cli.main import main\ntry:\n    main(['query', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'faiss', 'sentence_transformers', 'apache_beam') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "--tags" in out.stdout and out.stdout.strip().endswith("[]"), out.stdout + out.stderr


def test_cli_json_table_and_errors(corpus, mini_corpus):
    config, _, engine = corpus
    path = served.write_config(mini_corpus[0], config)
    out = run_cli("--config", path, "a red ball on the grass", "-k", "3", "--json")
    assert out.returncode == 0, out.stderr
    answered, expected = json.loads(out.stdout)["results"], engine.search(text="a red ball on the grass", k=3)
    assert [{**r, "score": 0} for r in answered] == [{**h.to_dict(), "score": 0} for h in expected]
    assert [r["score"] for r in answered] == pytest.approx([h.score for h in expected], abs=1e-5)  # another process
    out = run_cli("--config", path, "--key", "coco-504518", "--related", "images", "-k", "2")
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and lines[0].split() == ["#", "score", "source", "key", "text"] and len(lines) == 3
    assert lines[1].split()[:4] == ["1", f"{engine.related('coco-504518', k=1)[0].score:.4f}", *lines[1].split()[2:4]]
    for args, message in ((["  "], "empty query"), (["ball", "-k", "0"], "1 <= k <= 1000"),
                          (["--key", "coco-999999999"], "no sample with key"), (["ball", "--tags", "a"], "exactly one"),
                          (["ball", "--index", "text/nope"], "no index 'text/nope'")):
        out = run_cli("--config", path, *args)
        assert out.returncode == 2 and out.stdout == "", (args, out.stdout)
        assert (
            out.stderr.count("\n") == 1 and out.stderr.startswith("unicorpus query: error: ") and message in out.stderr
        )


def test_batcher_encodes_what_queued_meanwhile_in_one_call():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from retrieval.query import Batcher

    release, batches = threading.Event(), []

    def encode(texts):
        batches.append(list(texts))
        if len(batches) == 1:
            release.wait(10)  # the first call is slow: the others queue behind it
        return np.array([[len(t)] for t in texts], dtype=np.float32)

    batcher = Batcher(encode, max_batch=4)
    with ThreadPoolExecutor(7) as pool:
        first = pool.submit(batcher, "x")
        while not batches:
            time.sleep(0.01)
        rest = [pool.submit(batcher, "y" * n) for n in range(1, 7)]
        while batcher._queue.qsize() < 6:
            time.sleep(0.01)
        release.set()
        assert first.result()[0] == 1 and [f.result()[0] for f in rest] == [1, 2, 3, 4, 5, 6]
    assert [len(b) for b in batches] == [1, 4, 2]  # 6 waiting texts, at most 4 a call


def test_batcher_hands_a_failure_to_every_waiting_request():
    from retrieval.query import Batcher

    def encode(texts):
        raise RuntimeError("model exploded")

    with pytest.raises(RuntimeError, match="model exploded"):
        Batcher(encode)("anything")


def test_concurrent_queries_get_the_vectors_of_single_queries(corpus):
    from concurrent.futures import ThreadPoolExecutor

    _, embedder, engine = corpus
    texts = [
        f"a {colour} ball next to a {thing}" for colour in ("red", "blue") for thing in ("tent", "car house", "tree")
    ]
    with ThreadPoolExecutor(len(texts)) as pool:
        vectors = list(pool.map(engine.encode, texts))
    np.testing.assert_allclose(np.stack(vectors), embedder.encode(texts), atol=1e-5)


def test_cli_invalid_utf8_is_one_line_and_exit_code_2(corpus, mini_corpus):
    """Issue 13: `unicorpus query $'caf\\xe9 ball'` ended in a traceback. The bytes reach Python as lone
    surrogates (surrogateescape); in the text, in --tags and in --key alike they are a bad request."""
    config, _, _ = corpus
    path = served.write_config(mini_corpus[0], config)
    for args, name in ((["caf\udce9 ball"], "text"), (["--tags", "caf\udce9,ball"], "tags"),
                       (["--key", "coco-\udcff"], "key"), (["ball", "--index", "text/\udce9"], "index")):
        out = subprocess.run([sys.executable, "-m", "cli.main", "query", "--config", path, *args],
                             capture_output=True, timeout=300)
        assert out.returncode == 2 and out.stdout == b"", (args, out)
        assert out.stderr.decode() == f"unicorpus query: error: {name}: not valid UTF-8 (check the terminal's or " \
                                      "the file's encoding)\n"
    with pytest.raises(QueryError, match="text: not valid UTF-8"):
        corpus[2].search(text="caf\udce9")


def test_cli_exit_codes_bad_request_2_failed_run_1(corpus, mini_corpus, tmp_path):
    from tests.conftest import free_port

    config, _, _ = corpus
    path = served.write_config(mini_corpus[0], config)
    out = run_cli("--server", f"http://127.0.0.1:{free_port()}", "ball")  # nothing listens: the run failed
    assert out.returncode == 1 and out.stderr.startswith("unicorpus query: error: cannot reach http://127.0.0.1:")
    assert out.stderr.count("\n") == 1
    for args in (["ball"], ["--config", path, "--server", "http://127.0.0.1:1", "ball"],  # argparse: usage, 2
                 ["--config", str(tmp_path / "none.yaml"), "ball"], ["--server", "ftp://x", "ball"],
                 ["--config", path, "--interactive", "ball"]):
        out = run_cli(*args)
        assert out.returncode == 2 and "Traceback" not in out.stderr, (args, out.stderr)
    assert "cannot read config" in run_cli("--config", str(tmp_path / "none.yaml"), "ball").stderr


def read_json_documents(text: str) -> list:
    decoder, documents, position = json.JSONDecoder(), [], 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
    return documents


def test_interactive_loads_once_and_answers_every_line(corpus, mini_corpus):
    config, _, engine = corpus
    path = served.write_config(mini_corpus[0], config)
    lines = ["a red ball on the grass -k 3", "--tags ball,tree --index tags -k 2", "-k 0 ball", "--colour red",
             "caf\udce9 au lait", '"unbalanced', "--key coco-504518 --related texts -k 2", "", "help",
             "a small kite", "quit", "a question after quit"]
    data = "\n".join(lines).encode("utf-8", "surrogateescape") + b"\n"
    out = subprocess.run([sys.executable, "-m", "cli.main", "query", "--config", path, "--interactive", "--json"],
                         input=data, capture_output=True, timeout=300)
    stdout, stderr = out.stdout.decode(), out.stderr.decode()
    assert out.returncode == 0, stderr
    assert stderr.count("loading the model") == 1 and stderr.count("ready") == 1
    assert [line for line in stderr.splitlines() if line.startswith("error: ")] == [
        "error: k: expected 1 <= k <= 1000, got 0", "error: unrecognized arguments: --colour",
        "error: line: not valid UTF-8 (check the terminal's or the file's encoding)", "error: No closing quotation"]
    assert len(re.findall(r"^\(\d+ ms\)$", stderr, re.M)) == 4  # one per answered question
    help_start = stdout.index("one question per line")
    help_end = stdout.index("Ctrl-D) ends") + len("Ctrl-D) ends")
    documents = read_json_documents(stdout[:help_start] + stdout[help_end:])
    expected = [engine.search(text="a red ball on the grass", k=3), engine.search(tags="ball,tree", index="tags", k=2),
                engine.related("coco-504518", "texts", 2), engine.search(text="a small kite", k=5)]
    assert len(documents) == len(expected)
    for document, hits in zip(documents, expected, strict=True):
        assert [(r["rank"], r["key"], r["text_index"], r["text"]) for r in document["results"]] == \
            [(h.rank, h.key, h.text_index, h.text) for h in hits]
        assert [r["score"] for r in document["results"]] == pytest.approx([h.score for h in hits], abs=1e-5)
