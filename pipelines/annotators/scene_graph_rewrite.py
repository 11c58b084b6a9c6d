"""Phrase- and word-level hard negatives by scene-graph rewriting (UNIMO §2.1 "Text Rewriting" and App. A
"Data Augmentations"): build object, attribute and relation vocabularies over all captions, replace one
node of a caption's scene graph with a similar other entry of its vocabulary, rank the rewrites by
fluency and keep the top N (100 in the paper). Embedding neighbours include synonyms, hypernyms and
inflections, which would make "hard negatives" that still describe the image: ``refuse_related`` drops
them with a WordNet check (``wordnet_filter``) once per vocabulary, and the rewriter counts, per caption
node, the replacements that were refused.

Pure functions over ANN_PARSE rows (dicts as ``pyarrow.Table.to_pylist`` gives them). The Beam stage
(``pipelines/stages/rewrite.py``) builds the vocabulary with ``VocabularyCombiner`` mixed into a
``beam.CombineFn``, the neighbours once with ``build_similar``, and calls ``SceneGraphRewriter.rewrite``
per caption.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from pipelines.annotators.similar import Encode, nearest_entries, variant_key
from pipelines.dedup import normalise_text as normalize
from schemas.stages import SceneGraphNegativeConfig

KINDS = ("object", "attribute", "relation")
METHOD = "scene_graph"
KIND = "hard_negative"


def graph_entries(parse_row: dict) -> Iterable[tuple[str, str]]:
    """(kind, entry) of every node of one parse row, normalised; empty names are no entries."""
    for obj in parse_row["objects"]:
        if normalize(obj["name"]):
            yield "object", normalize(obj["name"])
        for attribute in obj["attributes"]:
            if normalize(attribute):
                yield "attribute", normalize(attribute)
    for relation in parse_row["relations"]:
        if normalize(relation["relation"]):
            yield "relation", normalize(relation["relation"])


@dataclass(frozen=True)
class Vocabulary:
    """Per kind, (entry, count) sorted by count desc then entry: the same whatever order it was built in."""

    entries: dict[str, tuple[tuple[str, int], ...]]


class VocabularyCombiner:
    """CombineFn semantics over parse rows (no Beam import: the stage mixes this into a ``beam.CombineFn``)."""

    def create_accumulator(self) -> dict[str, Counter]:
        return {kind: Counter() for kind in KINDS}

    def add_input(self, accumulator: dict[str, Counter], parse_row: dict) -> dict[str, Counter]:
        for kind, entry in graph_entries(parse_row):
            accumulator[kind][entry] += 1
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[dict[str, Counter]]) -> dict[str, Counter]:
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for kind in KINDS:
                merged[kind].update(accumulator[kind])
        return merged

    def extract_output(self, accumulator: dict[str, Counter]) -> Vocabulary:
        return Vocabulary({kind: tuple(sorted(accumulator[kind].items(), key=lambda item: (-item[1], item[0])))
                           for kind in KINDS})


def build_vocabulary(parse_rows: Iterable[dict]) -> Vocabulary:
    """The vocabulary of ``parse_rows`` without Beam."""
    combiner = VocabularyCombiner()
    accumulator = combiner.create_accumulator()
    for row in parse_rows:
        combiner.add_input(accumulator, row)
    return combiner.extract_output(accumulator)


Similar = dict[str, dict[str, list[str]]]  # kind -> entry -> similar entries, best first
Refused = dict[str, dict[str, list[tuple[str, str]]]]  # kind -> entry -> (neighbour, reason) refused
Refuse = Callable[[str, str, str], "str | None"]  # (kind, original, replacement) -> reason, or None


def build_similar(vocabulary: Vocabulary, encode: Encode, config: SceneGraphNegativeConfig,
                  per_node: int | None = None) -> Similar:
    """Each entry's ``per_node`` (default ``candidates_per_node``) nearest entries of its own kind, once
    per vocabulary."""
    similar: Similar = {}
    for kind in KINDS:
        entries = [entry for entry, _ in vocabulary.entries[kind]]
        counts = [count for _, count in vocabulary.entries[kind]]
        similar[kind] = nearest_entries(entries, counts, encode, per_node or config.candidates_per_node,
                                        config.min_count)
    return similar


@dataclass(frozen=True)
class SimilarNodes:
    """The replacements the rewriter may use, and those refused as related to the original (with why)."""

    similar: Similar
    refused: Refused


def refuse_related(wide: Similar, refuse: Refuse, per_node: int) -> SimilarNodes:
    """From neighbour lists longer than needed, each entry's first ``per_node`` that ``refuse`` lets pass;
    the refused ones met on the way are kept with their reason, to be counted where they would be used."""
    similar: Similar = {kind: {} for kind in wide}
    refused: Refused = {kind: {} for kind in wide}
    for kind, by_entry in wide.items():
        for entry, neighbours in by_entry.items():
            kept, dropped = [], []
            for neighbour in neighbours:
                if len(kept) == per_node:
                    break
                reason = refuse(kind, entry, neighbour)
                if reason is None:
                    kept.append(neighbour)
                else:
                    dropped.append((neighbour, reason))
            similar[kind][entry] = kept
            if dropped:
                refused[kind][entry] = dropped
    return SimilarNodes(similar, refused)


@dataclass(frozen=True)
class Node:
    """One replaceable node of a caption: its vocabulary entry and where it stands in the text."""

    kind: str
    name: str
    start: int
    end: int
    exclude: frozenset[str] = frozenset()  # replacements that would repeat a sibling (another attribute)


def _occurrences(text: str, phrase: str) -> list[tuple[int, int]]:
    pattern = r"(?<!\w)" + r"\s+".join(map(re.escape, phrase.split())) + r"(?!\w)"
    return [(m.start(), m.end()) for m in re.finditer(pattern, text, flags=re.IGNORECASE)]


def _nearest(text: str, phrase: str, lo: int, hi: int, anchor: int,
             taken: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The occurrence of ``phrase`` inside [lo, hi) nearest to ``anchor``, else the one nearest to that
    range; never one that overlaps an object's head noun."""
    spans = [(s, e) for s, e in _occurrences(text, phrase) if all(e <= ts or s >= te for ts, te in taken)]
    if not spans:
        return None
    return min(spans, key=lambda span: (not (lo <= span[0] and span[1] <= hi),
                                        max(lo - span[1], span[0] - hi, 0), abs(span[0] - anchor), span[0]))


