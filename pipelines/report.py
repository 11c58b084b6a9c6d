"""``unicorpus report``: one self-contained HTML page to look at a corpus rather than read tables.

What a data engineer checks after a run: per stage and source, what went in, out and was refused (by
reason); which object tags the images carry (distribution per source, detector vs ground truth); for a
few images, the sentences weak alignment retrieved (mu-VLA §3.2) and the images UNIMO's related-image
retrieval found, with thumbnails. Thumbnails are inlined (base64), so the page is one file to copy
anywhere. Reads only committed tables; sections whose stage has not run say so.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter, defaultdict

import pyarrow.parquet as pq

from pipelines import io as fsio
from pipelines.manifest_io import read_manifest
from pipelines.sidecar import REGION_LABELS, ShardInput, read_shard_input, read_sidecar
from schemas.config import CorpusConfig
from schemas.keys import shard_of

STAGE_ORDER = ("ingest", "clean", "detect", "parse", "rewrite", "embed-text", "embed-tags")
TOP_TAGS = 15
EXAMPLES = 6
THUMB = 128


class _Images:
    """Image lookup by key over the raw shards, one shard index read at most once."""

    def __init__(self, config: CorpusConfig):
        self.config = config
        self._shards: dict[tuple[str, int], tuple[ShardInput, dict[str, dict]]] = {}

    def thumbnail(self, source: str, key: str) -> str | None:
        """A data: URI of a small JPEG of ``key``'s image, or None if it has none."""
        from pipelines.images import open_stored

        shard = shard_of(key, self.config.sources[source].shards)
        if (source, shard) not in self._shards:
            shard_input = read_shard_input(self.config.output, source, shard)
            self._shards[(source, shard)] = shard_input, {r["key"]: r for r in shard_input.rows}
        shard_input, rows = self._shards[(source, shard)]
        row = rows.get(key)
        if row is None or row.get("image_offset") is None:
            return None
        with open_stored(shard_input.image_bytes(row)) as stored:  # checked by ingest: no PIL bomb warning
            image = stored.convert("RGB")
        image.thumbnail((THUMB, THUMB))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def build_report(config: CorpusConfig) -> str:
    """The page as a string (``write_report`` puts it under the corpus root)."""
    images = _Images(config)
    sections = [_stages_section(read_manifest(config.output)), _rejects_section(config), _tags_section(config)]
    for weak in config.retrieval.retrieve.weak_pairs:
        queries = {row["key"]: row["text"] for source in weak.images
                   for row in read_sidecar(config.output, "emb/tags", source, ["key", "text"])}
        sections.append(_links_section(config, images, weak.name, f"Weak pairs {weak.name} (mu-VLA §3.2): "
                                       f"{', '.join(weak.images)} images x {', '.join(weak.texts)} sentences", queries))
    sections.append(_links_section(config, images, "related-images", "Related images (UNIMO App. A)"))
    sections.append(_links_section(config, images, "related-texts", "Related texts (UNIMO App. A)"))
    body = "\n".join(sections)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>unicorpus report</title>"
            f"<style>{_CSS}</style></head><body><h1>unicorpus report</h1>"
            f"<p class='muted'>{html.escape(config.output)}</p>{body}</body></html>\n")


def write_report(config: CorpusConfig) -> str:
    path = fsio.join(config.output, "report", "index.html")
    fsio.write_bytes(path + ".tmp", build_report(config).encode("utf-8"))
    fsio.rename(path + ".tmp", path)
    return path


def _stages_section(manifest: dict) -> str:
    """Sources x stages: what each stage kept of what it was given (ingest: written/read; clean: kept/samples;
    the stages after: units with output/units). Retrieval tables have sections of their own below."""
    found = manifest["stages"]
    order = [stage for stage in STAGE_ORDER if stage in found] + sorted(set(found) - set(STAGE_ORDER) - {"retrieve"})
    stages = {stage: found[stage] for stage in order}
    if not stages:
        return "<h2>Stages</h2><p class='muted'>no stage has run</p>"
    sources = sorted({source for entries in stages.values() for source in entries})
    header = "".join(f"<th>{html.escape(stage)}</th>" for stage in stages)
    rows = []
    for source in sources:
        cells = []
        for entries in stages.values():
            counts = entries.get(source, {}).get("counts")
            cells.append(f"<td class='n'>{_kept(counts)}</td>" if counts else "<td class='n muted'>-</td>")
        rows.append(f"<tr><td>{html.escape(source)}</td>{''.join(cells)}</tr>")
    return (f"<h2>Stages</h2><p class='muted'>per source: output / input of each stage (rejects are below)</p>"
            f"<table><tr><th>source</th>{header}</tr>{''.join(rows)}</table>")


def _kept(counts: dict) -> str:
    for out, given in (("written", "read"), ("kept", "samples"), ("written", "units")):
        if out in counts and given in counts:
            return f"{counts[out]}/{counts[given]}"
    return "?"


