"""Stage progress with tqdm: shards done of the total (with an ETA) and the units the committed tables'
footers account for, counted from the files as they appear, not from inside the pipeline."""

import os
import time

import pyarrow as pa

from pipelines.progress import ShardProgress, committed_units
from pipelines.raw_shard import write_table
from schemas.tables import RECORDS_IN_KEY, REJECTS


def _table(path, records_in: int | None) -> None:
    """Committed like a stage commits: written under a temporary name, then renamed."""
    tmp = f"{path}.tmp"
    write_table(tmp, [], REJECTS, {} if records_in is None else {RECORDS_IN_KEY: str(records_in).encode()})
    os.replace(tmp, path)


def test_units_come_from_the_footer_else_the_rows(tmp_path):
    _table(tmp_path / "a.parquet", 12)
    assert committed_units(str(tmp_path / "a.parquet")) == 12
    path = tmp_path / "b.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1, 2, 3]}), path)
    assert committed_units(str(path)) == 3


def test_the_bar_counts_new_shards_and_their_units_but_not_reused_ones(tmp_path, capsys):
    _table(tmp_path / "00000.parquet", 100)  # a reused shard: named, not counted
    with ShardProgress(str(tmp_path / "[0-9]*.parquet"), "detect coco", 2, interval=0.05, unit="images", reused=1):
        for shard, units in ((1, 7), (2, 5)):
            time.sleep(0.2)
            _table(tmp_path / f"0000{shard}.parquet", units)
        time.sleep(0.2)
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("[detect coco] shards (1 reused): 100%") and "2/2" in last
    assert "12 images, " in last and "images/s" in last


def test_a_file_not_readable_yet_is_counted_once_it_is(tmp_path, capsys):
    half = tmp_path / "00000.parquet"
    with ShardProgress(str(tmp_path / "[0-9]*.parquet"), "x", 1, interval=0.05, unit="units"):
        half.write_bytes(b"PAR1")  # what a non-atomic writer leaves mid-write
        time.sleep(0.2)
        half.unlink()
        _table(half, 3)
        time.sleep(0.2)
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "1/1" in last and "3 units" in last


def test_disabled_progress_prints_nothing(tmp_path, capsys):
    with ShardProgress(str(tmp_path / "*.parquet"), "x", 1, enabled=False, interval=0.01):
        _table(tmp_path / "00000.parquet", 1)
    assert capsys.readouterr().err == ""
