"""The per-shard shell (``pipelines/stages/per_shard.py``) with a tiny work of its own on real raw shards,
through the in-process DirectRunner: two tables per job (like retrieve's linkers and pack's tasks), a job
killed half-way, a resume that redoes exactly the unfinished jobs, counts read back from the files."""

import json
import os
import shutil

import pyarrow as pa
import pytest

from pipelines import storage
from pipelines.raw_shard import read_footer_and_rows
from pipelines.runner import RunnerConfig
from pipelines.sidecar_tables import (
    SidecarPaths,
    is_done,
    params_hash,
    raw_params_hash,
    raw_shards,
    read_shard_input,
    read_sidecar_counts,
    remove_temporaries,
    write_sidecar,
)
from pipelines.stages.per_shard import ShardWork, Tally, run_shards
from schemas.records import Reason, Reject
from tests.conftest import tree_digest

SOURCES = ["coco", "vg"]
TABLES = ("keys", "even")
SCHEMA = pa.schema([pa.field("key", pa.string()), pa.field("length", pa.int32())])


class KeyLengths(ShardWork):
    """Per raw shard: ``ann/keys`` (every sample's key length) and ``ann/even`` (only even lengths; odd ones
    are rejects), committed in that order. ``kill`` names a job that dies after its first table and a
    half-written second one; every run and setup is logged to a file, so the test sees what the workers did."""

    stage = "keylengths"

    def __init__(self, root: str, log: str, kill: tuple[str, int] | None = None):
        self.root, self.log, self.kill = root, log, kill

    def params(self) -> dict:
        return {"tables": list(TABLES)}

    def paths(self, table: str, source: str, shard: int) -> SidecarPaths:
        return SidecarPaths.of(self.root, f"ann/{table}", f"{self.stage}/{table}", source, shard)

    def digest(self, source: str, shard: int) -> str:
        return params_hash(self.params(), raw_params_hash(self.root, source, shard))

    def setup(self) -> None:
        self._note("setup")

    def is_done(self, source: str, shard: int, digest: str) -> bool:
        return all(is_done(self.paths(t, source, shard), digest) for t in TABLES)

    def run(self, source: str, shard: int, digest: str) -> None:
        self._note(f"run {source} {shard}")
        rows = [{"key": r["key"], "length": len(r["key"])} for r in read_shard_input(self.root, source, shard).rows]
        write_sidecar(self.paths("keys", source, shard), f"{self.stage}/keys", rows, [], SCHEMA, digest, len(rows))
        if (source, shard) == self.kill:
            with open(self.paths("even", source, shard).table + ".tmp-killed", "wb") as f:
                f.write(b"PAR1 half")
            raise RuntimeError(f"killed in {source}/{shard}")
        odd = [Reject(source, f"raw/{source}", Reason.NO_RESULTS, "odd length", r["key"]) for r in rows
               if r["length"] % 2]
        write_sidecar(self.paths("even", source, shard), f"{self.stage}/even",
                      [r for r in rows if r["length"] % 2 == 0], odd, SCHEMA, digest, len(rows))

    def committed(self, source: str) -> str:
        return f"{self.root}/ann/even/{source}/[0-9]*.parquet"

    def remove_temporaries(self, source: str) -> None:
        for table in TABLES:
            remove_temporaries(self.root, f"ann/{table}", f"{self.stage}/{table}", source)

    def read_back(self, source: str, shard: int, size=storage.size) -> dict[str, Tally]:
        return {f"{t}/{source}": Tally(read_sidecar_counts(p, None, size), {"rows": read_footer_and_rows(p.table)[1]})
                for t in TABLES for p in [self.paths(t, source, shard)]}

    def _note(self, line: str) -> None:
        with open(self.log, "a") as f:
            f.write(line + "\n")


@pytest.fixture
def roots(ingested, tmp_path):
    """Two copies of the raw shards of SOURCES: one for a killed-and-resumed run, one uninterrupted."""
    config, _, _ = ingested
    out = []
    for name in ("resumed", "straight"):
        for source in SOURCES:
            shutil.copytree(f"{config.output}/raw/{source}", tmp_path / name / "raw" / source)
        out.append(str(tmp_path / name))
    return out


def _run(root: str, log: str, kill=None, overwrite=False):
    return run_shards(KeyLengths(root, log, kill), [SOURCES], RunnerConfig(), overwrite, show_progress=False)