def _rejects_section(config: CorpusConfig) -> str:
    counts: Counter = Counter()
    for path in fsio.glob(fsio.join(config.output, "rejects", "*", "*", "*.parquet")):
        stage, source = path.rsplit("/", 3)[-3:-1]
        with fsio.open_read(path) as f:
            for reason in pq.read_table(f, columns=["reason"]).column("reason").to_pylist():
                counts[(stage, source, reason)] += 1
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for (stage, source, reason), n in sorted(counts.items()):
        grouped[(stage, source)].append(f"{reason} {n}")
    rows = "".join(f"<tr><td>{html.escape(stage)}</td><td>{html.escape(source)}</td>"
                   f"<td>{html.escape(', '.join(reasons))}</td></tr>" for (stage, source), reasons in grouped.items())
    return ("<h2>Rejects</h2><p class='muted'>every refused record, by stage, source and reason "
            "(rows in <code>rejects/</code>)</p><table><tr><th>stage</th><th>source</th><th>records by reason</th>"
            f"</tr>{rows or '<tr><td colspan=3>none</td></tr>'}</table>")


def tag_counts(config: CorpusConfig) -> dict[str, Counter]:
    """source -> Counter of (label, origin) over the regions in ann/detect."""
    counts: dict[str, Counter] = {}
    for source in config.sources:
        counter: Counter = Counter()
        for row in read_sidecar(config.output, "ann/detect", source, REGION_LABELS):
            counter.update((region["label"], region["origin"]) for region in row["regions"])
        if counter:
            counts[source] = counter
    return counts


def _tags_section(config: CorpusConfig) -> str:
    counts = tag_counts(config)
    if not counts:
        return "<h2>Tags</h2><p class='muted'>no ann/detect tables: run <code>unicorpus annotate detect</code></p>"
    blocks = []
    for source, counter in counts.items():
        by_label: Counter = Counter()
        for (label, _), n in counter.items():
            by_label[label] += n
        top = by_label.most_common(TOP_TAGS)
        widest = top[0][1]
        bars = "".join(
            f"<div class='bar'><span class='label'>{html.escape(label)}</span>"
            + "".join(f"<span class='fill {origin}' style='width:{240 * counter[(label, origin)] / widest:.0f}px'></span>"
                      for origin in ("annotation", "detector") if counter[(label, origin)])
            + f"<span class='n'>{n}</span></div>" for label, n in top)
        blocks.append(f"<div class='card'><h3>{html.escape(source)}</h3>{bars}</div>")
    legend = ("<p class='muted'><span class='swatch annotation'></span> ground truth "
              "<span class='swatch detector'></span> detector</p>")
    return f"<h2>Tags</h2>{legend}<div class='cards'>{''.join(blocks)}</div>"


def _links_section(config: CorpusConfig, images: _Images, name: str, title: str,
                   queries: dict[str, str] | None = None) -> str:
    """A card per query (the first few by key): its thumbnail, its tag query if any, its top results."""
    by_query: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for source in config.sources:
        for row in read_sidecar(config.output, f"links/{name}", source):
            if len(by_query) >= EXAMPLES and (row["query_source"], row["query_key"]) not in by_query:
                break  # enough queries to show: the rest of the links are not read
            by_query[(row["query_source"], row["query_key"])].append(row)
        if len(by_query) >= EXAMPLES:
            break
    if not by_query:
        return f"<h2>{html.escape(title)}</h2><p class='muted'>no links/{html.escape(name)}: run <code>unicorpus retrieve</code></p>"
    cards = []
    for (source, key), results in sorted(by_query.items())[:EXAMPLES]:
        thumb = images.thumbnail(source, key)
        picture = f"<img src='{thumb}' alt='{html.escape(key)}'>" if thumb else ""
        items = []
        for result in sorted(results, key=lambda r: r["rank"])[:5]:
            if result["text"] is not None:
                items.append(f"<li><span class='score'>{result['score']:.3f}</span> {html.escape(result['text'])}</li>")
            else:
                other = images.thumbnail(result["source"], result["key"])
                items.append(f"<li><span class='score'>{result['score']:.3f}</span> "
                             + (f"<img class='small' src='{other}' alt='{html.escape(result['key'])}'>" if other
                                else html.escape(result["key"])) + "</li>")
        query = f"<div class='tags'>tags: {html.escape(queries[key])}</div>" if queries and key in queries else ""
        cards.append(f"<div class='card'>{picture}<div class='key'>{html.escape(key)}</div>{query}"
                     f"<ol>{''.join(items)}</ol></div>")
    return f"<h2>{html.escape(title)}</h2><div class='cards'>{''.join(cards)}</div>"


_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h2{margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
td.n,.n{text-align:right;color:#555}.muted{color:#777}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;border-radius:6px;padding:10px;width:340px}
.card img{max-width:128px;display:block}.card img.small{display:inline;max-width:64px;vertical-align:middle}
.key{font:12px monospace;color:#555;margin:4px 0}.tags{color:#2a7;margin:2px 0}.score{font:12px monospace;color:#06c}
.bar{display:flex;align-items:center;gap:4px;margin:2px 0}.bar .label{width:90px;overflow:hidden}
.fill{height:12px;display:inline-block}.annotation{background:#4a8}.detector{background:#e94}
.swatch{display:inline-block;width:12px;height:12px;vertical-align:middle}
ol{padding-left:18px;margin:6px 0}
"""
