"""The per-shard logic of ``pack`` (``pipelines/stages/pack.py`` is its Beam shell): one raw shard joined
with its sidecar tables into self-contained training samples, one list per task, exactly as the contract
``schemas/packed.py`` says (members, json fields). Pure Python over pyarrow and numpy: a test or a
notebook calls ``ShardPacker.pack`` without a pipeline.

- Samples ``clean`` removed (``rejects/dedup``, ``rejects/decontam``) are left out before anything else,
  counted per reason; items that point at a removed sample (a retrieved sentence, a related image or text,
  a TF-IDF negative taken from another caption) are dropped too, so no removed key enters ``packed/``.
- A unit (a caption, an image, a text, a weak pair) whose sidecar row is missing because its stage refused
  it is a reject naming the table (``missing_row``); a whole missing table stops the run before any
  pipeline starts (``check_inputs``), saying which stage to run.
- Tables of other shards (the retrieved sentences' phrases, related images with their regions) are read
  for one job at a time and only for the rows it uses (a related image's detect row, raw index row and
  bytes; a retrieved sentence's parse row), so that no training worker ever needs random access and no
  packing worker holds more than one shard's worth of rows, however many shards the corpus has (issue 15).
  A shard's tables are released when its job ends.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from pipelines import storage
from pipelines.sidecar_tables import (
    ShardInput,
    raw_shards,
    read_shard_input,
    sample_texts,
    table_path,
)
from schemas import layout
from schemas import packed as contract
from schemas.config_build import output_params
from schemas.keys import shard_of
from schemas.records import Modality, Reason, Reject
from schemas.stages import RESERVED_LINKS, CmclPackConfig

STAGE = "pack"
DETECT, PARSE, REWRITE = layout.ann("detect"), layout.ann("parse"), layout.ann("rewrite")
RELATED_IMAGES, RELATED_TEXTS = (layout.links(name) for name in RESERVED_LINKS)
IMAGE_MODALITIES = ("pair", "image")

# Which stage writes each input folder: the hint of a missing table.
HINTS = {
    DETECT: "run `unicorpus annotate detect`",
    PARSE: "run `unicorpus annotate parse`",
    REWRITE: "run `unicorpus annotate rewrite`",
    layout.LINKS: "run `unicorpus retrieve`",
}


@dataclass(frozen=True)
class WeakEntry:
    """A ``retrieval.retrieve.weak_pairs`` entry as pack uses it."""

    name: str
    images: tuple[str, ...]
    texts: tuple[str, ...]
    regions: bool  # links/<name>-regions exists (retrieval.retrieve.phrase_regions)


@dataclass(frozen=True)
class PackSettings:
    """Everything the packed bytes depend on besides the tables (picklable: travels to portable workers)."""

    root: str
    tasks: tuple[str, ...]  # base tasks, then pairs_aligned_<X>
    cmcl: CmclPackConfig = field(default_factory=CmclPackConfig)
    weak: tuple[WeakEntry, ...] = ()
    sources: tuple[str, ...] = ()  # every source of the config: removed keys and shard counts of all of them

    def params(self) -> dict:
        return {
            "tasks": list(self.tasks),
            "cmcl": output_params(self.cmcl),
            "weak": [[w.name, list(w.images), list(w.texts), w.regions] for w in self.weak],
            "contract": contract.__name__,
        }


@dataclass
class Packed:
    """One packed sample: its key and its members (extension, bytes) in tar order."""

    key: str
    members: list[tuple[str, bytes]]


@dataclass
class TaskShard:
    """One task's share of a raw shard: ``units == len(samples) + len(rejects)``."""

    samples: list[Packed] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    units: int = 0


