"""``unicorpus report``: one self-contained HTML page to look at a corpus rather than read tables.

What a data engineer checks after a run: headline totals; per stage and source, what went in, out and was
refused (by reason); the indexes with their measured recall; which object tags the images carry
(distribution per source, detector vs ground truth) and some images with their boxes drawn; score
histograms (weak pairs, detector boxes, related items); rewrite examples (UNIMO §2.1: back-translations
and hard negatives); the strongest and weakest weak pairs side by side and a few images with the sentences
weak alignment retrieved (mu-VLA §3.2); related images and texts (UNIMO App. A). Thumbnails are inlined
(base64), so the page is one file to copy anywhere. Reads only committed tables, and never shows a sample
``clean`` removed (``retrieval.corpus.Corpus`` leaves them out, and the stages after clean never linked them);
sections whose stage has not run say so.

No file goes through Beam: every file is read and the page written through ``retrieval.files`` (fsspec), so a
corpus on object storage (``gs://``, ``s3://``, ``memory://``) is reported as a local one.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice

from pipelines.sidecar_tables import REGION_LABELS, sample_texts
from retrieval import files
from retrieval.corpus import Corpus, UnknownKey
from retrieval.thumbnails import ImageTooLarge
from schemas import layout
from schemas.config import CorpusConfig
from schemas.tables import REMOVAL_STAGES

STAGE_ORDER = ("ingest", "clean", "detect", "parse", "rewrite", "embed-text", "embed-tags")
TASK_STAGES = ("pack",)  # stages whose manifest lines are training tasks, not sources
TOP_TAGS = 15
EXAMPLES = 6
THUMB = 128
BOXED = 256  # side of the images with boxes drawn
BINS = 20
EXTREMES = 3  # strongest and weakest weak pairs shown


def sample_text(corpus: Corpus, key: str, text_index: int | None) -> str | None:
    """The sample's text ``text_index`` (a COCO image's caption i, else its one text); None for a sample clean
    removed."""
    try:
        row = corpus.row(key)
    except UnknownKey:
        return None
    return None if text_index is None else dict(sample_texts(row)).get(text_index)


def picture(corpus: Corpus, key: str, side: int = THUMB) -> tuple[str, int, int] | None:
    """(data: URI of a JPEG whose longest side is ``side``, width, height), or None without an image (or one
    too large to decode): the service's thumbnails (``retrieval.thumbnails``, draft-mode decoding)."""
    from PIL import Image

    try:
        if corpus.row(key)["image_offset"] is None:
            return None
        jpeg = corpus.thumbnail(key, side)
    except (UnknownKey, ImageTooLarge):
        return None
    with Image.open(io.BytesIO(jpeg)) as image:
        width, height = image.size
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode(), width, height


def thumbnail(corpus: Corpus, key: str) -> str | None:
    found = picture(corpus, key)
    return None if found is None else found[0]


def build_report(config: CorpusConfig, made: datetime | None = None) -> str:
    """The page as a string (``write_report`` puts it under the corpus root)."""
    corpus = Corpus.from_config(config)
    manifest = corpus.manifest()
    tags = tag_counts(config, corpus)
    rejects = reject_counts(config.output)
    indexes = index_builds(config.output)
    sections = [_headline(manifest, tags, rejects, indexes, made or datetime.now(UTC)),
                _stages_section(manifest), _rejects_section(rejects), _index_section(indexes),
                _tags_section(tags), _boxes_section(config, corpus), _histograms_section(config, corpus),
                _rewrites_section(config, corpus)]
    for weak in config.retrieval.retrieve.weak_pairs:
        queries = {row["key"]: row["text"] for source in weak.images
                   for row in corpus.rows(layout.emb("tags"), source, ["key", "text"])}
        title = f"{', '.join(weak.images)} images x {', '.join(weak.texts)} sentences"
        sections.append(_extremes_section(config, corpus, weak.name, title, queries))
        sections.append(_links_section(config, corpus, weak.name, f"Weak pairs {weak.name} (mu-VLA §3.2): {title}",
                                       queries))
    sections.append(_links_section(config, corpus, "related-images", "Related images (UNIMO App. A)"))
    sections.append(_links_section(config, corpus, "related-texts", "Related texts (UNIMO App. A)"))
    body = "\n".join(sections)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>unicorpus report</title>"
            f"<style>{_CSS}</style></head><body><h1>unicorpus report</h1>"
            f"<p class='muted'>{html.escape(config.output)}</p>{body}</body></html>\n")


