"""The scale benchmark end to end at tiny sizes (ingest and clean: no model is built), and its pure parts."""

from __future__ import annotations

import json
import math
import os

import pytest

from benchmarks import scale
from benchmarks.scale_corpus import source_counts, write_corpus


def test_benchmark_measures_every_stage_at_every_size(tmp_path):
    # Two sizes, the fewest a growth exponent and the worker memory ratio need: every stage is a process of
    # its own (~10 s each here, mostly start-up), so each size more is two stage runs more.
    out = tmp_path / "scale.json"
    assert scale.main(["--sizes", "20", "40", "--stages", "ingest", "clean", "--work", str(tmp_path / "w"),
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["sizes"] == [20, 40]
    assert set(result["growth"]) == {"ingest", "clean"}
    for stage, growth in result["growth"].items():
        for name in ("time_exponent", "cpu_exponent", "launcher_memory_exponent", "output_bytes_exponent"):
            assert math.isfinite(growth[name]), (stage, name)
    for run in result["runs"]:
        assert [m["stage"] for m in run["stages"]] == ["ingest", "clean"]
        for m in run["stages"]:
            assert m["output_bytes"] > 0 and m["wall_s"] > 0 and m["launcher_peak_mb"] > 0
        ingest = run["stages"][0]
        assert ingest["descendants_seen"] >= 2 and ingest["worker_peak_mb"] > 0  # ingest takes --workers 2
        assert math.isclose(ingest["samples_per_s"], run["samples"] / ingest["wall_s"], rel_tol=0.01, abs_tol=0.001)
    assert math.isfinite(result["growth"]["ingest"]["worker_memory_ratio"])
    raw = [run["stages"][0]["output_bytes"] for run in result["runs"]]
    assert raw[0] < raw[1]  # more samples, more shard bytes
    table = scale.format_table(result)
    assert "| ingest | 40 |" in table and "| clean |" in table.split("time exp.")[1]

    # --reuse measures a stage again on the corpora left behind: the datasets are not written again, the stage
    # redoes its whole output (--overwrite: every shard file rewritten), and the same input gives the same bytes
    datasets, shards = tmp_path / "w" / "size-40" / "datasets", tmp_path / "w" / "size-40" / "corpus" / "raw"
    written = {p: p.stat().st_mtime_ns for p in datasets.rglob("*") if p.is_file()}
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in shards.rglob("*") if p.is_file()}
    again = tmp_path / "again.json"
    assert scale.main(["--sizes", "20", "40", "--stages", "ingest", "--work", str(tmp_path / "w"), "--reuse",
                       "--out", str(again)]) == 0
    redone = json.loads(again.read_text())
    assert redone["reused"] and {p: p.stat().st_mtime_ns for p in written} == written
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in shards.rglob("*") if p.is_file()}
    assert after.keys() == before.keys()
    assert all(after[p][0] == before[p][0] and after[p][1] != before[p][1] for p in before)
    assert redone["runs"][1]["stages"][0]["output_bytes"] >= sum(len(data) for data, _ in after.values())
    # the sizes run smallest first: the missing 30 fails before 40, kept, is measured again
    with pytest.raises(FileNotFoundError, match="--reuse: no corpus of 30 samples"):
        scale.main(["--sizes", "40", "30", "--stages", "ingest", "--work", str(tmp_path / "w"), "--reuse"])


def test_portable_runs_measure_the_pools_workers_and_the_job_service(tmp_path):
    """The SDK workers of a portable run are the worker pool's children, not the stage's: they are still seen."""
    out = tmp_path / "portable.json"
    assert scale.main(["--sizes", "20", "40", "--stages", "ingest", "--runner", "portable",
                       "--work", str(tmp_path / "w"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["runner"] == "portable"
    for run in result["runs"]:
        ingest = run["stages"][0]
        assert ingest["descendants_seen"] >= 1 and ingest["worker_peak_mb"] > 0
        assert ingest["service_peak_mb"] > 0 and ingest["cpu_s"] > 0
    shards = sorted(p.name for p in (tmp_path / "w" / "size-40" / "corpus" / "raw").rglob("*.tar"))
    assert len(shards) == len(source_counts(40))  # every source ingested, one shard each
    assert "| job service MB |" in scale.format_table(result)


def test_portable_flags_go_only_to_commands_that_take_a_runner():
    ingest = scale.command_flags(["ingest"], 2, overwrite=True, runner="portable")
    assert ingest[:2] == ["--runner", "portable"] and "--workers" not in ingest and "--overwrite" in ingest
    assert "--runner" not in scale.command_flags(["report"], 2, runner="portable")  # report runs no pipeline
    assert scale.command_flags(["ingest"], 2)[:2] == ["--workers", "2"]


def test_corpus_ingests_to_exactly_the_planned_samples(tmp_path):
    """Nothing is rejected or deduplicated away: every stage sees ``samples`` samples."""
    from pipelines.runner import RunnerConfig
    from pipelines.stages.clean import run_clean
    from pipelines.stages.ingest import run_ingest
    from schemas.config import load_config

    config = load_config(write_corpus(str(tmp_path), 60, seed=1))
    results = run_ingest(config, list(config.sources), RunnerConfig(), overwrite=False, show_progress=False)
    assert {r.name: r.counts.written for r in results} == source_counts(60)
    assert all(not r.counts.rejected_total for r in results)
    _, duplicates, contaminations = run_clean(config)
    assert duplicates == [] and contaminations == []


def test_growth_exponent_of_known_power_laws():
    sizes = [100, 1000, 10000]
    assert scale.exponent(sizes, [3 * n for n in sizes]) == pytest.approx(1.0)
    assert scale.exponent(sizes, [n ** 1.5 for n in sizes]) == pytest.approx(1.5)
    assert scale.exponent(sizes, [7.0, 7.0, 7.0]) == pytest.approx(0.0)
    assert scale.exponent(sizes, [1.0, None, 2.0]) is None


def test_a_flat_stage_is_a_fit_and_a_missing_exponent_is_not():
    """A stage whose time does not change over the sizes has exponent 0.0 (or -0.0 after rounding): the run
    succeeded; a stage with no exponent (a value missing) fails it."""
    def result_with(*exponents):
        return {"growth": {f"s{i}": {"time_exponent": e} for i, e in enumerate(exponents)}}

    assert scale.exit_code(result_with(0.0, -0.0, 0.4)) == 0
    assert scale.exit_code(result_with(0.4, None)) == 1
    assert scale.exit_code(result_with(math.nan)) == 1


def test_written_bytes_counts_new_and_changed_files_only(tmp_path):
    (tmp_path / "kept").write_bytes(b"x" * 10)
    (tmp_path / "changed").write_bytes(b"y" * 5)
    before = scale.file_sizes(str(tmp_path))
    (tmp_path / "changed").write_bytes(b"y" * 7)
    os.makedirs(tmp_path / "sub")
    (tmp_path / "sub" / "new").write_bytes(b"z" * 3)
    assert scale.written_bytes(before, scale.file_sizes(str(tmp_path))) == 10


def test_bad_arguments_name_the_option(tmp_path):
    with pytest.raises(ValueError, match="--stages: unknown"):
        scale.run_benchmark(str(tmp_path), [10, 20], ["ingest", "index_all"], 1, 0)
    with pytest.raises(ValueError, match="--sizes"):
        scale.run_benchmark(str(tmp_path), [10, 10], ["ingest"], 1, 0)
    with pytest.raises(ValueError, match="at least 3"):
        source_counts(2)
