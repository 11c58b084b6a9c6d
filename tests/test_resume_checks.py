"""The pure parts of the launcher's resume checks: which shards have all their files, from listed file names; the
bounded pool that reads the remaining footers (issue 15: a request per file is hours on an object store)."""

import threading
import time

import pytest

from pipelines import storage
from pipelines.sidecar_tables import SidecarPaths, is_done
from pipelines.stages.ingest import committed_shards


def test_a_shard_is_committed_only_with_its_index_tar_and_rejects_listed_and_below_the_count():
    raw = frozenset({"00000.parquet", "00000.tar",
                     "00001.parquet",  # its tar is missing
                     "00002.parquet", "00002.tar",  # its rejects table is missing
                     "00003.parquet.tmp-1f2e", "00003.tar",  # a killed run's index, never renamed
                     "00004.parquet", "00004.tar", "00004.tar.tmp-9a8b",  # an extra temporary beside a whole shard
                     "00005.parquet", "00005.tar"})  # beyond the count
    rejects = frozenset(f"{s:05d}.parquet" for s in (0, 1, 3, 4, 5))
    assert committed_shards(raw, rejects, 5) == [0, 4]
    assert committed_shards(raw, rejects, 6) == [0, 4, 5]
    assert committed_shards(frozenset(), frozenset(), 3) == []


def test_listed_answers_from_the_names_of_the_listed_folder_only():
    names = {"s3://b/raw/u": frozenset({"00000.tar"}), "s3://b/rejects/ingest/u": frozenset()}
    assert storage.listed(names, "s3://b/raw/u/00000.tar")
    assert not storage.listed(names, "s3://b/raw/u/00001.tar")
    assert not storage.listed(names, "s3://b/rejects/ingest/u/00000.tar")
    with pytest.raises(KeyError):  # a folder nobody listed: a mistake, not a missing file
        storage.listed(names, "s3://b/urls/u/00000.parquet")


def test_names_in_lists_each_folder_once_with_only_its_own_files(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / "x.tar").write_bytes(b"")
    (tmp_path / "a" / "sub" / "y.tar").write_bytes(b"")
    folder = storage.join(str(tmp_path), "a")
    names = storage.names_in([folder, folder, storage.join(str(tmp_path), "missing")])
    assert names[folder] >= {"x.tar"} and "y.tar" not in names[folder]
    assert names[storage.join(str(tmp_path), "missing")] == frozenset()


def test_a_sidecar_missing_a_listed_file_is_not_done_without_reading_its_footer(tmp_path):
    paths = SidecarPaths.of(str(tmp_path), "ann/x", "x", "u", 0)  # nothing on disk: a footer read would raise
    names = {paths.table.rsplit("/", 1)[0]: frozenset({"00000.parquet"}), paths.rejects.rsplit("/", 1)[0]: frozenset()}
    assert not is_done(paths, "digest", lambda path: storage.listed(names, path))


def test_read_all_keeps_the_order_bounds_the_threads_and_names_the_failing_item():
    running, most, lock = 0, 0, threading.Lock()

    def read(item):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.002 * (item % 3))  # finish out of order
        with lock:
            running -= 1
        return item * 2

    assert storage.read_all(read, list(range(100))) == [2 * i for i in range(100)]
    assert 1 < most <= storage.READ_THREADS

    def footer(path):
        if path.endswith("1.parquet"):
            raise OSError("Parquet magic bytes not found in footer")
        return path

    with pytest.raises(OSError, match="magic bytes") as raised:
        storage.read_all(footer, ["u/00000.parquet", "u/00001.parquet", "u/00002.parquet"])
    assert raised.value.__notes__ == ["(reading u/00001.parquet)"]
