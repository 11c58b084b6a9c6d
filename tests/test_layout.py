"""schemas/layout.py names the files the stages write: checked against a real ingest with a URL list and
clean, a detect table and an index build, so a stage and its readers cannot drift apart while the stages
move over to it (issue 12)."""

import os

import numpy as np

from schemas import layout


def _tree(root: str) -> set[str]:
    return {os.path.relpath(os.path.join(folder, name), root) for folder, _, names in os.walk(root) for name in names}


def test_ingested_files_are_where_layout_says(demo):
    config, _ = demo
    tree = _tree(config.output)
    assert {layout.MANIFEST, layout.CARD} <= tree
    for name, source in config.sources.items():
        for shard in range(source.shards):
            assert {layout.raw_tar(name, shard), layout.raw_index(name, shard),
                    f"{layout.rejects('ingest', name)}/{layout.table_name(shard)}"} <= tree, name
        assert {layout.sizes(name), layout.features(name)} <= tree
    urls = {path for path in tree if path.startswith(f"{layout.URLS}/")}
    web = {path.split("/")[1] for path in urls}
    assert web and urls == {f"{layout.urls(name)}/{layout.table_name(shard)}"
                            for name in web for shard in range(config.sources[name].shards)}
    for stage in ("dedup", "decontam"):
        assert any(path.startswith(f"{layout.REJECTS}/{stage}/") for path in tree)
    detect = {path for path in tree if path.startswith(f"{layout.ann('detect')}/")}
    assert detect and all(path.rsplit("/", 2)[0] == layout.ann("detect") for path in detect)
    built = {path for path in tree if path.endswith(f"/{layout.BUILD_FILE}")}
    assert built and all(path == layout.index_build_file(*path.split("/")[1:3]) for path in built)
    for path in built:
        folder = path.rsplit("/", 1)[0]
        assert {f"{folder}/{layout.INDEX_FILE}", f"{folder}/{layout.IDS_FILE}"} <= tree
    assert layout.report() in tree
    assert any(path.startswith(f"{layout.packed('pairs')}/") for path in tree)
    assert any(path.startswith(f"{layout.stats(layout.ann('rewrite'))}/") for path in tree)


def test_index_build_writes_the_file_names_of_layout(tmp_path):
    from retrieval.index import ArrayPart, build_index
    from schemas.stages import IndexConfig

    vectors = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    rows = [{"key": f"k-{i}", "source": "s", "text_index": 0, "text": ""} for i in range(300)]
    build_index(str(tmp_path / "i"), [ArrayPart("p", vectors, rows)], IndexConfig(), "m", 8)
    assert {layout.INDEX_FILE, layout.IDS_FILE, layout.BUILD_FILE} <= set(os.listdir(tmp_path / "i"))
