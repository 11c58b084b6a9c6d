"""Progress of a running stage, seen from outside the pipeline: committed shard files are counted.

Watching the output works the same on every runner (in-process, worker pools, a cluster writing to
shared storage), where in-pipeline counters would not reach the launching process. Shown with tqdm (what
users know): shards done of the total with an ETA, and beside them the samples (or units: images, texts,
queries) the committed files account for and their rate, read from each file's footer.
"""

from __future__ import annotations

import sys
import threading

from pipelines import storage


def committed_units(path: str) -> int:
    """What one committed table accounts for: ``records_in`` of its footer (records read, units considered,
    queries), else its row count."""
    import pyarrow.parquet as pq

    from schemas.tables import RECORDS_IN_KEY

    with storage.open_read(path) as f:
        metadata = pq.read_metadata(f)
    records_in = (metadata.metadata or {}).get(RECORDS_IN_KEY)
    return int(records_in) if records_in is not None else metadata.num_rows


def _units_if_readable(path: str) -> int | None:
    """``committed_units``, or None while the footer cannot be read yet: a writer that does not rename (a
    user's tool, a file system without atomic rename) shows half-written files; a later tick counts them."""
    try:
        return committed_units(path)
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return None


class ShardProgress:
    """A tqdm bar ``[label] shards N/M (R reused) [elapsed<ETA, K units, U units/s]``: N counts the files
    matching ``pattern`` that this run wrote (new, or rewritten since it started: ``--overwrite`` redoes
    files that exist), M the shards it has to write; ``reused`` shards, left as they are, are named, not
    counted, so the rate is this run's own. ``pattern``: one glob, or several (a pipeline over sources)."""

    def __init__(self, pattern: str | list[str], label: str, total: int, enabled: bool = True, interval: float = 1.0,
                 reused: int = 0, unit: str = "samples"):
        self.patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        self.source, self.total, self.enabled, self.interval = label, total, enabled, interval
        self.reused, self.unit = reused, unit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._before: dict[str, tuple[int, float]] = {}

    def __enter__(self) -> ShardProgress:
        if self.enabled:
            self._before = {path: (size, mtime) for path, size, mtime in self._listing()}
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()

    def written(self) -> list[str]:
        """Files written since the start: absent then, or with another size or mtime now."""
        return [path for path, size, mtime in self._listing() if self._before.get(path) != (size, mtime)]

    def _listing(self) -> list[tuple[str, int, float]]:
        return [entry for pattern in self.patterns for entry in storage.listing(pattern)]

    def _watch(self) -> None:
        from tqdm import tqdm

        units, counted = 0, set()
        reused = f" ({self.reused} reused)" if self.reused else ""
        with tqdm(total=self.total, desc=f"[{self.source}] shards{reused}", unit="shard", file=sys.stderr,
                  dynamic_ncols=True, mininterval=0) as bar:
            bar.set_postfix_str(f"0 {self.unit}", refresh=False)
            while True:
                stopping = self._stop.wait(self.interval)
                new = {path: _units_if_readable(path) for path in self.written() if path not in counted}
                new = {path: n for path, n in new.items() if n is not None}
                units += sum(new.values())
                counted.update(new)
                if new:
                    elapsed = max(bar.format_dict["elapsed"], 1e-9)
                    bar.set_postfix_str(f"{units:,} {self.unit}, {units / elapsed:,.0f} {self.unit}/s", refresh=False)
                    bar.update(len(new))
                if stopping:
                    return
