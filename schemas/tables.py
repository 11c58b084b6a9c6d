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
        pa.field("meta", pa.string(), nullable=False),  # the json member, verbatim
    ]
)

# rejects/<stage>/<source>/<shard>.parquet: every record a stage refused.
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


# raw/<source>/<shard>.urls.parquet: one row per downloaded URL of the shard (img2dataset-style).
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