def write_report(config: CorpusConfig) -> str:
    path = files.join(config.output, layout.report())
    files.write_bytes(path, build_report(config).encode("utf-8"))
    return path


# --- the numbers ---------------------------------------------------------------------------------------------


def headline_totals(manifest: dict, tags: dict[str, Counter], rejects: Counter, indexes: list[dict]) -> dict:
    """What the page opens with: samples ingested, removed by clean, kept; regions; vectors indexed; links;
    records refused (the removals of clean are counted as removed, not refused)."""
    stages = manifest.get("stages", {})
    ingested = sum(e["counts"]["written"] for e in stages.get("ingest", {}).values())
    removed = sum(e["counts"]["removed"] for e in stages.get("clean", {}).values())
    return {
        "samples ingested": ingested,
        "removed by clean": removed,
        "samples kept": ingested - removed,
        "regions": sum(sum(counter.values()) for counter in tags.values()),
        "vectors indexed": sum(info["vectors"] for info in indexes),
        "links": sum(e["counts"].get("links", 0) for e in stages.get("retrieve", {}).values()),
        "records refused": sum(n for (stage, _, _), n in rejects.items() if stage not in REMOVAL_STAGES),
    }


def reject_counts(root: str) -> Counter:
    """(stage, source, reason) -> rows in ``rejects/``."""
    counts: Counter = Counter()
    for path in files.glob(files.join(root, layout.rejects("*", "*"), "*.parquet")):
        stage, source = path.rsplit("/", 3)[-3:-1]
        for reason in files.read_table(path, ["reason"]).column("reason").to_pylist():
            counts[(stage, source, reason)] += 1
    return counts


def index_builds(root: str) -> list[dict]:
    """The ``build.json`` of every index under ``index/<space>/<source>/``, with its ``name``."""
    out = []
    for path in files.glob(files.join(root, layout.index_build_file("*", "*"))):
        space, source = path.rsplit("/", 3)[-3:-1]
        out.append({"name": f"{space}/{source}", **json.loads(files.read_bytes(path))})
    return out


def tag_counts(config: CorpusConfig, corpus: Corpus) -> dict[str, Counter]:
    """source -> Counter of (label, origin) over the regions in ann/detect."""
    counts: dict[str, Counter] = {}
    for source in config.sources:
        counter: Counter = Counter()
        for row in corpus.rows(layout.ann("detect"), source, REGION_LABELS):
            counter.update((region["label"], region["origin"]) for region in row["regions"])
        if counter:
            counts[source] = counter
    return counts


def histogram(values: list[float], bins: int = BINS) -> tuple[list[int], float, float]:
    """(counts per bin, low, high): equal bins over [low, high], the value range widened to tenths, the
    highest value in the last bin."""
    low = math.floor(round(min(values) * 10, 4)) / 10  # rounded first: a float32 cosine of 1.0000001 is 1
    high = max(math.ceil(round(max(values) * 10, 4)) / 10, low + 0.1)
    counts = [0] * bins
    for value in values:
        counts[min(int((value - low) / (high - low) * bins), bins - 1)] += 1
    return counts, low, high


def score_sets(config: CorpusConfig, corpus: Corpus) -> dict[str, list[float]]:
    """The scores the histograms show: weak pairs (cosine of tag query and sentence), detector boxes (class
    confidence; ground truth is always 1), related images and texts (TF-IDF / embedding cosine)."""
    sets = {}
    for weak in config.retrieval.retrieve.weak_pairs:
        sets[f"weak pairs {weak.name}"] = _scores(corpus, layout.links(weak.name), config.sources)
    sets["detector boxes"] = [region["score"] for source in config.sources
                              for row in corpus.rows(layout.ann("detect"), source,
                                                     ["regions.list.element.score", "regions.list.element.origin"])
                              for region in row["regions"] if region["origin"] == "detector"]
    for name in ("related-images", "related-texts"):
        sets[name.replace("-", " ")] = _scores(corpus, layout.links(name), config.sources)
    return sets


def _scores(corpus: Corpus, folder: str, sources) -> list[float]:
    return [row["score"] for source in sources for row in corpus.rows(folder, source, ["score"])]


