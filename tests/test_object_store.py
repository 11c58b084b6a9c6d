"""Ingest straight into an object store through Beam's S3 FileSystem, against a real S3 server
(moto's standalone server) on 127.0.0.1: the same bytes as on local disk."""

import dataclasses
import hashlib
import os
import subprocess
import sys

import pytest

from pipelines.runner import RunnerConfig
from pipelines.stages.ingest import run_ingest
from schemas.config import load_config
from tests.conftest import free_port, tree_digest, wait_for_port

SOURCES = ["coco", "wiki"]
# An ingest makes a dozen S3 calls per shard (writes, renames, the resume checks), each a round trip to the
# server: fewer shards than the mini corpus' 4 + 3 keep this test short. Images in a source of two shards and
# text in one of one still cover every file kind.
SHARDS = {"coco": 2, "wiki": 1}


@pytest.fixture
def s3_log(tmp_path_factory):
    """Where ``s3_server`` logs every request it answers (beside, not in, the test's ``tmp_path``)."""
    return tmp_path_factory.mktemp("s3") / "requests.log"


@pytest.fixture
def s3_server(s3_log):
    """(endpoint, boto3 client) of a real S3 API server on loopback."""
    import boto3

    port = free_port()
    log = open(s3_log, "wb")
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        wait_for_port(port, server)
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                              region_name="us-east-1")
        client.create_bucket(Bucket="corpus")
        yield endpoint, client
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_ingest_to_s3_matches_local_disk(mini_corpus, tmp_path, s3_server):
    endpoint, client = s3_server
    config = load_config(mini_corpus[0])
    config = dataclasses.replace(config, sources={n: dataclasses.replace(config.sources[n], shards=SHARDS[n])
                                                  for n in SOURCES})
    s3_args = [f"--s3_endpoint_url={endpoint}", "--s3_access_key_id=test", "--s3_secret_access_key=test",
               "--s3_region_name=us-east-1"]

    local = run_ingest(dataclasses.replace(config, output=str(tmp_path)), SOURCES, RunnerConfig(), show_progress=False)
    remote_config = dataclasses.replace(config, output="s3://corpus/run1")
    remote = run_ingest(remote_config, SOURCES, RunnerConfig(beam_args=s3_args), show_progress=False)
    assert [r.counts for r in remote] == [r.counts for r in local]
    assert [r.shards for r in remote] == [SHARDS[n] for n in SOURCES]

    objects = client.list_objects_v2(Bucket="corpus", Prefix="run1/")["Contents"]
    remote_tree = {o["Key"].removeprefix("run1/"):
                   hashlib.sha256(client.get_object(Bucket="corpus", Key=o["Key"])["Body"].read()).hexdigest()
                   for o in objects}
    assert remote_tree == tree_digest(tmp_path)

    again = run_ingest(remote_config, SOURCES, RunnerConfig(beam_args=s3_args), show_progress=False)
    assert [r.skipped_shards for r in again] == [r.shards for r in remote]  # resumable on S3 too

    # an annotator on the S3 corpus: the launcher reads its tables' bytes back from one listing of each
    # source's folder (sizes from S3's listing, footers through S3 streams), the same counts as on local disk
    from functools import partial

    from pipelines.stages.per_shard import run_sidecar_stage
    from tests.test_sidecar_tables import _KeyLengthsWithExtra

    factory = partial(_KeyLengthsWithExtra, str(tmp_path / "setup-ran"))
    local = run_sidecar_stage(dataclasses.replace(config, output=str(tmp_path)), factory, SOURCES, RunnerConfig(),
                              show_progress=False)
    remote = run_sidecar_stage(remote_config, factory, SOURCES, RunnerConfig(beam_args=s3_args), show_progress=False)
    again = run_sidecar_stage(remote_config, factory, SOURCES, RunnerConfig(beam_args=s3_args), show_progress=False)
    assert all(r.skipped_shards == r.shards > 0 for r in again)
    assert [(r.name, r.counts, r.extra) for r in again] == [(r.name, r.counts, r.extra) for r in remote] == \
        [(r.name, r.counts, r.extra) for r in local]
    assert all(r.counts.bytes > 0 for r in remote)


def test_one_boto3_client_serves_every_s3_call_of_a_process(s3_server, monkeypatch):
    """Beam's S3 FileSystem asks for a new client on every call; ``pipelines.s3_clients`` makes the first one
    serve them all (``storage`` installs it), each call still through Beam's own wrapper."""
    import boto3
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines import storage

    endpoint, client = s3_server
    made = []
    real = boto3.session.Session.client
    monkeypatch.setattr(boto3.session.Session, "client",
                        lambda self, *args, **kwargs: made.append(kwargs) or real(self, *args, **kwargs))
    storage.configure(PipelineOptions([f"--s3_endpoint_url={endpoint}", "--s3_access_key_id=test",
                                       "--s3_secret_access_key=test", "--s3_region_name=us-east-1"]))
    storage.write_bytes("s3://corpus/shared/a.bin", b"first")
    storage.write_bytes("s3://corpus/shared/b.bin", b"second")
    storage.rename("s3://corpus/shared/b.bin", "s3://corpus/shared/c.bin")
    assert storage.exists("s3://corpus/shared/a.bin") and not storage.exists("s3://corpus/shared/b.bin")
    assert [storage.read_bytes(f"s3://corpus/shared/{n}.bin") for n in "ac"] == [b"first", b"second"]
    assert sorted(storage.glob("s3://corpus/shared/*")) == ["s3://corpus/shared/a.bin", "s3://corpus/shared/c.bin"]
    assert client.get_object(Bucket="corpus", Key="shared/c.bin")["Body"].read() == b"second"
    assert len(made) == 1 and made[0]["endpoint_url"] == endpoint


