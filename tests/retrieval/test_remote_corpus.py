"""A corpus read through ``retrieval.files`` (fsspec) from a URL: the served mini corpus copied into fsspec's
``memory://`` file system gives the query engine (``unicorpus query``, the service), the corpus reader and the
report the same answers as the local folder; its FAISS indexes are copied into the local cache once."""

import base64
import dataclasses
import json
import os
import re
import uuid
from datetime import UTC, datetime

import fsspec
import pytest

from pipelines.minicorpus import served
from retrieval import files
from retrieval.corpus import Corpus
from retrieval.query import QueryEngine
from schemas import layout
from tests.test_object_store import s3_log, s3_server  # noqa: F401 (a real S3 API server on loopback, its log)


@pytest.fixture(scope="module")
def local_and_remote(ingested, tmp_path_factory):
    """(local config, the same corpus under memory://, embedder); the remote config's index cache is its own."""
    config, embedder = served.build(ingested[0], str(tmp_path_factory.getbasetemp() / "served"))
    name = f"corpus-{uuid.uuid4().hex[:8]}"
    memory = fsspec.filesystem("memory")
    memory.put(config.output, f"/{name}", recursive=True)
    cache = str(tmp_path_factory.mktemp("index-cache"))
    serve = dataclasses.replace(config.retrieval.serve, index_cache=cache)
    remote = dataclasses.replace(config, output=f"memory://{name}",
                                 retrieval=dataclasses.replace(config.retrieval, serve=serve))
    yield config, remote, embedder
    memory.rm(f"/{name}", recursive=True)