def weak_pair_extremes(config: CorpusConfig, corpus: Corpus, name: str,
                       count: int = EXTREMES) -> tuple[list[dict], list[dict]]:
    """(strongest, weakest) ``count`` rows of ``links/<name>/`` by score: each an image and one retrieved sentence."""
    rows = [row for source in config.sources
            for row in corpus.rows(layout.links(name), source, ["query_key", "query_source", "rank", "text", "score"])]
    rows.sort(key=lambda row: (-row["score"], row["query_key"], row["rank"]))
    return rows[:count], rows[::-1][:count] if len(rows) > count else []


# --- the sections ---------------------------------------------------------------------------------------------


def _headline(manifest: dict, tags: dict, rejects: Counter, indexes: list[dict], made: datetime) -> str:
    tiles = "".join(f"<div class='tile'><div class='big'>{n:,}</div><div class='muted'>{html.escape(label)}</div></div>"
                    for label, n in headline_totals(manifest, tags, rejects, indexes).items())
    return (f"<p class='muted'>made {made.strftime('%Y-%m-%d %H:%M UTC')}</p>"
            f"<div class='tiles' id='totals'>{tiles}</div>")


def _stages_section(manifest: dict) -> str:
    """Sources x stages: what each stage kept of what it was given (clean: kept/samples; every other stage:
    written/read, the counts of ``pipelines.results``), then tasks x pack: a pack line is a training task, not
    a source. Retrieval tables have sections of their own below."""
    found = manifest["stages"]
    order = [stage for stage in STAGE_ORDER if stage in found] + sorted(set(found) - set(STAGE_ORDER) - {"retrieve"})
    if not order:
        return "<h2>Stages</h2><p class='muted'>no stage has run</p>"
    by_source = {stage: found[stage] for stage in order if stage not in TASK_STAGES}
    by_task = {stage: found[stage] for stage in order if stage in TASK_STAGES}
    return (f"<h2>Stages</h2><p class='muted'>per source: output / input of each stage (rejects are below); the "
            f"stages after clean leave its removals out</p>{_counts_table('source', by_source)}"
            + (f"<p class='muted'>per training task: samples packed / pack units read</p>"
               f"{_counts_table('task', by_task)}" if by_task else ""))


def _counts_table(line: str, stages: dict[str, dict]) -> str:
    """A table of ``line`` (source or task) x stage, each cell what the stage kept of that line's input; entries
    without counts (pack's ``left_out``: what clean removed, by source) are no line."""
    names = sorted({name for entries in stages.values() for name, entry in entries.items() if "counts" in entry})
    header = "".join(f"<th>{html.escape(stage)}</th>" for stage in stages)
    rows = []
    for name in names:
        cells = []
        for entries in stages.values():
            counts = entries.get(name, {}).get("counts")
            cells.append(f"<td class='n'>{_kept(counts)}</td>" if counts else "<td class='n muted'>-</td>")
        rows.append(f"<tr><td>{html.escape(name)}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>{line}</th>{header}</tr>{''.join(rows)}</table>"


def _kept(counts: dict) -> str:
    for out, given in (("written", "read"), ("kept", "samples")):
        if out in counts and given in counts:
            return f"{counts[out]}/{counts[given]}"
    return "?"


def _rejects_section(counts: Counter) -> str:
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for (stage, source, reason), n in sorted(counts.items()):
        grouped[(stage, source)].append(f"{reason} {n}")
    rows = "".join(f"<tr><td>{html.escape(stage)}</td><td>{html.escape(source)}</td>"
                   f"<td>{html.escape(', '.join(reasons))}</td></tr>" for (stage, source), reasons in grouped.items())
    return ("<h2>Rejects</h2><p class='muted'>every refused record, by stage, source and reason "
            "(rows in <code>rejects/</code>; <code>dedup</code> and <code>decontam</code> are clean's removals)</p>"
            "<table><tr><th>stage</th><th>source</th><th>records by reason</th>"
            f"</tr>{rows or '<tr><td colspan=3>none</td></tr>'}</table>")


def _index_section(indexes: list[dict]) -> str:
    if not indexes:
        return "<h2>Indexes</h2><p class='muted'>no index/: run <code>unicorpus index</code></p>"
    rows = "".join(
        f"<tr><td>{html.escape(info['name'])}</td><td class='n'>{info['vectors']:,}</td>"
        f"<td>{html.escape(info['factory'])}</td>"
        f"<td>{html.escape(', '.join(f'{k}={v}' for k, v in info['search_params'].items()) or 'exact')}</td>"
        f"<td class='n'>{info['recall']:.3f} @{info['recall_k']}"
        f"{'' if info['recall_reached'] else ' (below target)'}</td><td class='n'>{info['index_mb']:.1f}</td></tr>"
        for info in indexes)
    return ("<h2>Indexes</h2><p class='muted'>recall measured against exact search on held-out queries when the "
            "index was built</p><table id='indexes'><tr><th>index</th><th>vectors</th><th>type</th>"
            f"<th>search params</th><th>recall</th><th>MB</th></tr>{rows}</table>")


def _tags_section(counts: dict[str, Counter]) -> str:
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
            f"<div class='bar'><span class='label' title='{html.escape(label)}'>{html.escape(label)}</span>"
            "<span class='track'>"
            + "".join(f"<span class='fill {origin}' style='width:{100 * counter[(label, origin)] / widest:.2f}%'>"
                      "</span>" for origin in ("annotation", "detector") if counter[(label, origin)])
            + f"</span><span class='n'>{n}</span></div>" for label, n in top)
        blocks.append(f"<div class='card'><h3>{html.escape(source)}</h3>{bars}</div>")
    legend = ("<p class='muted'><span class='swatch annotation'></span> ground truth "
              "<span class='swatch detector'></span> detector</p>")
    return f"<h2>Tags</h2>{legend}<div class='cards' id='tags'>{''.join(blocks)}</div>"


