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
    """Prints ``[label] shards N/M`` whenever N, the number of files matching ``pattern``, changes."""

    def __init__(self, pattern: str, label: str, total: int, enabled: bool = True, interval: float = 1.0):
        self.pattern = pattern
        self.source, self.total, self.enabled, self.interval = label, total, enabled, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> ShardProgress:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()

    def _watch(self) -> None:
        shown, started = -1, time.monotonic()
        while True:
            stopping = self._stop.wait(self.interval)
            done = len(fsio.glob(self.pattern))
            if done != shown:
                elapsed = time.monotonic() - started
                print(f"[{self.source}] shards {done}/{self.total} ({elapsed:.0f}s)", file=sys.stderr, flush=True)
                shown = done
            if stopping:
                return