def _read_through_pyarrow(monkeypatch, endpoint: str, load, *args, **kwargs):
    """``load(*args, **kwargs)`` as a worker does it: the file layer's S3 (pyarrow's) configured from the
    environment, for this test's endpoint."""
    from retrieval import files

    for name, value in (("AWS_ENDPOINT_URL", endpoint), ("AWS_ACCESS_KEY_ID", "test"),
                        ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    files._filesystem_of.cache_clear()
    try:
        return load(*args, **kwargs)
    finally:
        files._filesystem_of.cache_clear()


def test_the_ngram_model_on_s3_is_the_one_on_disk_and_loads_mapped_from_a_copy(s3_server, tmp_path, monkeypatch):
    """Rewrite's fluency model on an object store: the parts, the arrays appended from them through streams
    open side by side (then renamed), the words; the parts removed, as on local disk. A worker copies it once
    into its cache (read through pyarrow's S3, configured from the environment) and maps it."""
    import numpy as np
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines import storage
    from pipelines.annotators.ngram_lm import MODEL_FILE, NgramLM
    from tests.annotate.test_ngram_lm import ASKED, CAPTIONS, _write

    endpoint, _ = s3_server
    storage.configure(PipelineOptions([f"--s3_endpoint_url={endpoint}", "--s3_access_key_id=test",
                                       "--s3_secret_access_key=test", "--s3_region_name=us-east-1"]))
    texts = CAPTIONS * 3 + ["a zebra on a red couch"]
    _write("s3://corpus/ngram", texts, bits=2)
    _write(str(tmp_path), texts, bits=2)
    names = sorted(name for name in os.listdir(tmp_path) if os.path.isfile(tmp_path / name))
    assert sorted(path.rsplit("/", 1)[1] for path in storage.glob("s3://corpus/ngram/*")) == names
    for name in names:
        if name != MODEL_FILE:  # its build id differs
            assert storage.read_bytes(f"s3://corpus/ngram/{name}") == (tmp_path / name).read_bytes(), name
    assert not storage.glob("s3://corpus/ngram/parts/*")
    remote = _read_through_pyarrow(monkeypatch, endpoint, NgramLM.load, "s3://corpus/ngram",
                                   cache=str(tmp_path / "cache"))
    assert isinstance(remote.trigram_keys.base, np.memmap)
    assert remote.score_many(ASKED) == NgramLM.load(str(tmp_path)).score_many(ASKED)


def test_the_rerank_codes_on_s3_are_the_ones_on_disk_and_load_mapped_from_a_copy(s3_server, tmp_path, monkeypatch):
    """A related-texts collection built on an object store: its codec, codes (the shards' parts appended
    through a stream, then renamed) and starts have the local build's bytes, the parts are removed, and a
    worker copies them once into its cache and maps them."""
    import numpy as np
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines import storage
    from pipelines.tfidf_collections import build
    from retrieval.codes import Codes
    from tests.retrieval.test_postings import text_collection, text_tables

    endpoint, _ = s3_server
    s3_args = [f"--s3_endpoint_url={endpoint}", "--s3_access_key_id=test", "--s3_secret_access_key=test",
               "--s3_region_name=us-east-1"]
    text_tables(tmp_path / "tables")
    build(text_collection(str(tmp_path / "tfidf"), tmp_path / "tables", codec="SQ8"), RunnerConfig())
    storage.configure(PipelineOptions(s3_args))
    build(text_collection("s3://corpus/tfidf", tmp_path / "tables", codec="SQ8"), RunnerConfig(beam_args=s3_args))
    local = tmp_path / "tfidf" / "codes"
    assert sorted(p.rsplit("/", 1)[1] for p in storage.glob("s3://corpus/tfidf/codes/*")) == sorted(os.listdir(local))
    for name in os.listdir(local):
        assert storage.read_bytes(f"s3://corpus/tfidf/codes/{name}") == (local / name).read_bytes(), name
    assert not storage.glob("s3://corpus/tfidf/src/*.codes")
    codes = _read_through_pyarrow(monkeypatch, endpoint, Codes.load, "s3://corpus/tfidf/codes",
                                  cache=str(tmp_path / "cache"))
    assert isinstance(codes.rows.base.base, np.memmap) and codes.starts.tolist() == [0, 100, 200, 300]
    ties = np.array([5, (1 << 32) | 7, (2 << 32) | 99])
    assert np.array_equal(codes.vectors(ties), Codes.load(str(tmp_path / "tfidf" / "codes")).vectors(ties))
