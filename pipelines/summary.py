"""The table a stage prints when it finishes: counts in, out and rejected (by reason), bytes, rate; or the
same as JSON. Every stage that writes shards returns ``pipelines.results.StageResult``s, printed one way."""

from __future__ import annotations

from pipelines.raw_shard import ShardCounts
from pipelines.results import StageResult


def format_summary(results: list[StageResult], what: str = "source") -> str:
    """One row per result (``what`` names the first column: source, task, table/source) and a total; the
    rate is that of the shards this run wrote (``fresh``), not the reused ones'."""
    header = (what, "read", "written", "rejected", "MB", "written/s", "shards", "rejected by reason")
    rows = [_row(r.name, r.counts, _fresh(r), r.seconds, f"{r.shards} ({r.skipped_shards} reused)") for r in results]
    total = sum((r.counts for r in results), ShardCounts())
    fresh = sum((_fresh(r) for r in results), ShardCounts())
    rows.append(_row("TOTAL", total, fresh, sum(r.seconds for r in results), str(sum(r.shards for r in results))))
    balanced = all(r.counts.records_in == r.counts.written + r.counts.rejected_total for r in results)
    return _table(header, rows, left=(0, 7)) + format_removed(results) + (
        "\nread == written + rejected for every source" if balanced
        else "\nWARNING: read != written + rejected for some source")


def format_removed(results) -> str:
    """The line that says how many samples ``clean`` removed were left out: ``removed`` of each result, a
    mapping source -> samples (``StageResult``) or a number for the result's own name (``IndexResult``)."""
    removed: dict[str, int] = {}
    for result in results:
        own = getattr(result, "removed", {})
        removed |= {result.name: own} if isinstance(own, int) else own
    removed = {source: n for source, n in removed.items() if n}
    if not removed:
        return ""
    return "\nleft out, removed by clean: " + ", ".join(f"{name} {n}" for name, n in removed.items())


def _table(header: tuple, rows: list[tuple], left: tuple[int, ...] = (0,)) -> str:
    """Columns aligned (text left, numbers right), a rule under the header and above the last row."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            str(cell).ljust(w) if i in left else str(cell).rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(-1, "-" * len(lines[0]))
    return "\n".join(lines)


def _fresh(result) -> ShardCounts:
    """What this run wrote: ``fresh`` where the stage gives it, nothing when every shard was reused."""
    fresh = getattr(result, "fresh", None)
    if fresh is None:
        return ShardCounts() if result.shards and result.skipped_shards == result.shards else result.counts
    return fresh


def _row(name: str, counts: ShardCounts, fresh: ShardCounts, seconds: float, shards: str) -> tuple:
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.rejected.items())) or "-"
    rate = f"{fresh.written / seconds:.0f}" if seconds > 0 and fresh.written else "-"
    return (name, counts.records_in, counts.written, counts.rejected_total,
            f"{counts.bytes / 1e6:.1f}", rate, shards, reasons)


def format_clean_summary(results) -> str:
    """``results``: CleanResult objects (pipelines/stages/clean.py)."""
    header = ("source", "samples", "contaminated", "exact dup", "near dup", "text dup", "kept")
    rows = [(r.name, r.samples, r.removed_contaminated, r.duplicates["exact_image"], r.duplicates["near_image"],
             r.duplicates["exact_text"], r.samples - r.removed) for r in results]
    rows.append(("TOTAL", *(sum(row[i] for row in rows) for i in range(1, len(header)))))
    table = _table(header, rows)
    eval_sets = sorted({name for r in results for name in r.contaminated})
    lines = [f"  {name}: " + ", ".join(f"{r.name} {r.contaminated[name]}" for r in results if r.contaminated[name])
             for name in eval_sets]
    return table + ("\nmatched per evaluation set:\n" + "\n".join(lines) if lines else "\nno evaluation image found")


def format_example_pairs(examples: list[dict]) -> str:
    """Weak pairs to look at (``pipelines.stages.retrieve.example_pairs``): image, tag query, top sentences."""
    blocks = []
    for example in examples:
        lines = [f"[{example['name']}] {example['image']}  tags: {example['tags']}"]
        lines += [f"  {score:.3f}  {text}" for score, text in example["sentences"]]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_refusals(refusals: dict[str, dict[str, int]]) -> str:
    """Scene-graph replacements WordNet refused per source (``pipelines.stages.rewrite.wordnet_refusals``),
    as lines ending in a blank line; nothing when the filter was off."""
    if not refusals:
        return ""
    lines = [f"  {name}: {sum(counts.values())} ({', '.join(f'{r} {n}' for r, n in counts.items())})"
             for name, counts in refusals.items()]
    return "scene-graph replacements refused by WordNet (they still describe the image):\n" + "\n".join(lines) + "\n\n"


def format_example_rewrites(example: dict | None) -> str:
    """A caption and its rewrites (``pipelines.stages.rewrite.example_rewrites``)."""
    if example is None:
        return "no caption has rewrites of every method yet"
    lines = [f"{example['key']}: {example['caption']}"]
    lines += [f"  {method:<16} {'' if score is None else f'{score:.3f}':>7}  {text}"
              for method, score, text in example["rewrites"]]
    return "\n".join(lines)


def summary_records(results) -> list[dict]:
    """The results of any stage (``StageResult``; ``IndexResult``, ``CleanResult``) as JSON-ready dicts:
    a StageResult as ``record()`` spells it (the counts as in corpus.json), other results by their fields,
    Counters as sorted dicts."""
    import dataclasses
    from collections import Counter

    records = []
    for result in results:
        if isinstance(result, StageResult):
            records.append(result.record())
            continue
        record = {}
        for item in dataclasses.fields(result):
            value = getattr(result, item.name)
            if isinstance(value, Counter):
                value = dict(sorted(value.items()))
            record[item.name] = value
        if hasattr(result, "removed") and "removed" not in record:  # CleanResult: a property
            record["removed"] = result.removed
        records.append(record)
    return records


def format_json(stage: str, results, **extra) -> str:
    """What ``--json`` prints instead of the table: one JSON object, for scripts."""
    import json

    return json.dumps({"stage": stage, "results": summary_records(results), **extra}, indent=2, sort_keys=True,
                      default=str)
