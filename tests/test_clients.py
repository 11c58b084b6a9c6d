"""Outside clients on the demo corpus (every stage run): DuckDB over raw/ and the sidecars, HF `datasets`
through the dataset card, open_clip's sizes.json with plain webdataset; and the removals of clean hold in
every table, index, link, report page and query answer."""

import glob
import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from pipelines.sidecar_tables import removed_keys

_FOLDERS = ("ann/detect", "ann/parse", "ann/rewrite", "emb/text", "emb/tags")


def _removed(config) -> dict[str, set[str]]:
    return {source: removed_keys(config.output, source) for source in config.sources}


def _sql(query: str):
    import duckdb

    return duckdb.sql(query).fetchall()


def test_the_demo_removes_samples_and_every_stage_after_clean_says_how_many(demo):
    config, out = demo
    removed = _removed(config)
    assert sum(map(len, removed.values())) >= 10 and len([s for s in removed.values() if s]) >= 4
    line = next(line for line in out.splitlines() if line.startswith("left out, removed by clean: coco "))
    assert f"coco {len(removed['coco'])}," in line
    assert out.count("left out, removed by clean:") >= 6  # detect, parse, rewrite, embed, index, retrieve
    manifest = json.loads(open(f"{config.output}/corpus.json").read())
    for stage in ("detect", "parse", "embed-text"):
        assert manifest["stages"][stage]["coco"]["counts"]["removed_by_clean"] == len(removed["coco"])


def test_no_removed_key_in_any_table_index_link_or_report(demo):
    config, _ = demo
    removed = set().union(*_removed(config).values())
    root = config.output
    for folder in _FOLDERS:
        paths = glob.glob(f"{root}/{folder}/*/[0-9]*.parquet")
        assert paths, folder
        keys = {k for p in paths for k in pq.read_table(p, columns=["key"]).column("key").to_pylist()}
        assert keys and not keys & removed, folder
    links = glob.glob(f"{root}/links/*/*/[0-9]*.parquet")
    assert any("-regions/" in p for p in links) and any("related-images" in p for p in links)
    for path in links:
        table = pq.read_table(path, columns=["query_key", "key"])
        for column in ("query_key", "key"):
            assert not set(table.column(column).to_pylist()) & removed, (path, column)
    ids = glob.glob(f"{root}/index/*/*/ids.parquet")
    assert ids and all(not set(pq.read_table(p, columns=["key"]).column("key").to_pylist()) & removed for p in ids)
    page = open(f"{root}/report/index.html", encoding="utf-8").read()
    assert [key for key in removed if key in page] == []


def test_queries_never_return_a_removed_sample(demo):
    from retrieval.query import NotFound, QueryEngine

    config, _ = demo
    removed = _removed(config)
    engine = QueryEngine(config)
    key = sorted(removed["coco"])[0]
    with pytest.raises(NotFound):
        engine.sample(key)
    with pytest.raises(NotFound):
        engine.related(key, "images")
    kept = engine.search(key=sorted(k for k in _coco_keys(config) if k not in removed["coco"])[0], k=20)
    hits = kept + engine.search(text="a red ball next to a tree", k=50) + engine.search(tags="tent,sun", k=50)
    assert hits and not {h.key for h in hits} & set().union(*removed.values())


def _coco_keys(config) -> list[str]:
    return [key for (key,) in _sql(f"SELECT key FROM read_parquet('{config.output}/raw/coco/*.parquet')")]


def test_duckdb_reads_raw_with_one_glob_and_applies_the_removals(demo):
    config, _ = demo
    root = config.output
    manifest = json.loads(open(f"{root}/corpus.json").read())["stages"]
    ingested = sum(entry["counts"]["written"] for entry in manifest["ingest"].values())
    kept = sum(entry["counts"]["kept"] for entry in manifest["clean"].values())
    assert _sql(f"SELECT count(*) FROM read_parquet('{root}/raw/*/*.parquet')") == [(ingested,)]
    anti_join = f"""SELECT count(*) FROM read_parquet('{root}/raw/*/*.parquet') r
        ANTI JOIN read_parquet(['{root}/rejects/dedup/*/*.parquet', '{root}/rejects/decontam/*/*.parquet']) x
        USING (key)"""
    assert _sql(anti_join) == [(kept,)] and kept < ingested
    urls = _sql(f"SELECT json->>'$.meta.url' FROM read_parquet('{root}/raw/cc/*.parquet')")
    assert urls and all(url.startswith("http") for (url,) in urls)
    statuses = dict(_sql(f"SELECT status, count(*) FROM read_parquet('{root}/urls/*/*.parquet') GROUP BY status"))
    assert statuses["ok"] > 0 and sum(statuses.values()) > statuses["ok"]  # the demo plants failures
    for folder in _FOLDERS + ("links/weak-cc", "links/weak-cc-regions", "links/related-texts"):
        (rows,) = _sql(f"SELECT count(*) FROM read_parquet('{root}/{folder}/*/*.parquet')")[0]
        assert rows > 0, folder