def task_tables(settings: PackSettings, task: str, source: str, modalities: set[str]) -> list[str]:
    """The sidecar folders ``task`` reads for a shard of ``source`` (none when the task has no unit there)."""
    pairs, images = "pair" in modalities, bool(modalities & set(IMAGE_MODALITIES))
    if task in (contract.PAIRS,) or task.startswith(contract.ALIGNED_PREFIX):
        return [DETECT, PARSE] if pairs else []
    if task == contract.IMAGES:
        return [DETECT] if "image" in modalities else []
    if task == contract.TEXTS:
        return [PARSE] if "text" in modalities else []
    if task == contract.TAG_PAIRS:
        return [DETECT] if images else []
    if task == contract.WEAK_PAIRS:
        tables = [table for w in settings.weak if source in w.images
                  for table in [layout.links(w.name)] + ([layout.links(f"{w.name}-regions")] if w.regions else [])]
        return [DETECT, *tables] if tables and images else []
    if task == contract.CMCL:
        return ([DETECT, PARSE, REWRITE, RELATED_IMAGES,
                 RELATED_TEXTS] if pairs else [])
    raise ValueError(f"unknown packed task {task!r}")


def table_folders(settings: PackSettings, source: str) -> list[str]:
    """The folders of every input table ``check_tables`` may ask about for a shard of ``source`` (those of a
    shard with every modality: a shard's own are among them)."""
    every = {modality.value for modality in Modality}
    folders = dict.fromkeys(folder for task in settings.tasks for folder in task_tables(settings, task, source, every))
    return [storage.join(settings.root, folder, source) for folder in folders]


def hint(folder: str) -> str:
    return HINTS.get(folder, HINTS[layout.LINKS])


class ShardPacker:
    """Packs raw shards; ``setup`` loads what every shard shares (removed keys, shard counts) once per worker.
    Nothing else outlives a shard's job: its tables and the rows it read of other shards go with its view."""

    def __init__(self, settings: PackSettings):
        self.settings = settings
        self.removed: dict[str, str] = {}
        self.shard_counts: dict[str, int] = {}

    def setup(self) -> None:
        from pipelines.stages.clean import removed_reasons

        root = self.settings.root
        self.removed = {key: reason for source in self.settings.sources
                        for key, reason in removed_reasons(root, source).items()}
        self.shard_counts = {source: len(raw_shards(root, source)) for source in self.settings.sources}

    def _shard_of(self, source: str, key: str) -> int:
        if source not in self.shard_counts:
            self.shard_counts[source] = len(raw_shards(self.settings.root, source))
        return shard_of(key, self.shard_counts[source])

    def by_shard(self, links: list[tuple[str, str]]) -> dict[tuple[str, int], set[str]]:
        """(source, key) pairs of any shards -> the keys wanted of each (source, shard)."""
        out: dict[tuple[str, int], set[str]] = {}
        for source, key in links:
            out.setdefault((source, self._shard_of(source, key)), set()).add(key)
        return out

    # --- one shard --------------------------------------------------------------------------------------

    def pack(self, source: str, shard: int) -> tuple[Iterator[tuple[str, TaskShard]], Counter]:
        """Every configured task's samples and rejects for one raw shard, made one task at a time as they are
        taken (a shard's samples of every task at once were most of a worker's memory: issue 15), and the raw
        samples left out (removed by ``clean``) by reason."""
        shard_input = read_shard_input(self.settings.root, source, shard, keep_removed=True)  # left out here, by reason
        rows = shard_input.rows
        left_out = Counter(self.removed[row["key"]] for row in rows if row["key"] in self.removed)
        view = _ShardView(self, shard_input, [row for row in rows if row["key"] not in self.removed])
        return self._tasks(view), left_out

    def _tasks(self, view: _ShardView) -> Iterator[tuple[str, TaskShard]]:
        try:
            for task in self.settings.tasks:
                yield task, view.task(task)
        finally:
            view.close()


