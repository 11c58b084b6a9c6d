"""Progress of a running stage, seen from outside the pipeline: committed shard files are counted.

Watching the output works the same on every runner (in-process, worker pools, a cluster writing to
shared storage), where in-pipeline counters would not reach the launching process. Shown with tqdm (what
users know): shards done of the total with an ETA, and beside them the samples (or units: images, texts,
queries) the committed files account for and their rate, read from each file's footer.
"""

from __future__ import annotations

import sys
import threading

from pipelines import io as fsio


def committed_units(path: str) -> int:
    """What one committed table accounts for: ``records_in`` of its footer (records read, units considered,
    queries), else its row count."""
    import pyarrow.parquet as pq

    from schemas.tables import RECORDS_IN_KEY

    with fsio.open_read(path) as f:
        metadata = pq.read_metadata(f)
    records_in = (metadata.metadata or {}).get(RECORDS_IN_KEY)
    return int(records_in) if records_in is not None else metadata.num_rows


class ShardProgress:
    """A tqdm bar ``[label] shards N/M [elapsed<ETA, K units, R units/s]``, N the number of files matching
    ``pattern``; files there before the run (reused shards) start the bar but not the rate."""

    def __init__(self, pattern: str, label: str, total: int, enabled: bool = True, interval: float = 1.0,
                 unit: str = "samples"):
        self.pattern = pattern
        self.source, self.total, self.enabled, self.interval, self.unit = label, total, enabled, interval, unit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._seen: set[str] = set()

    def __enter__(self) -> ShardProgress:
        if self.enabled:
            self._seen = set(fsio.glob(self.pattern))
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()

    def _watch(self) -> None:
        from tqdm import tqdm

        units = 0
        with tqdm(total=self.total, initial=len(self._seen), desc=f"[{self.source}] shards", unit="shard",
                  file=sys.stderr, dynamic_ncols=True, mininterval=0) as bar:
            bar.set_postfix_str(f"0 {self.unit}", refresh=False)
            while True:
                stopping = self._stop.wait(self.interval)
                new = [path for path in fsio.glob(self.pattern) if path not in self._seen]
                for path in new:
                    units += committed_units(path)
                    self._seen.add(path)
                if new:
                    elapsed = max(bar.format_dict["elapsed"], 1e-9)
                    bar.set_postfix_str(f"{units:,} {self.unit}, {units / elapsed:,.0f} {self.unit}/s", refresh=False)
                    bar.update(len(new))
                if stopping:
                    return
