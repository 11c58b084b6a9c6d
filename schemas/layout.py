"""The corpus layout on disk (DESIGN.md "The corpus on disk"): every folder name in one place.

Paths here are relative to the corpus root, with ``/`` separators; callers join them to the root with
their file system (``pipelines.storage.join``: local, ``gs://``, ``s3://``). ``schemas`` imports none of ours,
so this module only names things.

```
corpus.json                          MANIFEST
raw/<source>/NNNNN.tar|.parquet      raw(source)
rejects/<stage>/<source>/NNNNN.parquet  rejects(stage, source)
ann/<stage>/<source>/                ann(stage)
emb/<space>/<source>/                emb(space)
index/<space>/<source>/              index(space)
links/<name>/<source>/               links(name)
packed/<task>/<source>-NNNNN.tar     packed(task), packed_shard(source, shard)
report/                              REPORT
checkpoints/                         CHECKPOINTS
<folder>/_stats/                     stats(folder): corpus statistics a stage keeps (rewrite's vocabularies)
```
"""

from __future__ import annotations

from schemas.keys import shard_name
from schemas.manifest import MANIFEST_NAME

MANIFEST = MANIFEST_NAME
RAW = "raw"
REJECTS = "rejects"
ANN = "ann"
EMB = "emb"
INDEX = "index"
LINKS = "links"
PACKED = "packed"
REPORT = "report"
CHECKPOINTS = "checkpoints"
STATS = "_stats"


def raw(source: str) -> str:
    return f"{RAW}/{source}"


def rejects(stage: str, source: str) -> str:
    """``stage`` may itself have parts (``retrieve/weak-cc``, ``pack``)."""
    return f"{REJECTS}/{stage}/{source}"


def ann(stage: str) -> str:
    return f"{ANN}/{stage}"


def emb(space: str) -> str:
    return f"{EMB}/{space}"


def index(space: str) -> str:
    return f"{INDEX}/{space}"


def links(name: str) -> str:
    return f"{LINKS}/{name}"


def packed(task: str) -> str:
    return f"{PACKED}/{task}"


def stats(folder: str) -> str:
    return f"{folder}/{STATS}"


def table_name(shard: int) -> str:
    """A per-shard table's file name: ``NNNNN.parquet``."""
    return f"{shard_name(shard)}.parquet"


def packed_shard(source: str, shard: int) -> str:
    """A packed tar's file name: one per (task, raw shard), so a packed sample's shard is a function of its
    raw sample's key (``schemas.keys.shard_of``) and a raw shard is packed by one worker."""
    return f"{source}-{shard_name(shard)}.tar"