class _ShardView:
    """One raw shard's kept samples and its own tables, loaded on first use."""

    def __init__(self, packer: ShardPacker, shard_input: ShardInput, rows: list[dict]):
        self.packer, self.input, self.rows = packer, shard_input, rows
        self.source, self.shard = shard_input.source, shard_input.shard
        self._tables: dict[str, list[dict]] = {}
        self._by_key: dict[str, dict] = {}  # grouped (``_grouped``) or keyed (``_keyed``) rows of a folder
        self._image_parts: dict[str, tuple] = {}

    def close(self) -> None:
        self.input.close()

    def _table(self, folder: str) -> list[dict]:
        """This shard's table of ``folder``, read once per job."""
        if folder not in self._tables:
            self._tables[folder] = read_rows(table_path(self.packer.settings.root, folder, self.source, self.shard),
                                             folder)
        return self._tables[folder]

    def _grouped(self, folder: str, index: Callable[[dict], object]) -> dict[object, list[dict]]:
        """This shard's rows of ``folder`` grouped by ``index`` (rewrites of a caption, links of a query)."""
        if folder not in self._by_key:
            out: dict = {}
            for row in self._table(folder):
                out.setdefault(index(row), []).append(row)
            self._by_key[folder] = out
        return self._by_key[folder]

    def detect(self) -> dict[str, dict]:
        return self._keyed(DETECT)

    def parse(self) -> dict[tuple[str, int], dict]:
        return self._keyed(PARSE)

    def _keyed(self, folder: str) -> dict:
        if folder not in self._by_key:
            self._by_key[folder] = {keyed_by(folder, row): row for row in self._table(folder)}
        return self._by_key[folder]

    def _other_rows(self, folder: str, wanted: dict[tuple[str, int], set[str]]) -> dict[tuple[str, int], dict]:
        """The rows of ``wanted`` keys in ``folder`` tables of any shards, keyed as ``keyed_by``."""
        root = self.packer.settings.root
        return {(source, shard): {keyed_by(folder, row): row for row in
                                  read_rows(table_path(root, folder, source, shard), folder, keys)}
                for (source, shard), keys in wanted.items()}

    def _location(self, folder: str) -> str:
        return f"{folder}/{self.source}/{layout.table_name(self.shard)}"

    def _missing(self, task: str, key: str, folder: str, what: str) -> Reject:
        return Reject(self.source, self._location(folder), Reason.MISSING_ROW,
                      f"{task}: no {folder} row for {what} ({folder.split('/')[-1]} refused it: see "
                      f"rejects/ of that stage)", key)

    # units
    def images(self, modalities: tuple[str, ...]) -> list[dict]:
        return [row for row in self.rows if row["modality"] in modalities]

    def captions(self) -> list[tuple[dict, int, str]]:
        return [(row, index, text) for row in self.rows if row["modality"] == "pair"
                for index, text in sample_texts(row)]

    # tasks
    def task(self, task: str) -> TaskShard:
        modalities = {row["modality"] for row in self.input.rows}  # removed samples too: the tables cover them
        if not task_tables(self.packer.settings, task, self.source, modalities):
            return TaskShard()  # no unit of the task in this shard (a text source has no pairs)
        builders = {contract.PAIRS: self._pairs, contract.IMAGES: self._images, contract.TEXTS: self._texts,
                    contract.TAG_PAIRS: self._tag_pairs, contract.WEAK_PAIRS: self._weak_pairs,
                    contract.CMCL: self._cmcl}
        if task in builders:
            return builders[task](task)
        if task.startswith(contract.ALIGNED_PREFIX):
            return self._aligned(task, int(task[len(contract.ALIGNED_PREFIX):]))
        raise ValueError(f"unknown packed task {task!r}")

    def _image_part(self, row: dict, task: str) -> tuple[tuple[str, bytes], dict, list[tuple[str, bytes]]] | Reject:
        """The image member, regions json and ``.npy`` members of a sample; made once per image and shard, as
        every caption of every task repeats them."""
        detect = self.detect().get(row["key"])
        if detect is None:
            return self._missing(task, row["key"], DETECT, "the image")
        if row["key"] not in self._image_parts:
            regions, arrays = region_members(detect)
            self._image_parts[row["key"]] = (row["image_format"], self.input.image_bytes(row)), regions, arrays
        return self._image_parts[row["key"]]

    def _caption_part(self, row: dict, index: int, task: str) -> list[dict] | Reject:
        parse = self.parse().get((row["key"], index))
        if parse is None:
            return self._missing(task, row["key"], PARSE, f"text {index}")
        return phrases_of(parse)

    def _pair_units(self, task: str, out: TaskShard) -> list[tuple[dict, int, str, tuple, dict, list, list]]:
        """Captions with their image part and phrases; rejects appended to ``out``."""
        units = []
        captions = self.captions()
        out.units += len(captions)
        for row, index, text in captions:
            image = self._image_part(row, task)
            phrases = image if isinstance(image, Reject) else self._caption_part(row, index, task)
            if isinstance(phrases, Reject):
                out.rejects.append(phrases)
                continue
            units.append((row, index, text, *image, phrases))
        return units

    def _common(self, task: str, key: str, row: dict, modality: str, text_index: int | None) -> dict:
        return {"key": key, "sample_key": row["key"], "source": self.source, "task": task, "modality": modality,
                "text_index": text_index}

    def _pairs(self, task: str) -> TaskShard:
        out = TaskShard()
        for row, index, text, image, regions, arrays, phrases in self._pair_units(task, out):
            key = caption_key(row["key"], index)
            meta = {**self._common(task, key, row, "pair", index), "regions": regions, "phrases": phrases}
            out.samples.append(sample(key, image, text, meta, arrays))
        return out

    def _image_units(self, task: str, modalities: tuple[str, ...], out: TaskShard) -> list[tuple]:
        """Kept images of ``modalities`` with their image part; rejects appended to ``out``."""
        rows = self.images(modalities)
        out.units += len(rows)
        units = []
        for row in rows:
            image = self._image_part(row, task)
            if isinstance(image, Reject):
                out.rejects.append(image)
            else:
                units.append((row, *image))
        return units

    def _images(self, task: str) -> TaskShard:
        out = TaskShard()
        for row, image_member, regions, arrays in self._image_units(task, ("image",), out):
            meta = {**self._common(task, row["key"], row, "image", None), "regions": regions}
            out.samples.append(sample(row["key"], image_member, None, meta, arrays))
        return out

    def _texts(self, task: str) -> TaskShard:
        out = TaskShard()
        units = [(row, index, text) for row in self.rows if row["modality"] == "text"
                 for index, text in sample_texts(row)]
        out.units = len(units)
        for row, index, text in units:
            phrases = self._caption_part(row, index, task)
            if isinstance(phrases, Reject):
                out.rejects.append(phrases)
                continue
            key = row["key"] if index == 0 else caption_key(row["key"], index)
            meta = {**self._common(task, key, row, "text", index), "phrases": phrases}
            out.samples.append(sample(key, None, text, meta, []))
        return out

    def _tag_pairs(self, task: str) -> TaskShard:
        """mu-VLA R-T: an image and its tag sequence (the tag query of retrieval, each tag a phrase)."""
        out = TaskShard()
        for row, image_member, regions, arrays in self._image_units(task, IMAGE_MODALITIES, out):
            text, phrases = tag_sequence(regions["labels"])
            if not text:
                out.rejects.append(Reject(self.source, self._location(DETECT), Reason.NO_TAGS,
                                          f"{task}: the image has no region label", row["key"]))
                continue
            meta = {**self._common(task, row["key"], row, "pair", None), "regions": regions, "phrases": phrases}
            out.samples.append(sample(row["key"], image_member, text, meta, arrays))
        return out

    def _weak_pairs(self, task: str) -> TaskShard:
        """mu-VLA R-P (§3.3.2): every retrieved sentence of every image, with its score, rank, phrases and
        phrase-region links; one sample per link row."""
        out = TaskShard()
        kept = {row["key"]: row for row in self.images(IMAGE_MODALITIES)}
        for weak in self.packer.settings.weak:
            if self.source not in weak.images:
                continue
            links = [row for row in self._table(layout.links(weak.name)) if row["query_key"] in kept]
            parses = self._other_rows(PARSE, self.packer.by_shard(
                [(link["source"], link["key"]) for link in links if link["key"] not in self.packer.removed]))
            regions_links: dict[tuple, list[dict]] = {}
            if weak.regions:
                for link in self._table(layout.links(f"{weak.name}-regions")):
                    regions_links.setdefault((link["query_key"], link["key"], link["text_index"]), []).append(link)
            out.units += len(links)
            for link in sorted(links, key=lambda r: (r["query_key"], r["rank"])):
                row = kept[link["query_key"]]
                if link["key"] in self.packer.removed:
                    out.rejects.append(Reject(self.source, self._location(layout.links(weak.name)),
                                              Reason(self.packer.removed[link["key"]]),
                                              f"{task}: the retrieved sentence {link['key']} was removed by clean",
                                              row["key"]))
                    continue
                image = self._image_part(row, task)
                phrases = image if isinstance(image, Reject) else self._phrases(task, row["key"], link, parses)
                if isinstance(phrases, Reject):
                    out.rejects.append(phrases)
                    continue
                image_member, regions, arrays = image
                key = f"{row['key']}_{weak.name}_r{link['rank']}"
                linked = sorted(regions_links.get((row["key"], link["key"], link["text_index"]), []),
                                key=lambda r: (r["phrase_start"], r["region"]))
                meta = {**self._common(task, key, row, "pair", None), "regions": regions, "phrases": phrases,
                        "score": _round(link["score"]), "rank": link["rank"], "text_key": link["key"],
                        "text_source": link["source"], "weak_pairs": weak.name,
                        "retrieved_text_index": link["text_index"],
                        "phrase_regions": [{"start": r["phrase_start"], "end": r["phrase_start"] + len(r["phrase"]),
                                            "phrase": r["phrase"], "region": r["region"],
                                            "score": _round(r["score"])} for r in linked]}
                out.samples.append(sample(key, image_member, link["text"], meta, arrays))
        return out

    def _phrases(self, task: str, image_key: str, link: dict, parses: dict) -> list[dict] | Reject:
        """The noun phrases of a retrieved sentence, from the rows ``parses`` read of the ann/parse table of the
        shard that holds it."""
        source, key = link["source"], link["key"]
        shard = self.packer._shard_of(source, key)
        row = parses[(source, shard)].get((key, link["text_index"]))
        if row is not None:
            return phrases_of(row)
        return Reject(self.source, f"{PARSE}/{source}/{layout.table_name(shard)}", Reason.MISSING_ROW,
                      f"{task}: no ann/parse row for the retrieved sentence {key} text {link['text_index']}",
                      image_key)

    def _cmcl(self, task: str) -> TaskShard:
        """UNIMO §2.1, App. A: a pair with its back-translations, rewrite hard negatives and related items
        inlined (images with their regions and features), so a training worker reads nothing else."""
        out, settings = TaskShard(), self.packer.settings.cmcl
        rewrites = self._grouped(REWRITE, lambda row: (row["key"], row["text_index"]))
        related_texts = self._grouped(RELATED_TEXTS, lambda row: (row["query_key"], row["query_text_index"]))
        pairs = {row["key"] for row in self.rows if row["modality"] == "pair"}
        related_images = {query: first_kept(links, settings.related_images, self.packer.removed)
                          for query, links in self._grouped(RELATED_IMAGES, lambda row: row["query_key"]).items()
                          if query in pairs}
        images_of = self._related_sources([link for links in related_images.values() for link in links])
        removed = self.packer.removed
        for row, index, text, image, regions, arrays, phrases in self._pair_units(task, out):
            found = rewrites.get((row["key"], index))
            if not found:
                out.rejects.append(self._missing(task, row["key"], REWRITE, f"text {index}"))
                continue
            positives = [{"text": r["text"], "method": r["method"]} for r in found if r["kind"] == "positive"]
            negatives = hard_negatives([r for r in found if r["kind"] == "hard_negative"
                                        and _negative_source_key(r) not in removed], settings.negatives)
            texts = [{"key": r["key"], "source": r["source"], "text_index": r["text_index"], "text": r["text"],
                      "score": _round(r["score"])}
                     for r in sorted(related_texts.get((row["key"], index), []), key=lambda r: r["rank"])
                     if r["key"] not in removed][:settings.related_texts]
            related = self._related_images(task, row["key"], related_images.get(row["key"], []), images_of)
            if isinstance(related, Reject):
                out.rejects.append(related)
                continue
            images, members = related
            key = caption_key(row["key"], index)
            meta = {**self._common(task, key, row, "pair", index), "regions": regions, "phrases": phrases,
                    "positives": positives[:settings.positives], "negatives": negatives,
                    "related_texts": texts, "related_images": images}
            out.samples.append(sample(key, image, text, meta, arrays + members))
        return out

    def _related_sources(self, links: list[dict]) -> dict[tuple[str, int], tuple[dict, dict]]:
        """For each (source, shard) holding a related image of ``links``: those images' (format, bytes) and
        their ann/detect rows, read of that shard alone (its tar closed again: a job may touch every shard)."""
        wanted = self.packer.by_shard([(link["source"], link["key"]) for link in links])
        detects = self._other_rows(DETECT, wanted)
        out = {}
        for (source, shard), keys in wanted.items():
            shard_input = read_shard_input(self.packer.settings.root, source, shard,
                                           ["key", "image_format", "image_offset", "image_size"])
            try:
                images = {row["key"]: (row["image_format"], shard_input.image_bytes(row))
                          for row in shard_input.rows if row["key"] in keys}
            finally:
                shard_input.close()
            out[(source, shard)] = images, detects[(source, shard)]
        return out

    def _related_images(self, task: str, query_key: str, links: list[dict],
                        images_of: dict[tuple[str, int], tuple[dict, dict]]) -> tuple[list[dict], list] | Reject:
        """``links`` (``first_kept``), each inlined as ``related_<i>.<ext>`` with its regions and ``.npy``
        members, from what ``images_of`` read of their shards."""
        entries, members = [], []
        for link in links:
            source, key, i = link["source"], link["key"], len(entries)
            shard = self.packer._shard_of(source, key)
            images, detects = images_of[(source, shard)]
            detect = detects.get(key)
            if key not in images or detect is None:
                folder = layout.raw(source) if key not in images else f"{DETECT}/{source}"
                return Reject(self.source, f"{folder}/{layout.table_name(shard)}", Reason.MISSING_ROW,
                              f"{task}: no {folder} row for the related image {key}", query_key)
            regions, arrays = region_members(detect)
            image_format, data = images[key]
            member = f"related_{i}.{image_format}"
            members += [(member, data)]
            members += [(f"related_{i}.{name}", data) for name, data in arrays]
            entries.append({"key": key, "source": source, "score": _round(link["score"]), "member": member,
                            "regions": regions})
        return entries, members

    def _aligned(self, task: str, percent: int) -> TaskShard:
        """mu-VLA §1, App. A Table 6: the pairs of the shard, ``percent`` % aligned, the rest carrying a
        caption of another image (``derangement``)."""
        out = TaskShard()
        units = self._pair_units(task, out)
        donors = derangement([(u[0]["key"], u[1]) for u in units], percent)
        for unit, donor in zip(units, donors, strict=True):
            row, index, text, image, regions, arrays, phrases = unit
            if donor is None:
                out.rejects.append(Reject(self.source, self._location(PARSE), Reason.NO_OTHER_TEXT,
                                          f"{task}: no caption of another image in this shard to take", row["key"]))
                continue
            donor_unit = units[donor]
            aligned = donor_unit is unit
            key = caption_key(row["key"], index)
            meta = {**self._common(task, key, row, "pair", index), "regions": regions,
                    "phrases": donor_unit[6], "aligned": aligned, "text_from": donor_unit[0]["key"],
                    "text_from_index": donor_unit[1]}
            out.samples.append(sample(key, image, donor_unit[2], meta, arrays))
        return out