def locate_nodes(parse_row: dict) -> list[Node]:
    """Every node of the row's scene graph found in its text. Objects carry their head-noun span;
    attributes are searched nearest before their noun, relations between their two objects. A node the
    text does not contain (a lemmatised relation, a bad span) cannot be rewritten and is left out."""
    text, objects = parse_row["text"], parse_row["objects"]
    heads = [(o["start"], o["end"]) for o in objects]
    valid = [0 <= s < e <= len(text) and normalize(o["name"]) != "" for o, (s, e) in zip(objects, heads, strict=True)]
    nodes = [
        Node("object", normalize(o["name"]), s, e) for o, (s, e), ok in zip(objects, heads, valid, strict=True) if ok
    ]
    taken = [span for span, ok in zip(heads, valid, strict=True) if ok]
    for obj, (start, _), ok in zip(objects, heads, valid, strict=True):
        attributes = {normalize(a) for a in obj["attributes"]} - {""}
        for attribute in sorted(attributes) if ok else ():
            span = _nearest(text, attribute, 0, start, start, taken)
            if span:
                nodes.append(Node("attribute", attribute, *span, frozenset(attributes)))
    for relation in parse_row["relations"]:
        name = normalize(relation["relation"])
        ends = [relation["subject"], relation["object"]]
        if not name or not all(0 <= i < len(objects) and valid[i] for i in ends):
            continue
        (_, e1), (s2, _) = sorted(heads[i] for i in ends)
        span = _nearest(text, name, e1, s2, e1, taken)
        if span:
            nodes.append(Node("relation", name, *span))
    return nodes