def _boxes_section(config: CorpusConfig, corpus: Corpus) -> str:
    """One image per source with regions (the first by key), its boxes drawn and labelled over it."""
    cards = []
    for source in config.sources:
        if len(cards) >= EXAMPLES:
            break
        row = next((r for r in corpus.rows(layout.ann("detect"), source, ["key", "regions"]) if r["regions"]), None)
        found = row and picture(corpus, row["key"], BOXED)
        if not found:
            continue
        uri, width, height = found
        shapes = []
        for region in row["regions"][:10]:
            x1, y1, x2, y2 = (v * s for v, s in zip(region["box"], (width, height, width, height), strict=True))
            shapes.append(f"<g class='{region['origin']}'><rect x='{x1:.1f}' y='{y1:.1f}' width='{x2 - x1:.1f}' "
                          f"height='{y2 - y1:.1f}'/><text x='{x1 + 2:.1f}' y='{y1 + 11:.1f}'>"
                          f"{html.escape(region['label'])} {region['score']:.2f}</text></g>")
        cards.append(f"<div class='card boxed'><svg width='{width}' height='{height}' viewBox='0 0 {width} {height}'>"
                     f"<image href='{uri}' width='{width}' height='{height}'/>{''.join(shapes)}</svg>"
                     f"<div class='key'>{html.escape(row['key'])}</div>"
                     f"<div class='muted'>{len(row['regions'])} regions</div></div>")
    if not cards:
        return "<h2>Boxes</h2><p class='muted'>no regions in ann/detect: run <code>unicorpus annotate detect</code></p>"
    return ("<h2>Boxes</h2><p class='muted'>an image per source with its regions (up to 10, by score): "
            "<span class='swatch annotation'></span> ground truth <span class='swatch detector'></span> detector</p>"
            f"<div class='cards' id='boxes'>{''.join(cards)}</div>")


def _histograms_section(config: CorpusConfig, corpus: Corpus) -> str:
    cards = []
    for title, values in score_sets(config, corpus).items():
        if not values:
            continue
        counts, low, high = histogram(values)
        tallest = max(counts)
        width, height, step = 300, 90, 300 / len(counts)
        bars = "".join(
            f"<rect x='{i * step:.1f}' y='{height - height * n / tallest:.1f}' width='{step - 1:.1f}' "
            f"height='{height * n / tallest:.1f}'><title>{n}</title></rect>"
            for i, n in enumerate(counts)
            if n
        )
        cards.append(f"<div class='card hist'><h3>{html.escape(title)}</h3><svg width='{width}' height='{height}'>"
                     f"{bars}</svg><div class='axis'><span>{low:.1f}</span><span>{len(values):,} scores</span>"
                     f"<span>{high:.1f}</span></div></div>")
    if not cards:
        return "<h2>Scores</h2><p class='muted'>no scores yet: run detect and retrieve</p>"
    return f"<h2>Scores</h2><div class='cards' id='histograms'>{''.join(cards)}</div>"