# --- pure helpers ------------------------------------------------------------------------------------


def first_kept(links: list[dict], count: int, removed: dict[str, str]) -> list[dict]:
    """The first ``count`` links by rank whose item ``clean`` did not remove: the related images a cmcl sample
    inlines (UNIMO App. A), and the only ones pack reads of other shards."""
    return [link for link in sorted(links, key=lambda r: r["rank"]) if link["key"] not in removed][:count]


def keyed_by(folder: str, row: dict) -> object:
    """How pack looks a row up: by sample key (ann/detect), by (key, text_index) (ann/parse)."""
    return row["key"] if folder == DETECT else (row["key"], row["text_index"])


def caption_key(sample_key: str, index: int) -> str:
    """The packed key of caption ``index`` of a sample: ``<key>_t<index>`` (no dot: WebDataset-safe)."""
    return f"{sample_key}_t{index}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def phrases_of(parse_row: dict) -> list[dict]:
    return [{"text": p["text"], "start": p["start"], "end": p["end"]} for p in parse_row["noun_phrases"]]


def tag_sequence(labels: list[str]) -> tuple[str, list[dict]]:
    """The image's tag sequence (mu-VLA R-T; ``retrieval.embed.tag_query``: distinct labels in score order)
    and each tag's character span as a phrase (whole-phrase masking of a tag)."""
    from retrieval.embed import tag_query

    text = tag_query(labels)
    phrases, start = [], 0
    for tag in dict.fromkeys(" ".join(label.split()) for label in labels if label.strip()):
        phrases.append({"text": tag, "start": start, "end": start + len(tag)})
        start += len(tag) + 1
    return text, phrases


