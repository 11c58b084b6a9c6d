"""One raw shard's part of the dataset card, worked out once, by the worker that writes the shard.

The card (``pipelines/card.py``) declares per source the Arrow type of its samples' ``json`` members, their image
formats and whether any has text. The type needs every member parsed (about 20 us a sample): a launching process
doing it over the whole corpus on every ingest took hours at the papers' size. So the shard writer infers it over
the rows it holds anyway and keeps it in the index footer, and the card reads footers only. An index written
before issue 15 has no such keys: ``read_shard_shape`` reads its columns, as the card did.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from schemas.tables import HAS_TEXT_KEY, IMAGE_FORMATS_KEY, JSON_TYPE_KEY


class ShardShape(NamedTuple):
    json_type: pa.DataType  # of all the shard's json members at once; an empty struct for no sample
    image_formats: frozenset[str]
    has_text: bool


def shape_of(members: list[str], image_formats: Iterable[str | None], has_text: bool) -> ShardShape:
    """The shape of one shard's samples from its ``json`` members (text), image formats and text presence;
    ``ArrowInvalid``/``ArrowTypeError`` when its members disagree among themselves."""
    documents = [json.loads(member) for member in members]
    json_type = pa.array(documents).type if documents else pa.struct([])
    return ShardShape(json_type, frozenset(filter(None, image_formats)), has_text)


def shape_footer(rows: list[dict]) -> dict[bytes, bytes]:
    """The index footer keys of these index rows. None when their members disagree: the card then reads the
    shard's columns and fails naming the source, as it does for an index written before these keys."""
    try:
        shape = shape_of([row["json"] for row in rows], (row["image_format"] for row in rows),
                         any(row["text"] is not None for row in rows))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return {}
    return {JSON_TYPE_KEY: pa.schema([pa.field("json", shape.json_type)]).serialize().to_pybytes(),
            IMAGE_FORMATS_KEY: json.dumps(sorted(shape.image_formats)).encode(),
            HAS_TEXT_KEY: json.dumps(shape.has_text).encode()}


def footer_shape(metadata: dict[bytes, bytes]) -> ShardShape | None:
    """The shape kept in an index footer, or ``None`` for an index without it."""
    if JSON_TYPE_KEY not in metadata:
        return None
    json_type = pa.ipc.read_schema(pa.py_buffer(metadata[JSON_TYPE_KEY])).field("json").type
    return ShardShape(json_type, frozenset(json.loads(metadata[IMAGE_FORMATS_KEY])),
                      json.loads(metadata[HAS_TEXT_KEY]))


def possible_modalities(shape: ShardShape) -> frozenset[str]:
    """The modalities a shard of this shape may hold (a pair has text and an image, an image sample no text, a
    text sample no image: ``sources.common.candidate``); which of them it does hold takes its rows."""
    images = bool(shape.image_formats)
    return frozenset(modality for modality, possible in (("pair", images and shape.has_text), ("image", images),
                                                         ("text", shape.has_text)) if possible)


def read_shard_shape(path: str) -> ShardShape:
    """One shard index's shape: its footer's, else (an older index) from its columns; one open either way,
    and the columns' members go on return, before the next shard's come."""
    with storage.open_read(path) as f:
        index = pq.ParquetFile(f)
        shape = footer_shape(index.schema_arrow.metadata or {})
        if shape is None:
            table = index.read(columns=["json", "image_format", "text"])
            shape = shape_of(table.column("json").to_pylist(), table.column("image_format").to_pylist(),
                             table.column("text").null_count < table.num_rows)
    return shape
