"""Progress of a running stage, seen from outside the pipeline: committed shard files are counted.

Watching the output works the same on every runner (in-process, worker pools, a cluster writing to
shared storage), where in-pipeline counters would not reach the launching process.
"""

from __future__ import annotations

import sys
import threading
import time

from pipelines import io as fsio


class ShardProgress:
    """Prints ``[label] shards N/M`` at the start and whenever N changes: N counts the files matching
    ``pattern`` that this run wrote (new, or rewritten since it started: ``--overwrite`` redoes files that
    exist), M the shards it has to write; ``reused`` shards, left as they are, are named, not counted."""

    def __init__(self, pattern: str, label: str, total: int, enabled: bool = True, interval: float = 1.0,
                 reused: int = 0):
        self.pattern = pattern
        self.source, self.total, self.enabled, self.interval, self.reused = label, total, enabled, interval, reused
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._before: dict[str, tuple[int, float]] = {}

    def __enter__(self) -> ShardProgress:
        if self.enabled:
            self._before = {path: (size, mtime) for path, size, mtime in fsio.listing(self.pattern)}
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()

    def done(self) -> int:
        """Files written since the start: absent then, or with another size or mtime now."""
        return sum(self._before.get(path) != (size, mtime) for path, size, mtime in fsio.listing(self.pattern))

    def _watch(self) -> None:
        shown, started = -1, time.monotonic()
        reused = f" ({self.reused} reused)" if self.reused else ""
        stopping = False
        while True:
            done = self.done()
            if done != shown:
                elapsed = time.monotonic() - started
                print(f"[{self.source}] shards {done}/{self.total}{reused} ({elapsed:.0f}s)", file=sys.stderr,
                      flush=True)
                shown = done
            if stopping:
                return
            stopping = self._stop.wait(self.interval)
