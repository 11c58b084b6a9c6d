"""The corpus layout on disk (DESIGN.md "The corpus on disk"): every folder name in one place.

Paths here are relative to the corpus root, with ``/`` separators; callers join them to the root with
their file system (``pipelines.storage.join``: local, ``gs://``, ``s3://``). ``schemas`` imports none of ours,
so this module only names things.

```
corpus.json                          MANIFEST
README.md                            CARD: the dataset card (HF ``datasets``), written by ingest
raw/<source>/NNNNN.tar|.parquet      raw(source), raw_tar(source, shard), raw_index(source, shard)
raw/<source>/sizes.json              sizes(source): samples per shard (open_clip)
raw/<source>/features.json           features(source): the source's card features, for the params_hash it names
urls/<source>/NNNNN.parquet          urls(source): one status row per downloaded URL
rejects/<stage>/<source>/NNNNN.parquet  rejects(stage, source)
ann/<stage>/<source>/                ann(stage)
emb/<space>/<source>/                emb(space)
index/<space>/<source>/              index(space), index_folder(space, source): INDEX_FILE, IDS_FILE,
                                     BUILD_FILE (index_build_file(space, source)), TRAINED_FILE
links/<name>/<source>/               links(name)
packed/<task>/<source>-NNNNN.tar     packed(task), packed_shard(source, shard)
report/index.html                    REPORT, report()
checkpoints/                         CHECKPOINTS
<folder>/_stats/                     stats(folder): corpus statistics a stage keeps (rewrite's vocabularies)
```
A sidecar table of one raw shard is ``<folder>/<source>/NNNNN.parquet``: ``table(folder, source, shard)``.
"""

from __future__ import annotations

from schemas.keys import shard_name
from schemas.manifest import MANIFEST_NAME

MANIFEST = MANIFEST_NAME
CARD = "README.md"
SIZES = "sizes.json"
FEATURES = "features.json"
RAW = "raw"
URLS = "urls"
REJECTS = "rejects"
ANN = "ann"
EMB = "emb"
INDEX = "index"
LINKS = "links"
PACKED = "packed"
REPORT = "report"
CHECKPOINTS = "checkpoints"
STATS = "_stats"
REPORT_PAGE = "index.html"
INDEX_FILE, IDS_FILE, BUILD_FILE = "index.faiss", "ids.parquet", "build.json"
TRAINED_FILE = "trained.faiss"  # the trained empty index (IVF centroids, codebooks): what ``add`` fills


def raw(source: str) -> str:
    return f"{RAW}/{source}"


def raw_tar(source: str, shard: int) -> str:
    return f"{raw(source)}/{tar_name(shard)}"


def tar_name(shard: int) -> str:
    """A raw shard's tar file name: ``NNNNN.tar``."""
    return f"{shard_name(shard)}.tar"


def raw_index(source: str, shard: int) -> str:
    """The raw shard's index table (one row per sample of its tar)."""
    return table(RAW, source, shard)


def sizes(source: str) -> str:
    return f"{raw(source)}/{SIZES}"


def features(source: str) -> str:
    """The source's part of the dataset card, kept so that a card written for another source's ingest does not
    read this one's shards again."""
    return f"{raw(source)}/{FEATURES}"


def urls(source: str) -> str:
    return f"{URLS}/{source}"


def rejects(stage: str, source: str) -> str:
    """``stage`` may itself have parts (``retrieve/weak-cc``, ``pack``)."""
    return f"{REJECTS}/{stage}/{source}"


def ann(stage: str) -> str:
    return f"{ANN}/{stage}"


def emb(space: str) -> str:
    return f"{EMB}/{space}"


def index(space: str) -> str:
    return f"{INDEX}/{space}"


def index_folder(space: str, source: str) -> str:
    return f"{index(space)}/{source}"


def index_build_file(space: str, source: str) -> str:
    """An index's ``build.json``: written last, the proof that its folder is complete."""
    return f"{index_folder(space, source)}/{BUILD_FILE}"


def links(name: str) -> str:
    return f"{LINKS}/{name}"


def packed(task: str) -> str:
    return f"{PACKED}/{task}"


def stats(folder: str) -> str:
    return f"{folder}/{STATS}"


def report() -> str:
    """The HTML report's page."""
    return f"{REPORT}/{REPORT_PAGE}"


def table_name(shard: int) -> str:
    """A per-shard table's file name: ``NNNNN.parquet``."""
    return f"{shard_name(shard)}.parquet"


def table(folder: str, source: str, shard: int) -> str:
    """One raw shard's table under ``folder`` (``raw``, ``ann/detect``, ``emb/text``, ``links/<name>``,
    ``rejects/<stage>``): ``<folder>/<source>/NNNNN.parquet``."""
    return f"{folder}/{source}/{table_name(shard)}"


def packed_shard(source: str, shard: int) -> str:
    """A packed tar's file name: one per (task, raw shard), so a packed sample's shard is a function of its
    raw sample's key (``schemas.keys.shard_of``) and a raw shard is packed by one worker."""
    return f"{source}-{shard_name(shard)}.tar"
