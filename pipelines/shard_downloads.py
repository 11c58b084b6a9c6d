"""Several shards of one worker over one download pool, each written as soon as its last URL is in.

Written one after another, each shard with its own pool, a worker waits for every shard's slowest URL
(a timeout, ``timeout_s`` x attempts) while its other threads idle, so throughput fell with the shard
count. Here the shards a worker is given share one ``FetchPool``: a new shard's URLs join the queue
while earlier shards still wait for stragglers, a slow URL holds one thread, and a shard is committed
(``raw_shard.commit_shard``, the same bytes as ``write_shard``) the moment its last download is decoded.

Memory: a shard's URLs are queued when it is added, and ``add`` returns only once fewer than two
pools' worth of URLs are outstanding, so a worker holds the shards whose URLs started within about one
``timeout_s x (retries + 1)`` of the oldest unfinished one, decoded and resized, never raw bodies.
"""

from __future__ import annotations

from pipelines.download import FetchPool
from pipelines.raw_shard import ShardCounts, ShardJob, ShardPaths, commit_shard
from schemas.config import DownloadConfig, ImageConfig


class ShardWriter:
    """``add`` shards in any order, then ``finish``; each returns the shards committed meanwhile."""

    def __init__(self, image: ImageConfig, download: DownloadConfig) -> None:
        self.image, self.download = image, download
        self._pool: FetchPool | None = None  # started with the first shard that downloads
        self._waiting: dict[int, ShardJob] = {}  # id -> shard whose downloads are not all in

    def add(self, job: ShardJob) -> list[tuple[ShardPaths, ShardCounts]]:
        try:
            if job.ready:  # nothing to download (local images, or every URL reused)
                return [(job.paths, commit_shard(job, self.image))]
            if self._pool is None:
                self._pool = FetchPool(self.download)
            self._waiting[id(job)] = job
            self._pool.submit(id(job), job.urls())
            return self._drain(keep=2 * self._pool.threads)
        except BaseException:  # no download outlives a failed shard
            self.close()
            raise

    def finish(self) -> list[tuple[ShardPaths, ShardCounts]]:
        """Every shard added so far, written; the pool closed."""
        try:
            return self._drain(keep=0)
        finally:
            self.close()

    def close(self) -> None:
        """Stops downloading (also after a failure); shards not committed leave no file."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self._waiting.clear()

    def _drain(self, keep: int) -> list[tuple[ShardPaths, ShardCounts]]:
        """Decode finished downloads until at most ``keep`` are outstanding, committing complete shards."""
        committed = []
        while self._pool is not None and self._pool.outstanding > keep:
            tag, position, fetched = self._pool.next()
            job = self._waiting[tag]
            job.take(position, fetched, self.image)
            if job.ready:
                del self._waiting[tag]
                committed.append((job.paths, commit_shard(job, self.image)))
        return committed
