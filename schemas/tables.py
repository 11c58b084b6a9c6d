"""Arrow schemas of the tables on disk (DESIGN.md "The corpus on disk").

Every parquet file carries ``unicorpus.schema_version`` in its metadata; readers refuse other versions
instead of misreading them.
"""

from __future__ import annotations

import pyarrow as pa

from schemas import SCHEMA_VERSION

VERSION_KEY = b"unicorpus.schema_version"
PARAMS_KEY = b"unicorpus.params_hash"
RECORDS_IN_KEY = b"unicorpus.records_in"
# raw index footer: its samples' part of the dataset card (pipelines/shard_shape.py), absent before issue 15
JSON_TYPE_KEY = b"unicorpus.json_type"  # the Arrow type of the json members, as a serialized one-field schema
IMAGE_FORMATS_KEY = b"unicorpus.image_formats"  # JSON list of the image member extensions, sorted
HAS_TEXT_KEY = b"unicorpus.has_text"  # JSON true when any sample has text

# raw/<source>/<shard>.parquet: one row per sample of the tar beside it, in tar order.
SHARD_INDEX = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("image_format", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("sha256", pa.string()),
        pa.field("phash", pa.string()),  # 64-bit perceptual hash as 16 hex digits
        pa.field("image_offset", pa.int64()),  # byte offset of the image member's data in the tar
        pa.field("image_size", pa.int64()),
        pa.field("sample_bytes", pa.int64(), nullable=False),  # all members' data of this sample
        pa.field("json", pa.string(), nullable=False),  # the sample's json member, verbatim (its ``meta`` inside)
    ]
)

# rejects/<stage>/<source>/<shard>.parquet: every record a stage refused. The rows of these stages (written by
# ``clean``) are removals: samples every stage after clean, and every reader of the corpus, leaves out.
REMOVAL_STAGES = ("dedup", "decontam")
REJECTS = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("key", pa.string()),
        pa.field("location", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
    ]
)


# urls/<source>/<shard>.parquet: one row per downloaded URL of the shard (img2dataset-style).
URL_STATUS = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("url", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # ok | http_<code> | timeout | too_large | ... | decode_error
        pa.field("attempts", pa.int32(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("elapsed_s", pa.float64(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
    ]
)


def with_metadata(schema: pa.Schema, extra: dict[bytes, bytes] | None = None) -> pa.Schema:
    return schema.with_metadata({VERSION_KEY: str(SCHEMA_VERSION).encode(), **(extra or {})})


def check_version(schema: pa.Schema, where: str) -> None:
    found = (schema.metadata or {}).get(VERSION_KEY)
    if found != str(SCHEMA_VERSION).encode():
        raise ValueError(f"{where}: schema version {found!r}, this code reads {SCHEMA_VERSION}")


# --- sidecar tables of the stages after ingest (one per raw shard, keyed by sample key) ---------------
MODEL_KEY = b"unicorpus.model"  # footer: the model a table was made with (path or name)
DIM_KEY = b"unicorpus.dim"  # footer: feature / vector dimension
CLASSES_KEY = b"unicorpus.classes"  # footer: JSON list of the detector's class names
UNITS_WRITTEN_KEY = b"unicorpus.units_written"  # footer: input units with rows (a caption with 100 rewrites is one)

_BOX = pa.list_(pa.float32(), 4)  # [x1, y1, x2, y2] normalised to [0, 1] by the image size

# ann/detect/<source>/<shard>.parquet: one row per image. Regions are sorted by score (annotations first).
# Both location encodings derive from box + image size: UNITER §3.1 7-d [x1,y1,x2,y2,w,h,w*h] and
# mu-VLA §3.1 5-d [x1,y1,x2,y2,area] (schemas.regions).
REGION = pa.struct(
    [
        pa.field("box", _BOX),
        pa.field("label", pa.string()),
        pa.field("score", pa.float32()),  # 1.0 for ground truth
        pa.field("origin", pa.string()),  # detector | annotation
        pa.field(
            "class_probs", pa.list_(pa.float32())
        ),  # the detector's full class distribution (MRC-kl); null for annotations without a detector
        pa.field(
            "feature", pa.list_(pa.float32())
        ),  # pooled from the detector's feature maps at the box; null without a detector
    ]
)
ANN_DETECT = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("regions", pa.list_(REGION), nullable=False),
])

# ann/parse/<source>/<shard>.parquet: one row per text (caption or sentence; text_index: see sidecar.sample_texts).
PHRASE = pa.struct([pa.field("text", pa.string()), pa.field("root", pa.string()),
                    pa.field("start", pa.int32()), pa.field("end", pa.int32())])  # character offsets
GRAPH_OBJECT = pa.struct([pa.field("name", pa.string()), pa.field("attributes", pa.list_(pa.string())),
                          pa.field("start", pa.int32()), pa.field("end", pa.int32())])  # the head noun's span
RELATION = pa.struct([pa.field("subject", pa.int32()), pa.field("relation", pa.string()),
                      pa.field("object", pa.int32())])  # indices into objects
ANN_PARSE = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("text_index", pa.int32(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("noun_phrases", pa.list_(PHRASE), nullable=False),
    pa.field("objects", pa.list_(GRAPH_OBJECT), nullable=False),
    pa.field("relations", pa.list_(RELATION), nullable=False),
])

# ann/rewrite/<source>/<shard>.parquet: one row per rewrite of a caption.
ANN_REWRITE = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("text_index", pa.int32(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),  # positive | hard_negative
    pa.field("method", pa.string(), nullable=False),  # back_translation | scene_graph | tfidf
    pa.field("text", pa.string(), nullable=False),  # the rewrite
    pa.field("score", pa.float32()),  # fluency (scene_graph), cosine (tfidf), null (back_translation)
    pa.field("detail", pa.string(), nullable=False),  # pivot + models; replaced node "object: dog -> cat"; other key
])

# emb/<space>/<source>/<shard>.parquet: one row per embedded text (spaces: text, tags).
def embedding_schema(dim: int) -> pa.Schema:
    return pa.schema([
        pa.field("key", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("text_index", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
    ])


# links/<name>/<source>/<shard>.parquet: ranked retrieval results per query.
LINKS = pa.schema([
    pa.field("query_key", pa.string(), nullable=False),
    pa.field("query_source", pa.string(), nullable=False),
    pa.field("rank", pa.int32(), nullable=False),  # 0 = best
    pa.field("key", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("text_index", pa.int32()),  # which text of the result sample (null: an image)
    pa.field("text", pa.string()),
    pa.field("score", pa.float32(), nullable=False),
    pa.field("query_text_index", pa.int32()),  # which text of the query sample (related texts; null: an image)
])

# links/<name>-regions/<source>/<shard>.parquet: mu-VLA §3.3.2 phrase-region links of weak pairs.
PHRASE_REGIONS = pa.schema([
    pa.field("query_key", pa.string(), nullable=False),  # the image (the weak pair's query), as in LINKS
    pa.field("query_source", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=False),  # the retrieved sentence's sample, as in LINKS
    pa.field("text_index", pa.int32(), nullable=False),
    pa.field("phrase", pa.string(), nullable=False),
    pa.field("phrase_start", pa.int32(), nullable=False),
    pa.field("region", pa.int32(), nullable=False),  # index into the image's ann/detect regions
    pa.field("region_label", pa.string(), nullable=False),
    pa.field("score", pa.float32(), nullable=False),  # cosine of phrase and tag embeddings
])