def test_hf_datasets_loads_every_source_through_the_card(demo, tmp_path):
    """In a subprocess: HF_DATASETS_OFFLINE must be set before `datasets` is imported."""
    config, _ = demo
    script = f"""
import json, sys
import datasets
root = {config.output!r}
out = {{}}
for source in {list(config.sources)!r}:
    ds = datasets.load_dataset(root, source, split="train", cache_dir={str(tmp_path / 'cache')!r})
    out[source] = {{"columns": ds.column_names,
                    "rows": [[row["__key__"], row.get("txt"), row["json"]["key"], row["json"]["source"]]
                             for row in ds.remove_columns([c for c in ds.column_names if c in ("jpg", "png")])]}}
json.dump(out, sys.stdout)
"""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout)
    for source in config.sources:
        index = sorted(_sql(f"SELECT key, text FROM read_parquet('{config.output}/raw/{source}/*.parquet')"))
        rows = loaded[source]["rows"]
        assert sorted((key, text) for key, text, _, _ in rows) == index, source
        assert all(key == json_key and json_source == source for key, _, json_key, json_source in rows)
    assert {"jpg", "txt", "json"} <= set(loaded["coco"]["columns"]) and "txt" not in loaded["coco_unlabeled"]["columns"]


def test_every_source_has_one_json_shape(demo):
    """The same keys in every sample of a source (nested: meta's too), and one type per field besides null
    (VG's coco_id is null or an integer, never a string): what the card declares holds for every shard."""
    from pipelines.card import source_shape

    config, _ = demo

    def keys(value, prefix=""):
        if isinstance(value, dict):
            return {f"{prefix}{k}" for k in value} | {n for k, v in value.items() for n in keys(v, f"{prefix}{k}.")}
        return set()

    for source in config.sources:
        members = [json.loads(text) for (text,) in
                   _sql(f"SELECT json FROM read_parquet('{config.output}/raw/{source}/*.parquet')")]
        assert len({frozenset(keys(member)) for member in members}) == 1, source
        shape, _, _ = source_shape(config.output, source)
        assert {field.name for field in shape} == set(members[0])


def test_sizes_json_counts_what_webdataset_reads(demo):
    config, _ = demo
    for source in config.sources:
        folder = f"{config.output}/raw/{source}"
        sizes = json.loads(open(f"{folder}/sizes.json").read())
        assert sorted(sizes) == sorted(os.path.basename(p) for p in glob.glob(f"{folder}/*.tar"))
        for name, count in sizes.items():
            assert sum(1 for _ in wds.WebDataset(f"{folder}/{name}", shardshuffle=False)) == count


def test_every_stage_prints_its_summary_as_json(demo):
    """Finished stages rerun (nothing to do) and print JSON that a script can read."""
    config, _ = demo
    yaml = os.path.join(os.path.dirname(config.output), "corpus.yaml")
    for command, stage in ((["annotate", "parse"], "parse"), (["index"], "index"), (["embed"], "embed")):
        done = subprocess.run([sys.executable, "-m", "cli.main", *command, "--config", yaml, "--json", "--quiet"],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        summary = json.loads(done.stdout)
        assert summary["stage"] == stage and summary["results"]
        coco = next(r for r in summary["results"] if r["name"].endswith("coco"))
        gone = len(removed_keys(config.output, "coco"))
        if stage == "index":
            assert coco["removed"] == gone
        else:  # a StageResult: per source, and among the counts as in corpus.json
            assert coco["removed"] == {"coco": gone} and coco["counts"]["removed_by_clean"] == gone
        if stage == "parse":
            assert coco["counts"]["read"] == coco["counts"]["written"] + coco["counts"]["rejected"] > 0


def test_ultralytics_prints_no_banner_into_our_output(tmp_path):
    """Its first-run settings message ('Creating new Ultralytics Settings ...') would land in every stage's
    output; a fresh settings folder makes it a first run."""
    script = ("from pipelines.annotators.detect import import_ultralytics\n"
              "import_ultralytics()\nfrom ultralytics.utils import SETTINGS\nprint('settings', len(SETTINGS))")
    env = {**os.environ, "YOLO_CONFIG_DIR": str(tmp_path / "yolo")}
    env.pop("YOLO_VERBOSE", None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "yolo").exists()  # the settings file was made, quietly
    assert "Ultralytics" not in done.stdout + done.stderr and done.stdout.startswith("settings ")