def _answer(ask, *args, **kwargs):
    """The answer, or the refusal (type and message): both must be the same from either root."""
    try:
        return ask(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 (compared, not swallowed)
        return type(e).__name__, str(e)


def _keys(config, space="text"):
    """A few keys with stored vectors: two images with boxes (coco), two text-only samples (bookcorpus)."""
    corpus = Corpus.from_config(config)
    return [row["key"] for source in ("coco", "bookcorpus")
            for row in list(corpus.rows(layout.emb(space), source, ["key"]))[:2]]


def test_query_engine_answers_the_same_from_memory(local_and_remote):
    config, remote, embedder = local_and_remote
    local_engine, remote_engine = QueryEngine(config, embedder), QueryEngine(remote, embedder)
    assert remote_engine.catalog() == local_engine.catalog() and remote_engine.catalog()["text"]
    for engine in (local_engine, remote_engine):
        assert engine.corpus.root == engine._config.output
    keys = _keys(config)
    questions = [{"text": "a red ball next to a tree"}, {"tags": "person,dog", "index": "tags"}]
    questions += [{"key": key} for key in keys]
    for question in questions:
        assert remote_engine.search(k=5, **question) == local_engine.search(k=5, **question), question
    related = []
    for key in keys:
        assert remote_engine.sample(key) == local_engine.sample(key)
        for kind in ("images", "texts"):
            related.append(_answer(local_engine.related, key, kind, k=5))
            assert _answer(remote_engine.related, key, kind, k=5) == related[-1]
        if local_engine.has_image(key):
            assert remote_engine.image(key) == local_engine.image(key)
            assert remote_engine.image(key, thumb=True) == local_engine.image(key, thumb=True)
    assert any(isinstance(answer, list) and answer for answer in related)  # links were read, not only refusals


def test_remote_indexes_are_copied_to_the_cache_once_and_again_when_rebuilt(local_and_remote):
    config, remote, embedder = local_and_remote
    cache = remote.retrieval.serve.index_cache
    QueryEngine(remote, embedder)
    copies = sorted(os.listdir(cache))
    built = [path for path in files.glob(files.join(remote.output, layout.index_build_file("*", "*")))]
    assert len(copies) == len(built) > 0  # one folder per index, nothing left half-copied
    stamps = {name: os.stat(os.path.join(cache, name, layout.INDEX_FILE)).st_mtime_ns for name in copies}
    QueryEngine(remote, embedder)  # current copies are used as they are
    assert {name: os.stat(os.path.join(cache, name, layout.INDEX_FILE)).st_mtime_ns for name in copies} == stamps

    rebuilt = built[0]  # a rebuilt index has another build.json (its proof): the copy is replaced
    proof = files.read_bytes(rebuilt)
    files.write_bytes(rebuilt, proof.replace(b"{", b'{\n  "rebuilt": true,', 1))
    try:
        engine = QueryEngine(remote, embedder)
        space, source = rebuilt.rsplit("/", 3)[-3:-1]
        assert engine.indexes[space][source].info["rebuilt"] is True
        assert sorted(os.listdir(cache)) == copies
    finally:
        files.write_bytes(rebuilt, proof)


def test_corpus_reader_gives_the_same_rows_from_memory(local_and_remote):
    config, remote, _ = local_and_remote
    local, far = Corpus.from_config(config), Corpus.from_config(remote)
    assert far.manifest() == local.manifest() and far.manifest()["stages"]
    for folder in (layout.ann("detect"), layout.emb("text"), layout.links("related-texts")):
        assert list(far.rows(folder, "coco")) == list(local.rows(folder, "coco"))
    for key in _keys(config):
        assert far.row(key) == local.row(key)
        assert far.sidecar_rows(layout.ann("detect"), key) == local.sidecar_rows(layout.ann("detect"), key)
        assert far.links("related-images", key) == local.links("related-images", key)


def test_report_of_the_memory_copy_is_the_local_report(local_and_remote):
    from pipelines.report import THUMB, build_report, write_report

    config, remote, _ = local_and_remote
    made = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    page = build_report(config, made)
    assert "<img src='data:image/jpeg;base64," in page and "id='boxes'" in page and "id='indexes'" in page
    assert build_report(remote, made) == page.replace(config.output, remote.output)
    shown = re.findall(r"<img src='data:image/jpeg;base64,([^']+)' alt='([^']+)'>", page)
    corpus = Corpus.from_config(config)
    assert shown and all(base64.b64decode(data) == corpus.thumbnail(key, THUMB) for data, key in shown)  # one helper
    path = write_report(remote)
    assert path == f"{remote.output}/{layout.report()}"
    assert files.read_bytes(path).decode().startswith("<!doctype html>")
    assert not [p for p in files.glob(files.join(remote.output, layout.REPORT, "*")) if ".tmp-" in p]


def test_file_urls_and_local_paths_name_the_same_files(local_and_remote):
    config, _, _ = local_and_remote
    pattern = files.join(config.output, layout.raw("coco"), "*.parquet")
    local = files.glob(pattern)
    assert local and files.glob(f"file://{pattern}") == [f"file://{path}" for path in local]
    assert files.read_bytes(f"file://{local[0]}", 4, 8) == files.read_bytes(local[0])[4:12]
    assert files.local_copy(f"file://{config.output}", [layout.MANIFEST]) == config.output


def test_index_cache_must_be_a_local_folder(tmp_path):
    from schemas.config_errors import ConfigError
    from schemas.stages import ServeConfig

    with pytest.raises(ConfigError, match="retrieval.serve.index_cache: expected a local folder, got 's3://b/c'"):
        ServeConfig(index_cache="s3://b/c").validate("retrieval.serve")


def test_query_command_reads_a_corpus_url(local_and_remote, mini_corpus, capsys):
    """``unicorpus query --config`` with ``output: memory://...`` (in this process: the memory file system is
    its own) prints what it prints for the local folder."""
    import yaml

    from cli.main import main

    config, remote, _ = local_and_remote
    local_path = served.write_config(mini_corpus[0], config)
    with open(local_path) as f:
        data = yaml.safe_load(f)
    data["output"] = remote.output
    data["retrieval"]["serve"] = {"index_cache": remote.retrieval.serve.index_cache}
    remote_path = os.path.join(os.path.dirname(local_path), "remote.yaml")
    with open(remote_path, "w") as f:
        yaml.safe_dump(data, f)
    printed = []
    for path in (local_path, remote_path):
        for question in (["a red ball on the grass", "-k", "3", "--json"], ["--key", "coco-504518", "--related",
                                                                             "images", "-k", "2"]):
            assert main(["query", "--config", path, *question]) == 0
            printed.append(capsys.readouterr().out)
    assert printed[:2] == printed[2:] and json.loads(printed[0])["results"]


def test_s3_without_s3fs_reads_through_pyarrow(local_and_remote, s3_server, monkeypatch):  # noqa: F811 (imported)
    """``s3://`` with no s3fs installed: pyarrow's S3 client wrapped as fsspec, configured from the environment,
    against a real S3 API server on loopback; the corpus reader and the report see the local corpus."""
    from pipelines.report import build_report

    endpoint, client = s3_server
    for name, value in (("AWS_ENDPOINT_URL", endpoint), ("AWS_ACCESS_KEY_ID", "test"),
                        ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    files._filesystem_of.cache_clear()  # this test's endpoint, not an earlier one's
    config = local_and_remote[0]
    for folder, _, names in os.walk(config.output):
        for name in names:
            path = os.path.join(folder, name)
            client.upload_file(path, "corpus", f"served/{os.path.relpath(path, config.output)}")
    remote = dataclasses.replace(config, output="s3://corpus/served")
    with pytest.raises(ImportError):
        import s3fs  # noqa: F401 (the point: the fallback, not s3fs)
    local, far = Corpus.from_config(config), Corpus.from_config(remote)
    for key in _keys(config):
        assert far.row(key) == local.row(key)
        assert far.sidecar_rows(layout.emb("text"), key) == local.sidecar_rows(layout.emb("text"), key)
        if local.row(key)["image_offset"] is not None:
            assert far.image_bytes(key) == local.image_bytes(key)
    made = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    assert build_report(remote, made) == build_report(config, made).replace(config.output, remote.output)
    files._filesystem_of.cache_clear()


def _copy_and_read(cache: str, start) -> tuple[str, int]:
    files.filesystem("s3://corpus/race")  # connected before the start, so the copies overlap
    start.wait()
    folder = files.local_copy("s3://corpus/race", ["data.bin", "build.json"], cache)
    with open(os.path.join(folder, "data.bin"), "rb") as f:
        return folder, len(f.read())


def test_processes_copying_one_remote_folder_at_once_all_get_it(s3_server, tmp_path, monkeypatch):  # noqa: F811
    """Service workers start together and load the same remote index (here from a real S3 API server): every
    process gets a whole copy, one folder stays in the cache."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    endpoint, client = s3_server
    for name, value in (("AWS_ENDPOINT_URL", endpoint), ("AWS_ACCESS_KEY_ID", "test"),
                        ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    client.put_object(Bucket="corpus", Key="race/data.bin", Body=b"x" * 2_000_000)
    client.put_object(Bucket="corpus", Key="race/build.json", Body=b"{}")
    cache = str(tmp_path / "cache")
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(6, mp_context=context) as pool:
        start = manager.Barrier(6)
        got = list(pool.map(_copy_and_read, [cache] * 6, [start] * 6))
    assert {size for _, size in got} == {2_000_000}
    assert len({folder for folder, _ in got}) == 1 and os.listdir(cache) == [os.path.basename(got[0][0])]


def _build_json_gets(log) -> int:
    """GET requests for build.json that the S3 server answered so far."""
    return len(re.findall(r"GET /corpus/idx/build\.json[ ?]", log.read_text()))  # lines may be coloured


def test_an_index_load_reads_build_json_once(s3_server, s3_log, tmp_path, monkeypatch):  # noqa: F811 (imported)
    """Counted by a real S3 API server: a load that copies the index reads build.json once, and once more after
    the copy (the files must still belong to it); a load from a current cache reads it once. The metadata the
    index carries is that file."""
    from retrieval.index import SearchIndex, build_or_update
    from schemas.stages import IndexConfig
    from tests.retrieval.test_index import clustered, parts_of

    endpoint, client = s3_server
    for name, value in (("AWS_ENDPOINT_URL", endpoint), ("AWS_ACCESS_KEY_ID", "test"),
                        ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    files._filesystem_of.cache_clear()  # this test's endpoint, not an earlier one's
    vectors, built = clustered(300, seed=1), tmp_path / "idx"
    build_or_update(str(built), parts_of(vectors, 100), IndexConfig(), "m", vectors.shape[1])
    for name in os.listdir(built):
        client.upload_file(str(built / name), "corpus", f"idx/{name}")
    cache = str(tmp_path / "cache")
    before = _build_json_gets(s3_log)
    copied = SearchIndex.load("s3://corpus/idx", cache)
    assert _build_json_gets(s3_log) - before == 2
    cached = SearchIndex.load("s3://corpus/idx", cache)
    assert _build_json_gets(s3_log) - before == 3
    assert copied.info == cached.info == json.loads((built / "build.json").read_bytes())
    assert cached.search(vectors[:1], 1)[1][0, 0] == 0 and cached.ntotal == 300
    files._filesystem_of.cache_clear()
