"""The embed stage: sentence-transformers vectors -> ``emb/<space>/<source>/NNNNN.parquet``.

Two embedding spaces, one model (mu-VLA §3.2: the same sentence-BERT embeds tag queries and
sentences, so their cosine compares them):
- ``text``: every text of every sample (``sidecar.sample_texts``: each COCO caption and VG region
  description, else the one text); empty texts are rejects. The model reads a text's first
  ``max_seq_length`` tokens (256 for MiniLM).
- ``tags``: one query per image, its ann/detect region labels as one sequence (``retrieval.embed.tag_query``);
  an image without labels is a reject (no_tags). Needs the detect stage's tables.

The shell runs ``EmbedAnnotator`` on ``run_sidecar_stage``; the model loads once per worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

from pipelines import storage
from pipelines.raw_shard import read_footer
from pipelines.results import StageResult
from pipelines.runner import RunnerConfig
from pipelines.sidecar_tables import REGION_LABELS, ShardInput, raw_shards, read_table_rows, sample_texts, table_path
from pipelines.stages.per_shard import ShardAnnotator, applicable_sources, has_modality, run_sidecar_stage
from schemas import layout
from schemas.config import CorpusConfig
from schemas.config_build import output_params, require_path
from schemas.keys import shard_name
from schemas.records import Reason, Reject
from schemas.stages import EmbedConfig
from schemas.tables import DIM_KEY, MODEL_KEY, PARAMS_KEY, embedding_schema

SPACES = ("text", "tags")
DETECT_FOLDER = layout.ann("detect")
WHERE = "retrieval.embed.model"


def detect_table(root: str, source: str, shard: int) -> str:
    return table_path(root, DETECT_FOLDER, source, shard)


class EmbedAnnotator(ShardAnnotator):
    """One embedding space; rows are (key, source, text_index, text, vector)."""

    columns = ["key", "modality", "text", "json"]

    def __init__(self, config: EmbedConfig, space: str):
        if space not in SPACES:
            raise ValueError(f"unknown embedding space {space!r} (have: {', '.join(SPACES)})")
        self.config, self.space = config, space
        self.stage, self.folder = f"embed-{space}", layout.emb(space)
        self.modalities = frozenset({"pair", "text"} if space == "text" else {"pair", "image"})
        self.embedder = None

    @property
    def schema(self):
        return embedding_schema(self.embedder.dim)

    def params(self) -> dict:
        return {**output_params(self.config), "space": self.space}

    def setup(self) -> None:
        from retrieval.embed import shared_embedder

        self.embedder = shared_embedder(self.config.model, self.config.device, self.config.batch_size, WHERE)

    def input_digest(self, root: str, source: str, shard: int, exists: Callable[[str], bool] = storage.exists) -> str:
        path = detect_table(root, source, shard)
        if self.space == "text" or not exists(path):
            return ""
        return read_footer(path).get(PARAMS_KEY, b"").decode()

    def input_folders(self, root: str, source: str) -> list[str]:
        return [] if self.space == "text" else [storage.join(root, DETECT_FOLDER, source)]

    def annotate(self, shard: ShardInput) -> tuple[list[dict], list[Reject], int]:
        queries, rejects = (self._texts(shard) if self.space == "text" else self._tag_queries(shard))
        vectors = self.embedder.encode([text for _, _, text in queries])
        rows = [{"key": key, "source": shard.source, "text_index": index, "text": text, "vector": vector}
                for (key, index, text), vector in zip(queries, vectors, strict=True)]
        return rows, rejects, len(rows) + len(rejects)

    def _texts(self, shard: ShardInput) -> tuple[list[tuple[str, int, str]], list[Reject]]:
        queries, rejects = [], []
        for row in shard.rows:
            if row["modality"] not in self.modalities:
                continue
            for index, text in sample_texts(row):
                if text and text.strip():
                    queries.append((row["key"], index, text))
                else:
                    rejects.append(Reject(shard.source, f"{_tar(shard)}#text{index}", Reason.EMPTY_TEXT,
                                          "empty text: nothing to embed", row["key"]))
        return queries, rejects

    def _tag_queries(self, shard: ShardInput) -> tuple[list[tuple[str, int, str]], list[Reject]]:
        from retrieval.embed import tag_query

        labels = read_detect_labels(shard.root, shard.source, shard.shard)
        queries, rejects = [], []
        for row in shard.rows:
            if row["modality"] not in self.modalities:
                continue
            query = tag_query(labels.get(row["key"], []))
            if query:
                queries.append((row["key"], 0, query))
            else:
                why = "no region labels" if row["key"] in labels else "no ann/detect row (the detect stage refused it)"
                rejects.append(Reject(shard.source, _tar(shard), Reason.NO_TAGS, f"{why}: no tag query", row["key"]))
        return queries, rejects

    def table_metadata(self) -> dict[bytes, bytes]:
        return {MODEL_KEY: self.config.model.encode(), DIM_KEY: str(self.embedder.dim).encode()}


def _tar(shard: ShardInput) -> str:
    """A raw shard's tar as reject locations name it: relative to the corpus root, like detect's."""
    return f"{layout.raw(shard.source)}/{shard_name(shard.shard)}.tar"


def read_detect_labels(root: str, source: str, shard: int) -> dict[str, list[str]]:
    """key -> region labels (in the table's order: annotations first, then by score) of one shard."""
    path = detect_table(root, source, shard)
    if not storage.exists(path):
        raise ValueError(_not_detected(source, shard, path))
    rows = read_table_rows(path, ["key", *REGION_LABELS])
    return {row["key"]: [r["label"] for r in row["regions"] if r["label"]] for row in rows}


def check_detected(root: str, source: str) -> None:
    """Fail before any pipeline starts if a shard of ``source`` has no ann/detect table (one listing of the
    folder, not a request per shard)."""
    names = storage.names_in([storage.join(root, DETECT_FOLDER, source)])
    for shard in raw_shards(root, source):
        if not storage.listed(names, detect_table(root, source, shard)):
            raise ValueError(_not_detected(source, shard, detect_table(root, source, shard)))


def _not_detected(source: str, shard: int, path: str) -> str:
    return (f"source {source}: shard {shard} has no {DETECT_FOLDER} table ({path}) to make tag queries of; "
            f"run unicorpus annotate detect first")


def run_embed(config: CorpusConfig, sources: list[str] | None, runner: RunnerConfig, overwrite: bool = False,
              show_progress: bool = True, spaces: tuple[str, ...] = SPACES) -> list[StageResult]:
    """Embed ``sources`` (default: ``retrieval.embed.sources``, else every source) in each space, over the
    sources that have its samples (text: pairs and texts; tags: images). Results are named space/source."""
    section = config.retrieval.embed
    require_path(section, "model", "retrieval.embed")
    plan = {space: _space_sources(config, EmbedAnnotator(section, space), sources or section.sources)
            for space in spaces}
    for name in plan.get("tags", []):  # before any pipeline runs
        check_detected(config.output, name)
    results = []
    for space, names in plan.items():
        done = (run_sidecar_stage(config, partial(EmbedAnnotator, section, space), names, runner, overwrite,
                                  show_progress) if names else [])
        results.extend(replace(result, name=f"{space}/{result.name}") for result in done)
    return results


def _space_sources(config: CorpusConfig, annotator: EmbedAnnotator, names: list[str] | None) -> list[str]:
    """The named sources (checked) that have samples this space embeds; all such sources if none named."""
    if not names:
        return applicable_sources(config, annotator, None)
    return [n for n in applicable_sources(config, annotator, names)
            if has_modality(config.output, n, annotator.modalities)]