def region_members(detect_row: dict) -> tuple[dict, list[tuple[str, bytes]]]:
    """The ``regions`` json of an ann/detect row and its ``.npy`` members (float16 features and class
    distributions, written only when every region has them)."""
    regions = detect_row["regions"]
    features = [r["feature"] for r in regions]
    probs = [r["class_probs"] for r in regions]
    has_features = bool(regions) and all(f is not None for f in features)
    has_probs = bool(regions) and all(p is not None for p in probs)
    meta = {"width": detect_row["width"], "height": detect_row["height"],
            "boxes": [[_round(v) for v in r["box"]] for r in regions], "labels": [r["label"] for r in regions],
            "scores": [_round(r["score"]) for r in regions], "origins": [r["origin"] for r in regions],
            "has_features": has_features, "has_probs": has_probs}
    arrays = []
    if has_features:
        arrays.append((contract.REGION_FEATS, npy_bytes(np.asarray(features, dtype=np.float16))))
    if has_probs:
        arrays.append((contract.REGION_PROBS, npy_bytes(np.asarray(probs, dtype=np.float16))))
    return meta, arrays


def read_rows(path: str, folder: str, keys: set[str] | None = None) -> list[dict]:
    """The rows of a sidecar table of ``folder`` (ann/detect ones column-wise: ``detect_rows``), only
    those of ``keys`` when given; a ValueError saying which stage to run when it is missing."""
    table = _read_table(path, folder, keys)
    return detect_rows(table) if folder == DETECT else table.to_pylist()