def example_rewrites(config: CorpusConfig, corpus: Corpus, per_method: int) -> Iterator[dict]:
    """Every caption that every method rewrote (by source, then key; samples clean removed left out), with up to
    ``per_method`` rewrites of each method (UNIMO §2.1)."""
    for source in config.annotate.rewrite.sources or config.sources:
        by_caption: dict[tuple[str, int], list[dict]] = defaultdict(list)
        for row in corpus.rows(layout.ann("rewrite"), source, ["key", "text_index", "method", "text", "score"]):
            by_caption[(row["key"], row["text_index"])].append(row)
        for (key, text_index), rows in sorted(by_caption.items()):
            methods = sorted({row["method"] for row in rows})
            caption = sample_text(corpus, key, text_index) if len(methods) == 3 else None
            if caption is not None:
                yield {"key": key, "caption": caption,
                       "rewrites": [(method, row["score"], row["text"]) for method in methods
                                    for row in [r for r in rows if r["method"] == method][:per_method]]}


def _rewrites_section(config: CorpusConfig, corpus: Corpus) -> str:
    cards = []
    for example in islice(_distinct_keys(example_rewrites(config, corpus, per_method=3)), 3):
        by_method: dict[str, list] = defaultdict(list)
        for method, score, text in example["rewrites"]:
            by_method[method].append((score, text))
        blocks = "".join(
            f"<div class='method {'positive' if method == 'back_translation' else 'negative'}'>"
            f"<b>{html.escape(method)}</b>{' (paraphrases)' if method == 'back_translation' else ' (hard negatives)'}"
            "<ul>" + "".join(f"<li>{'' if score is None else f'<span class=score>{score:.3f}</span> '}"
                             f"{html.escape(text)}</li>" for score, text in rewrites) + "</ul></div>"
            for method, rewrites in by_method.items())
        cards.append(f"<div class='card wide'><div class='key'>{html.escape(example['key'])}</div>"
                     f"<div class='caption'>{html.escape(example['caption'])}</div>{blocks}</div>")
    if not cards:
        return ("<h2>Rewrites</h2><p class='muted'>no caption rewritten by every method: run "
                "<code>unicorpus annotate rewrite</code></p>")
    return ("<h2>Rewrites (UNIMO §2.1)</h2><p class='muted'>captions with their back-translations and hard "
            f"negatives</p><div class='cards' id='rewrites'>{''.join(cards)}</div>")


def _distinct_keys(examples):
    """The first example of each sample (a COCO image has five captions: show other images too)."""
    seen = set()
    for example in examples:
        if example["key"] not in seen:
            seen.add(example["key"])
            yield example


def _extremes_section(config: CorpusConfig, corpus: Corpus, name: str, title: str, queries: dict[str, str]) -> str:
    strongest, weakest = weak_pair_extremes(config, corpus, name)
    if not strongest:
        return ""

    def column(label: str, rows: list[dict]) -> str:
        items = []
        for row in rows:
            thumb = thumbnail(corpus, row["query_key"])
            items.append(
                f"<div class='pair'>{f'<img src={thumb!r}>' if thumb else ''}<div>"
                f"<span class='score'>{row['score']:.3f}</span> <div class='key'>{html.escape(row['query_key'])}"
                f"</div><div class='tags'>tags: {html.escape(queries.get(row['query_key'], ''))}</div>"
                f"<div>{html.escape(row['text'] or '')}</div></div></div>"
            )
        return f"<div class='column'><h3>{label}</h3>{''.join(items)}</div>"

    return (f"<h2>Strongest and weakest weak pairs {html.escape(name)}</h2><p class='muted'>{html.escape(title)}: "
            f"image, tag query, retrieved sentence, cosine</p><div class='sides'>{column('strongest', strongest)}"
            f"{column('weakest', weakest)}</div>")


