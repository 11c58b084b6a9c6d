"""The per-shard stage commands: ``annotate detect|parse|rewrite`` and ``embed``. They take the same
arguments and print the same summary; only the stage function (imported when the command runs) and what
is shown after the summary differ."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from cli.common import run_stage, stage_arguments


@dataclass(frozen=True)
class Stage:
    name: str
    run: str  # "module:function", run(config, sources, runner, overwrite=, show_progress=)
    help: str
    example: str | None = None  # "module:function" returning a string shown after the summary


ANNOTATORS = (
    Stage("detect", "pipelines.stages.detect:run_detect",
          "detector boxes, labels, class distributions, region features (and ground-truth tags) -> ann/detect/"),
    Stage("parse", "pipelines.stages.parse:run_parse", "spaCy noun phrases and scene graphs of texts -> ann/parse/"),
    Stage("rewrite", "pipelines.stages.rewrite:run_rewrite",
          "back-translation positives, scene-graph and TF-IDF hard negatives of captions -> ann/rewrite/ "
          "(after parse)", "pipelines.stages.rewrite:example_text"),
)
EMBED = Stage("embed", "pipelines.stages.embed:run_embed",
              "sentence-transformers vectors of texts (emb/text) and image tag queries (emb/tags)")


def register(subparsers) -> None:
    """``annotate detect|parse|rewrite`` and ``embed``."""
    annotate = subparsers.add_parser("annotate", help="sidecar annotations of ingested shards under ann/")
    annotators = annotate.add_subparsers(dest="annotator", required=True)
    for stage in ANNOTATORS:
        _register(annotators, stage)
    _register(subparsers, EMBED)


def _register(subparsers, stage: Stage) -> None:
    parser = subparsers.add_parser(stage.name, help=stage.help)
    stage_arguments(parser)
    parser.set_defaults(run=lambda args, beam_args: _run(stage, args, beam_args))


def _run(stage: Stage, args, beam_args) -> int:
    code = run_stage(_function(stage.run), args, beam_args, stage.name)
    if stage.example and not args.json:
        from schemas.config import load_config

        print("\n" + _function(stage.example)(load_config(args.config)))
    return code


def _function(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)