def _read_table(path: str, folder: str, keys: set[str] | None):
    """A whole table, or a copy of the rows of ``keys`` only (the whole one is let go at once)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from schemas.tables import check_version

    if not storage.exists(path):
        raise ValueError(f"no {path}; {hint(folder)} first")
    with storage.open_read(path) as f:
        table = pq.ParquetFile(f).read()
    check_version(table.schema, path)
    if keys is None:
        return table
    return table.filter(pc.is_in(table.column("key"), value_set=pa.array(sorted(keys), pa.string())))


def detect_rows(table) -> list[dict]:
    """The rows of an ann/detect table with each region's ``feature`` and ``class_probs`` as float32 numpy
    arrays (or None), read column-wise: ``to_pylist`` makes a Python float of every feature value, which was
    most of pack's time (benchmarks/pack.py)."""
    regions = table.column("regions").combine_chunks()
    starts = regions.offsets.to_numpy()
    children = dict(zip([f.name for f in regions.type.value_type], regions.values.flatten(), strict=True))
    plain = {name: children[name].to_pylist() for name in ("box", "label", "score", "origin")}
    arrays = {name: _list_arrays(children[name]) for name in ("feature", "class_probs")}
    rows = table.drop_columns(["regions"]).to_pylist()
    for i, row in enumerate(rows):
        row["regions"] = [{"box": plain["box"][r], "label": plain["label"][r], "score": plain["score"][r],
                           "origin": plain["origin"][r], "feature": arrays["feature"][r],
                           "class_probs": arrays["class_probs"][r]} for r in range(starts[i], starts[i + 1])]
    return rows