def _links_section(config: CorpusConfig, corpus: Corpus, name: str, title: str,
                   queries: dict[str, str] | None = None) -> str:
    """A card per query sample (the first few by key; of a sample with several captions, its first): its
    thumbnail or caption, its tag query if any, its top results."""
    by_query: dict[tuple[str, str], list[dict]] = defaultdict(list)
    text_of: dict[tuple[str, str], int | None] = {}
    for source in config.sources:
        for row in corpus.rows(layout.links(name), source):
            query = (row["query_source"], row["query_key"])
            if len(by_query) >= EXAMPLES and query not in by_query:
                break  # enough queries to show: the rest of the links are not read
            if text_of.setdefault(query, row["query_text_index"]) == row["query_text_index"]:
                by_query[query].append(row)
        if len(by_query) >= EXAMPLES:
            break
    if not by_query:
        return (f"<h2>{html.escape(title)}</h2><p class='muted'>no links/{html.escape(name)}: "
                "run <code>unicorpus retrieve</code></p>")
    cards = []
    for (source, key), results in sorted(by_query.items())[:EXAMPLES]:
        thumb = thumbnail(corpus, key)
        picture = f"<img src='{thumb}' alt='{html.escape(key)}'>" if thumb else ""
        caption = sample_text(corpus, key, text_of[(source, key)])
        items = []
        for result in sorted(results, key=lambda r: r["rank"])[:5]:
            if result["text"] is not None:
                items.append(f"<li><span class='score'>{result['score']:.3f}</span> {html.escape(result['text'])}</li>")
            else:
                other = thumbnail(corpus, result["key"])
                items.append(f"<li><span class='score'>{result['score']:.3f}</span> "
                             + (f"<img class='small' src='{other}' alt='{html.escape(result['key'])}'>" if other
                                else html.escape(result["key"])) + "</li>")
        query = f"<div class='tags'>tags: {html.escape(queries[key])}</div>" if queries and key in queries else ""
        text = f"<div class='caption'>{html.escape(caption)}</div>" if caption else ""
        cards.append(f"<div class='card'>{picture}<div class='key'>{html.escape(key)}</div>{text}{query}"
                     f"<ol>{''.join(items)}</ol></div>")
    return f"<h2>{html.escape(title)}</h2><div class='cards'>{''.join(cards)}</div>"


_CSS = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h2{margin-top:32px;border-bottom:1px solid #ddd}h3{margin:0 0 6px}
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
td.n,.n{text-align:right;color:#555}.muted{color:#777}
.tiles{display:flex;flex-wrap:wrap;gap:12px}\
.tile{border:1px solid #ddd;border-radius:6px;padding:10px 16px;min-width:110px}
.big{font-size:24px;font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:10px;width:340px;box-sizing:border-box;overflow:hidden}
.card.wide{width:560px}.card.boxed{width:auto}
.card img{max-width:128px;display:block}.card img.small{display:inline;max-width:64px;vertical-align:middle}
.key{font:12px monospace;color:#555;margin:4px 0}.tags{color:#2a7;margin:2px 0}.score{font:12px monospace;color:#06c}
.caption{font-style:italic;margin:4px 0}
.bar{display:flex;align-items:center;gap:6px;margin:2px 0}
.bar .label{flex:0 0 90px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.bar .track{flex:1 1 auto;min-width:0;display:flex;height:12px}
.bar .n{flex:0 0 36px}
.fill{height:12px;flex:none}.annotation{background:#4a8}.detector{background:#e94}
.swatch{display:inline-block;width:12px;height:12px;vertical-align:middle}
svg rect{fill:#48c}svg g rect{fill:none;stroke-width:2}svg g.detector rect{stroke:#e94}
svg g.annotation rect{stroke:#4a8}\
svg text{font:11px sans-serif;fill:#fff;paint-order:stroke;stroke:#000;stroke-width:3px}
.hist .axis{display:flex;justify-content:space-between;font:11px monospace;color:#777;width:300px}
.method{margin:6px 0}.method ul{margin:2px 0;padding-left:18px}.negative b{color:#b44}.positive b{color:#2a7}
.sides{display:flex;gap:16px;flex-wrap:wrap}.column{flex:1 1 420px;min-width:0}
.pair{display:flex;gap:10px;border:1px solid #ddd;border-radius:6px;padding:8px;margin-bottom:8px}
.pair img{width:96px;height:auto;flex:none}
ol{padding-left:18px;margin:6px 0}
"""