_VOWEL_WITH_A = ("uni", "use", "usu", "eu", "one", "once", "ewe", "ufo")
_SILENT_H = ("hour", "honest", "honor", "honour", "heir")


def article_for(word: str) -> str:
    """``a`` or ``an`` by the sound of ``word`` (spelling rules with the common exceptions)."""
    word = word.lower()
    if word.startswith(_SILENT_H):
        return "an"
    if word.startswith(_VOWEL_WITH_A):
        return "a"
    return "an" if word and word[0] in "aeiou" else "a"


_ARTICLE_BEFORE = re.compile(r"(?<!\w)(a|an)(\s+)$", flags=re.IGNORECASE)


def replace_span(text: str, start: int, end: int, replacement: str) -> str:
    """``text`` with [start, end) replaced, an ``a``/``an`` right before it fixed to the new word and the
    original's capital first letter kept."""
    old = text[start:end]
    if old[:1].isupper():
        replacement = replacement[:1].upper() + replacement[1:]
    head = text[:start]
    article = _ARTICLE_BEFORE.search(head)
    if article:
        fixed = article_for(replacement)
        if article.group(1)[0].isupper():
            fixed = fixed.capitalize()
        head = head[:article.start()] + fixed + article.group(2)
    return head + replacement + text[end:]


def _is_plural(phrase: str) -> bool:
    return variant_key(phrase) != phrase


def _fits(node: Node, candidate: str) -> bool:
    """A replacement keeps the grammar around it: an object keeps its number ("a dog" never becomes
    "a cats"), an attribute does not repeat a sibling ("a red and white bus" never "a white and white bus")."""
    if node.kind == "object" and _is_plural(candidate) != _is_plural(node.name):
        return False
    return candidate not in node.exclude


class Scorer(Protocol):
    def score_many(self, texts: list[str]) -> list[float]: ...


def candidates(parse_row: dict, similar: Similar, per_node: int, refused: Refused | None = None,
               tally: Counter | None = None) -> list[tuple[str, str]]:
    """(rewrite, detail) of every one-node replacement, in node order, distinct and never the original.
    ``tally`` counts, by reason, the ``refused`` replacements of every node found."""
    text = parse_row["text"]
    seen = {normalize(text)}
    found = []
    for node in locate_nodes(parse_row):
        if tally is not None and refused:
            tally.update(reason for _, reason in refused.get(node.kind, {}).get(node.name, []))
        for candidate in similar.get(node.kind, {}).get(node.name, [])[:per_node]:
            if not _fits(node, candidate):
                continue
            rewrite = replace_span(text, node.start, node.end, candidate)
            if normalize(rewrite) not in seen:
                seen.add(normalize(rewrite))
                found.append((rewrite, f"{node.kind}: {node.name} -> {candidate}"))
    return found


class SceneGraphRewriter:
    """Hard negatives of one caption: every one-node rewrite, scored by ``lm`` (higher = more fluent),
    the best ``config.top_n`` kept in (score desc, text) order. ``refusals`` counts, by reason, the
    replacements ``refused`` at the nodes of the captions rewritten so far."""

    def __init__(self, similar: Similar, lm: Scorer, config: SceneGraphNegativeConfig,
                 refused: Refused | None = None):
        self.similar, self.lm, self.config, self.refused = similar, lm, config, refused or {}
        self.refusals: Counter = Counter()

    def rewrite(self, parse_row: dict) -> list[dict]:
        found = candidates(parse_row, self.similar, self.config.candidates_per_node, self.refused, self.refusals)
        scores = self.lm.score_many([text for text, _ in found]) if found else []
        ranked = sorted(zip(scores, found, strict=True), key=lambda item: (-item[0], item[1][0]))[:self.config.top_n]
        return [{"key": parse_row["key"], "source": parse_row["source"], "text_index": parse_row["text_index"],
                 "kind": KIND, "method": METHOD, "text": text, "score": float(score), "detail": detail}
                for score, (text, detail) in ranked]
