"""The download benchmark's size accounting on real tars: ours (``raw_shard.add_member``) and webdataset's
``TarWriter`` (what img2dataset writes with), whose float mtimes cost a PAX header per member."""

import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from benchmarks.output_sizes import compare_images, output_bytes, stored_images, tar_bytes
from pipelines.raw_shard import add_member
from tests.images import jpeg

SAMPLES = {f"{i:04d}": (jpeg(60 + 7 * i, 40, color=(40 * i, 90, 160)), f"caption {i}",
                        json.dumps({"url": f"http://x/{i}.jpg", "meta": {"url": f"http://x/{i}.jpg"}}))
           for i in range(5)}


def _ours(path, samples=SAMPLES):
    with tarfile.open(path, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for key, (image, text, meta) in samples.items():
            for extension, data in (("jpg", image), ("txt", text.encode()), ("json", meta.encode())):
                add_member(tar, f"{key}.{extension}", data)


def _webdataset(path, samples=SAMPLES):
    with open(path, "wb") as f, wds.TarWriter(f) as writer:
        for key, (image, text, meta) in samples.items():
            writer.write({"__key__": key, "jpg": image, "txt": text, "json": meta})


def test_kinds_add_up_to_the_file_and_count_each_member_once(tmp_path):
    lengths = [[len(image), len(text.encode()), len(meta.encode())] for image, text, meta in SAMPLES.values()]
    expected = dict(zip(("image", "txt", "json"), map(sum, zip(*lengths, strict=True)), strict=True))
    block_fill = sum(-n % 512 for sample in lengths for n in sample)
    _ours(tmp_path / "ours.tar")
    _webdataset(tmp_path / "wds.tar")
    ours, theirs = tar_bytes(str(tmp_path / "ours.tar")), tar_bytes(str(tmp_path / "wds.tar"))
    members = 3 * len(SAMPLES)
    for sizes, path in ((ours, "ours.tar"), (theirs, "wds.tar")):
        assert {k: sizes[k] for k in expected} == expected
        assert sum(sizes.values()) == (tmp_path / path).stat().st_size
        assert 1024 <= sizes["padding"] - block_fill < 1024 + 10240  # two end blocks, then the record's fill
    assert ours["headers"] == 512 * members  # fixed integer mtime: one header block a member
    assert theirs["headers"] == 3 * 512 * members  # a PAX header (block + record) before every member's own


def test_output_bytes_counts_tables_beside_the_tars(tmp_path):
    (tmp_path / "raw").mkdir()
    _ours(tmp_path / "raw" / "00000.tar")
    pq.write_table(pa.table({"key": list(SAMPLES)}), tmp_path / "raw" / "00000.parquet")
    (tmp_path / "00000_stats.json").write_text("{}")
    sizes = output_bytes(str(tmp_path))
    assert sizes["tables"] == (tmp_path / "raw" / "00000.parquet").stat().st_size + 2
    assert sizes - tar_bytes(str(tmp_path / "raw" / "00000.tar")) == {"tables": sizes["tables"]}


def test_images_are_matched_by_url_and_compared_byte_for_byte(tmp_path):
    changed = dict(SAMPLES)
    image, text, meta = SAMPLES["0003"]
    changed["0003"] = (image + b"\0" * 100, text, meta)  # one image 100 bytes larger
    del changed["0004"]  # and one missing
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _ours(tmp_path / "a" / "00000.tar", changed)
    _webdataset(tmp_path / "b" / "00000.tar")
    ours = stored_images(str(tmp_path / "a"), lambda meta: meta["meta"]["url"])
    theirs = stored_images(str(tmp_path / "b"), lambda meta: meta["url"])
    assert theirs == {f"http://x/{i}.jpg": SAMPLES[f"{i:04d}"][0] for i in range(5)}
    ratio = (len(image) + 100) / len(image)
    assert compare_images(ours, theirs) == {"common": 4, "identical": 3, "differing_ratio": ratio}
