"""The table a stage prints when it finishes: counts in, out and rejected (by reason), bytes, rate."""

from __future__ import annotations

from pipelines.shards import ShardCounts


def format_summary(results) -> str:
    """``results``: objects with ``name``, ``counts`` (ShardCounts), ``shards``, ``skipped_shards``, ``seconds``."""
    header = ("source", "read", "written", "rejected", "MB", "samples/s", "shards", "rejected by reason")
    rows = [_row(r.name, r.counts, r.seconds, f"{r.shards} ({r.skipped_shards} reused)") for r in results]
    total = sum((r.counts for r in results), ShardCounts())
    rows.append(_row("TOTAL", total, sum(r.seconds for r in results), str(sum(r.shards for r in results))))
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) if i in (0, 7) else str(cell).rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(-1, "-" * len(lines[0]))
    balanced = all(r.counts.records_in == r.counts.written + r.counts.rejected_total for r in results)
    lines.append("read == written + rejected for every source" if balanced
                 else "WARNING: read != written + rejected for some source")
    return "\n".join(lines)


def _row(name: str, counts: ShardCounts, seconds: float, shards: str) -> tuple:
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.rejected.items())) or "-"
    rate = f"{counts.written / seconds:.0f}" if seconds > 0 else "-"
    return (name, counts.records_in, counts.written, counts.rejected_total,
            f"{counts.bytes / 1e6:.1f}", rate, shards, reasons)
