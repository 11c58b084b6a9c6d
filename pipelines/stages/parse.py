"""The parse stage: noun phrases and a scene graph of every text -> ``ann/parse/<source>/NNNNN.parquet``.

One ANN_PARSE row per text (every COCO caption and VG region description, else the sample's one text; pairs and
text-only sources alike); empty and overlong texts are rejects. The logic is ``pipelines.annotators.parse``; this is
the shell that runs it per shard on ``run_sidecar_stage``, the spaCy model loaded once per worker.
"""

from __future__ import annotations

from functools import partial

from pipelines.annotators.parse import check_model, load_pipeline, model_version, parse_rows, split_texts
from pipelines.results import StageResult
from pipelines.runner import RunnerConfig
from pipelines.sidecar_tables import ShardInput
from pipelines.stages.per_shard import ShardAnnotator, run_sidecar_stage
from schemas import layout
from schemas.config import CorpusConfig
from schemas.config_build import output_params
from schemas.records import Reject
from schemas.stages import ParseConfig
from schemas.tables import ANN_PARSE, MODEL_KEY


class ParseAnnotator(ShardAnnotator):
    stage = "parse"
    folder = layout.ann("parse")
    schema = ANN_PARSE
    modalities = frozenset({"pair", "text"})
    columns = ["key", "modality", "text", "json"]

    def __init__(self, config: ParseConfig):
        self.config = config
        self.nlp = None

    def params(self) -> dict:
        return {**output_params(self.config), "model_version": model_version(self.config.model)}

    def setup(self) -> None:
        self.nlp = load_pipeline(self.config.model)

    def annotate(self, shard: ShardInput) -> tuple[list[dict], list[Reject], int]:
        texts, rejects = split_texts(shard, self.modalities, self.config.max_chars, "annotate.parse.max_chars")
        rows = parse_rows(self.nlp, shard.source, texts, self.config.batch_size)
        return rows, rejects, len(texts) + len(rejects)

    def table_metadata(self) -> dict[bytes, bytes]:
        return {MODEL_KEY: self.config.model.encode()}


def run_parse(config: CorpusConfig, sources: list[str] | None, runner: RunnerConfig, overwrite: bool = False,
              show_progress: bool = True) -> list[StageResult]:
    """Parse the texts of ``sources`` (default: ``annotate.parse.sources``, else every source with text)."""
    section = config.annotate.parse
    check_model(section.model)
    return run_sidecar_stage(config, partial(ParseAnnotator, section), sources or section.sources, runner,
                             overwrite, show_progress)