def _lines(log: str) -> list[str]:
    if not os.path.exists(log):
        return []
    with open(log) as f:
        lines = f.read().splitlines()
    os.remove(log)
    return lines


def test_a_killed_job_resumes_to_the_bytes_of_an_uninterrupted_run(roots, tmp_path):
    resumed, straight = roots
    log = str(tmp_path / "log")
    jobs = {(s, shard) for s in SOURCES for shard in raw_shards(resumed, s)}
    with pytest.raises(Exception, match="killed in vg/1"):
        _run(resumed, log, kill=("vg", 1))
    assert "run vg 1" in _lines(log)
    work = KeyLengths(resumed, log)
    finished = {job for job in jobs if work.is_done(*job, work.digest(*job))}
    assert ("vg", 1) not in finished and os.path.exists(f"{resumed}/ann/even/vg/00001.parquet.tmp-killed")

    results = _run(resumed, log)
    ran = _lines(log)
    assert sorted(line for line in ran if line.startswith("run")) == sorted(
        f"run {s} {shard}" for s, shard in jobs - finished)  # the unfinished jobs, each once
    assert not os.path.exists(f"{resumed}/ann/even/vg/00001.parquet.tmp-killed")
    _run(straight, log)
    _lines(log)
    assert tree_digest(f"{resumed}/ann") == tree_digest(f"{straight}/ann")
    assert tree_digest(f"{resumed}/rejects") == tree_digest(f"{straight}/rejects")
    assert [r.name for r in results] == [f"{t}/{s}" for t in TABLES for s in SOURCES]  # the work's order
    assert all(r.shards == len(raw_shards(resumed, r.name.split("/")[1])) for r in results)
    assert all(r.skipped_shards == sum(1 for s, _ in finished if s == r.name.split("/")[1]) for r in results)


def test_counts_are_read_back_from_the_files_and_recorded_in_corpus_json(roots, tmp_path):
    root, _ = roots
    log = str(tmp_path / "log")
    results = {r.name: r for r in _run(root, log)}
    for source in SOURCES:
        keys = [row["key"] for shard in raw_shards(root, source) for row in read_shard_input(root, source, shard).rows]
        even = sum(1 for key in keys if len(key) % 2 == 0)
        everything, evens = results[f"keys/{source}"], results[f"even/{source}"]
        assert (everything.counts.records_in, everything.counts.written, everything.extra) == (
            len(keys), len(keys), {"rows": len(keys)})
        assert (evens.counts.records_in, evens.counts.written, evens.extra["rows"]) == (len(keys), even, even)
        assert dict(evens.counts.rejected) == ({"no_results": len(keys) - even} if len(keys) > even else {})
        assert evens.removed == {source: 0}  # ingested, not cleaned: nothing left out
    with open(f"{root}/corpus.json") as f:
        entries = json.load(f)["stages"]["keylengths"]
    assert set(entries) == set(results)
    for name, result in results.items():
        assert entries[name]["shards"] == result.shards and entries[name]["params"] == {"tables": list(TABLES)}
        assert entries[name]["counts"] == {
            "read": result.counts.records_in, "written": result.counts.written,
            "rejected": result.counts.rejected_total, "rejected_by_reason": dict(result.counts.rejected),
            "bytes": result.counts.bytes, "removed_by_clean": 0, "rows": result.extra["rows"]}
        assert result.counts.bytes == sum(os.path.getsize(p.table) for shard in raw_shards(root, name.split("/")[1])
                                          for p in [KeyLengths(root, log).paths(*name.split("/"), shard)])


def test_finished_jobs_start_no_worker_and_overwrite_redoes_them_byte_identically(roots, tmp_path):
    root, _ = roots
    log = str(tmp_path / "log")
    first = _run(root, log)
    _lines(log)
    before = tree_digest(f"{root}/ann")
    again = _run(root, log)
    assert _lines(log) == []  # no setup, no run: every job was done
    assert [(r.name, r.counts, r.shards, r.skipped_shards) for r in again] == [
        (r.name, r.counts, r.shards, r.shards) for r in first]  # every shard reused, the same counts
    assert all(r.fresh.records_in == 0 for r in again)
    redone = _run(root, log, overwrite=True)
    assert sorted(line for line in _lines(log) if line.startswith("run")) == sorted(
        f"run {s} {shard}" for s in SOURCES for shard in raw_shards(root, s))
    assert all(r.skipped_shards == 0 and r.fresh == r.counts for r in redone)
    assert tree_digest(f"{root}/ann") == before