def _list_arrays(lists) -> list[np.ndarray | None]:
    """Each element of a pyarrow list<float32> array as a numpy view (None for a null list)."""
    offsets = lists.offsets.to_numpy()
    values = lists.values.to_numpy(zero_copy_only=False)
    nulls = lists.is_null().to_numpy(zero_copy_only=False)
    return [None if nulls[i] else values[offsets[i]:offsets[i + 1]] for i in range(len(lists))]


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _negative_source_key(row: dict) -> str | None:
    """The sample whose caption a TF-IDF negative is (its ``detail`` JSON); None for scene-graph rewrites."""
    if row["method"] != "tfidf":
        return None
    return json.loads(row["detail"]).get("key")


def hard_negatives(rows: list[dict], count: int) -> list[dict]:
    """Up to ``count`` negatives taking turns between methods (scene graph, TF-IDF), each in its stored
    rank order, so that neither kind crowds the other out."""
    by_method: dict[str, list[dict]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    queues = [by_method[m] for m in sorted(by_method)]
    out: list[dict] = []
    depth = 0
    while len(out) < count and any(depth < len(q) for q in queues):
        for queue in queues:
            if depth < len(queue) and len(out) < count:
                row = queue[depth]
                out.append({"text": row["text"], "method": row["method"], "score": _round(row["score"]),
                            "key": _negative_source_key(row)})
        depth += 1
    return out


def _rank(key: str, index: int) -> bytes:
    return hashlib.sha1(f"{key}\0{index}".encode()).digest()


def derangement(units: list[tuple[str, int]], percent: int) -> list[int | None]:
    """For each (sample key, text index), the position of the unit whose text it carries (mu-VLA §1,
    App. A Table 6). Exactly ``round(n * percent / 100)`` units keep their own text: the first by a hash
    of the unit, so the aligned sets of rising ratios are nested. The rest are deranged among themselves
    by a cyclic shift over their hash order grouped by image: a shift by the largest group gives every one
    a caption of ANOTHER image (two captions of one image are both aligned). Where the unaligned units
    cannot be deranged among themselves (fewer than two images, or one image holding more than half), each
    takes the caption of another image from all units of the shard the same way; None where the shard has
    no other image at all. Deterministic: a function of the units alone."""
    n = len(units)
    keep = round(n * percent / 100)
    by_hash = sorted(range(n), key=lambda i: _rank(*units[i]))
    aligned, unaligned = by_hash[:keep], by_hash[keep:]
    out: list[int | None] = [None] * n
    for i in aligned:
        out[i] = i
    if not unaligned:
        return out
    shifted = _shift_by_image(units, unaligned)
    if shifted is None:
        donors = _shift_by_image(units, list(range(n)))
        shifted = {i: donors[i] for i in unaligned} if donors is not None else {i: None for i in unaligned}
    for i, donor in shifted.items():
        out[i] = donor
    return out


def _shift_by_image(units: list[tuple[str, int]], members: list[int]) -> dict[int, int] | None:
    """A derangement of ``members`` in which no unit gets a text of its own image, or None if none exists
    by this construction (fewer than twice the largest image group)."""
    order = sorted(members, key=lambda i: (hashlib.sha1(units[i][0].encode()).digest(), units[i][1]))
    groups = Counter(units[i][0] for i in members)
    largest = max(groups.values())
    if len(order) < 2 * largest:
        return None
    return {order[p]: order[(p + largest) % len(order)] for p in range(len(order))}


def sample(key: str, image: tuple[str, bytes] | None, text: str | None, meta: dict,
           arrays: list[tuple[str, bytes]]) -> Packed:
    """The members of one packed sample in tar order: image, txt, json, then ``.npy`` arrays and inlined items."""
    members = [image] if image is not None else []
    if text is not None:
        members.append(("txt", text.encode("utf-8")))
    members.append(("json", json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()))
    return Packed(key, members + list(arrays))


def check_tables(settings: PackSettings, source: str, shard: int, modalities: set[str],
                 exists: Callable[[str], bool] = storage.exists) -> list[str]:
    """The input tables of one shard, in a fixed order; a ValueError naming the first that is missing.
    ``exists``: a launcher checking every shard answers it from one listing of each ``table_folders``."""
    folders: list[str] = []
    for task in settings.tasks:
        for folder in task_tables(settings, task, source, modalities):
            if folder not in folders:
                folders.append(folder)
    paths = []
    for folder in folders:
        path = table_path(settings.root, folder, source, shard)
        if not exists(path):
            tasks = [t for t in settings.tasks if folder in task_tables(settings, t, source, modalities)]
            raise ValueError(f"pack {', '.join(tasks)}: no {path}; {hint(folder)} first, or leave the task out "
                             f"(pack.tasks) or the source out (pack.sources)")
        paths.append(path)
    return paths
