"""What every stage that writes shards returns (ingest, detect, parse, rewrite, embed, retrieve, pack), and
the one vocabulary its counts have in the summary table, ``--json`` and ``corpus.json``:

``read`` (records or units the stage considered: ingest's records, captions, images, queries, pack units),
``written`` (those with output: samples, units with rows, queries served, samples packed), ``rejected`` and
``rejected_by_reason`` (``read == written + rejected``), ``bytes`` (of the committed tables or tars),
``removed_by_clean`` (stages after clean: samples left out), then the stage's own extras (``links``: rows of
a links table; ``wordnet_refused``: rewrite's refusals by reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.raw_shard import ShardCounts


@dataclass
class StageResult:
    """One line of a stage's summary: a source (ingest, annotators), ``space/source`` (embed),
    ``table/source`` (retrieve) or a task (pack), over every shard it covers."""

    name: str
    counts: ShardCounts  # of every shard, reused or not
    shards: int
    skipped_shards: int
    seconds: float
    fresh: ShardCounts | None = None  # of the shards this run wrote (the rate is theirs); None: all of them
    removed: dict[str, int] = field(default_factory=dict)  # after clean: source -> samples it removed, left out
    extra: dict = field(default_factory=dict)  # stage-specific counts, summed over shards (``add_extras``)

    def counts_record(self) -> dict:
        """The counts as ``corpus.json`` and ``--json`` spell them."""
        record = counts_record(self.counts)
        if self.removed:
            record["removed_by_clean"] = sum(self.removed.values())
        return {**record, **self.extra}

    def record(self) -> dict:
        """The whole result for ``--json``."""
        return {"name": self.name, "shards": self.shards, "skipped_shards": self.skipped_shards,
                "seconds": self.seconds, "counts": self.counts_record(),
                "fresh": None if self.fresh is None else counts_record(self.fresh), "removed": dict(self.removed)}


def counts_record(counts: ShardCounts) -> dict:
    return {"read": counts.records_in, "written": counts.written, "rejected": counts.rejected_total,
            "rejected_by_reason": dict(sorted(counts.rejected.items())), "bytes": counts.bytes}


def add_extras(a: dict, b: dict) -> dict:
    """Stage-specific counts summed: numbers add, ``{reason: n}`` mappings add per key (zeros kept)."""
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict):
            out[key] = add_extras(out.get(key, {}), value)
        else:
            out[key] = out.get(key, 0) + value
    return out
