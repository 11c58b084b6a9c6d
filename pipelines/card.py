"""What outside clients of ``raw/`` need beside the shards: open_clip's ``sizes.json`` and a dataset card.

- ``raw/<source>/sizes.json``: shard file name -> samples in it (open_clip's convention: its WebDataset
  loader reads the file beside the shards to know an epoch's length without opening them).
- ``README.md`` at the corpus root: a Hugging Face dataset card with one config per source (``configs:``,
  ``data_files: raw/<source>/*.tar``) and its features (``dataset_info:``), so that
  ``datasets.load_dataset(root, source)`` and the Hub viewer read each source with one declared shape. HF's
  webdataset loader otherwise infers a schema from the first shard: a ``json`` field that is null there and
  an integer later fails the cast, and a field the first file lacks is dropped.

The features are inferred from every sample's ``json`` member (the raw index holds it verbatim, so no tar is
read): keys are the union over all of a source's samples, types unified (null and integer -> integer,
integer and float -> float); two samples that disagree otherwise (a string here, a number there) are an
error naming the source. One shard's members are held at a time (a source of 500M sentences would not fit
the launching process otherwise). Plain functions over pyarrow and FileSystems; both files are deterministic.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import storage
from pipelines.raw_shard import SHARD_INDEX_PATTERN
from schemas import layout
from schemas.keys import shard_name


def _indexes(root: str, source: str) -> list[str]:
    return storage.glob(storage.join(root, layout.raw(source), SHARD_INDEX_PATTERN))


def write_sizes(root: str, source: str, samples: dict[int, int]) -> str:
    """``sizes.json`` of the source's shards from their ``samples`` (shard -> rows of its index)."""
    path = storage.join(root, layout.sizes(source))
    sizes = {f"{shard_name(shard)}.tar": n for shard, n in sorted(samples.items())}
    storage.write_bytes(path + ".tmp", (json.dumps(sizes, indent=1) + "\n").encode())
    storage.rename(path + ".tmp", path)
    return path


def source_shape(root: str, source: str) -> tuple[pa.DataType, list[str], bool]:
    """(the Arrow type of the source's ``json`` members over all samples, the image member extensions used,
    whether any sample has text), each index read once: each shard's type inferred alone, then unified with
    the others' (fields in order of first appearance)."""
    shape, formats, has_text = pa.struct([]), set(), False
    try:
        for path in _indexes(root, source):
            found, used, text = _shard_shape(path)
            shape, formats, has_text = unify(shape, found), formats | used, has_text or text
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ValueError(f"source {source}: its samples' json members do not share one shape: {e}") from e
    return shape, sorted(formats), has_text


def _shard_shape(path: str) -> tuple[pa.DataType, set[str], bool]:
    """One shard index's json type, image formats and whether it holds text; its members go on return, before
    the next shard's come."""
    with storage.open_read(path) as f:
        table = pq.read_table(f, columns=["json", "image_format", "text"])
    documents = [json.loads(text) for text in table.column("json").to_pylist()]
    formats = {fmt for fmt in table.column("image_format").to_pylist() if fmt}
    has_text = table.column("text").null_count < table.num_rows
    return (pa.array(documents).type if documents else pa.struct([])), formats, has_text


def unify(first: pa.DataType, second: pa.DataType) -> pa.DataType:
    """The type that holds values of both, as Arrow infers it over both's values at once (struct fields merged
    in order of appearance, null and integer -> integer, integer and float -> float), else ``ArrowTypeError``
    (also for bool and float, which ``pa.array`` takes as float in some orders only)."""
    schemas = [pa.schema([("json", kind)]) for kind in (first, second)]
    return pa.unify_schemas(schemas, promote_options="permissive").field("json").type


def hf_features(shape: pa.DataType, image_formats: list[str], has_text: bool) -> list[dict]:
    """The ``dataset_info.features`` of one source as the dataset card spells them (HF ``Features._to_yaml_list``)."""
    features = [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"}]
    features += [{"name": fmt, "dtype": "image"} for fmt in image_formats]
    if has_text:
        features.append({"name": "txt", "dtype": "string"})
    features.append({"name": "json", **_feature(shape)})
    return features


def _feature(kind: pa.DataType) -> dict:
    """One Arrow type as a card feature body: ``{"dtype": ...}``, ``{"struct": [...]}`` or ``{"list": ...}``."""
    if pa.types.is_struct(kind):
        return {"struct": [{"name": field.name, **_feature(field.type)} for field in kind]}
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        inner = _feature(kind.value_type)
        return {"list": inner["dtype"] if "dtype" in inner else inner.get("struct", inner)}
    if pa.types.is_null(kind):
        return {"dtype": "null"}
    if pa.types.is_boolean(kind):
        return {"dtype": "bool"}
    if pa.types.is_integer(kind):
        return {"dtype": "int64"}
    if pa.types.is_floating(kind):
        return {"dtype": "float64"}
    return {"dtype": "string"}


def card_text(root: str, sources: list[str]) -> str:
    """The dataset card: YAML front matter (configs and features per source), then how to read the corpus."""
    import yaml

    configs, infos = [], []
    for source in sources:
        shape, formats, has_text = source_shape(root, source)
        tars = f"{layout.raw(source)}/*.tar"
        configs.append({"config_name": source, "data_files": [{"split": "train", "path": tars}]})
        infos.append({"config_name": source, "features": hf_features(shape, formats, has_text)})
    front = yaml.safe_dump({"configs": configs, "dataset_info": infos}, sort_keys=False, allow_unicode=True)
    return (f"---\n{front}---\n\n# unicorpus corpus\n\n"
            "One config per source: `datasets.load_dataset(\"<this folder>\", \"<source>\")`. Shards are WebDataset "
            "tars (`raw/<source>/NNNNN.tar`: image, `txt`, `json`) with a parquet index beside each and "
            "`sizes.json` (samples per shard, open_clip's convention). Samples that `unicorpus clean` removed "
            "(duplicates, evaluation images) are still in the tars: drop the keys listed under "
            "`rejects/dedup/` and `rejects/decontam/`. Sources: " + ", ".join(f"`{s}`" for s in sources) + ".\n")


def write_card(root: str, sources: list[str]) -> str:
    """The card at the corpus root, for the ``sources`` that have shards (in config order)."""
    present = [source for source in sources if _indexes(root, source)]
    path = storage.join(root, layout.CARD)
    storage.write_bytes(path + ".tmp", card_text(root, present).encode("utf-8"))
    storage.rename(path + ".tmp", path)
    return path
