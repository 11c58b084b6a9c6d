"""What outside clients of ``raw/`` need beside the shards: open_clip's ``sizes.json`` and a dataset card.

- ``raw/<source>/sizes.json``: shard file name -> samples in it (open_clip's convention: its WebDataset
  loader reads the file beside the shards to know an epoch's length without opening them).
- ``README.md`` at the corpus root: a Hugging Face dataset card with one config per source (``configs:``,
  ``data_files: raw/<source>/*.tar``) and its features (``dataset_info:``), so that
  ``datasets.load_dataset(root, source)`` and the Hub viewer read each source with one declared shape. HF's
  webdataset loader otherwise infers a schema from the first shard: a ``json`` field that is null there and
  an integer later fails the cast, and a field the first file lacks is dropped.

The features are inferred from every sample's ``json`` member: keys are the union over all of a source's
samples, types unified (null and integer -> integer, integer and float -> float); two samples that disagree
otherwise (a string here, a number there) are an error naming the source. Each shard's type is inferred once,
by the worker that writes it, and kept in its index footer (``pipelines/shard_shape.py``); the card unifies the
footers' types in shard order, reading an index's columns only where it was written before that (one shard's
members held at a time). A source's features are also kept in ``raw/<source>/features.json`` with the
parameters hash of its ingest in ``corpus.json``: ingest removes that file before it touches the source's
shards, so the card of another source's ingest reads one small file per unchanged source, not its shards.
Plain functions over pyarrow and FileSystems; both files are deterministic.
"""

from __future__ import annotations

import json
import logging

import pyarrow as pa

from pipelines import storage
from pipelines.manifest_io import read_manifest
from pipelines.raw_shard import SHARD_INDEX_PATTERN
from pipelines.shard_shape import read_shard_shape
from schemas import layout

log = logging.getLogger(__name__)


def _indexes(root: str, source: str) -> list[str]:
    return storage.glob(storage.join(root, layout.raw(source), SHARD_INDEX_PATTERN))


def write_sizes(root: str, source: str, samples: dict[int, int]) -> str:
    """``sizes.json`` of the source's shards from their ``samples`` (shard -> rows of its index)."""
    path = storage.join(root, layout.sizes(source))
    sizes = {layout.tar_name(shard): n for shard, n in sorted(samples.items())}
    storage.write_whole(path, (json.dumps(sizes, indent=1) + "\n").encode())
    return path


def source_shape(root: str, source: str) -> tuple[pa.DataType, list[str], bool]:
    """(the Arrow type of the source's ``json`` members over all samples, the image member extensions used,
    whether any sample has text), from each shard's footer (or columns): each shard's type unified with the
    others' in shard order (fields in order of first appearance)."""
    shape, formats, has_text = pa.struct([]), set(), False
    try:
        for path in _indexes(root, source):
            found = read_shard_shape(path)
            shape, formats = unify(shape, found.json_type), formats | found.image_formats
            has_text = has_text or found.has_text
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ValueError(f"source {source}: its samples' json members do not share one shape: {e}") from e
    return shape, sorted(formats), has_text


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


def source_features(root: str, source: str, params_hash: str | None) -> list[dict]:
    """The source's card features: kept in its ``features.json`` if that names ``params_hash`` (its ingest's in
    ``corpus.json``), else from its shards and then kept there (not without a hash to name: nothing to check
    it by)."""
    path = storage.join(root, layout.features(source))
    if params_hash is not None and storage.exists(path):
        try:
            kept = json.loads(storage.read_bytes(path))
            if kept["params_hash"] == params_hash:
                return kept["features"]
        except (ValueError, KeyError, TypeError):  # not what this module writes: rebuilt from the shards
            log.warning("%s: not a features file; the card reads the source's shards again", path)
    features = hf_features(*source_shape(root, source))
    if params_hash is not None:
        storage.write_whole(path, json.dumps({"params_hash": params_hash, "features": features}).encode())
    return features


def forget_features(root: str, source: str) -> None:
    """Before ingest touches a source's shards: the card reads them again rather than trust what they held
    (a killed run, ``--overwrite`` and ``--retry-failed`` change shards under the same parameters hash)."""
    path = storage.join(root, layout.features(source))
    if storage.exists(path):
        storage.delete([path])


def card_text(features: dict[str, list[dict]]) -> str:
    """The dataset card of these sources' features: YAML front matter (configs and features per source), then
    how to read the corpus."""
    import yaml

    configs = [{"config_name": source, "data_files": [{"split": "train", "path": f"{layout.raw(source)}/*.tar"}]}
               for source in features]
    infos = [{"config_name": source, "features": found} for source, found in features.items()]
    front = yaml.safe_dump({"configs": configs, "dataset_info": infos}, sort_keys=False, allow_unicode=True)
    return (f"---\n{front}---\n\n# unicorpus corpus\n\n"
            "One config per source: `datasets.load_dataset(\"<this folder>\", \"<source>\")`. Shards are WebDataset "
            "tars (`raw/<source>/NNNNN.tar`: image, `txt`, `json`) with a parquet index beside each and "
            "`sizes.json` (samples per shard, open_clip's convention). Samples that `unicorpus clean` removed "
            "(duplicates, evaluation images) are still in the tars: drop the keys listed under "
            "`rejects/dedup/` and `rejects/decontam/`. Sources: " + ", ".join(f"`{s}`" for s in features) + ".\n")


def write_card(root: str, sources: list[str]) -> str:
    """The card at the corpus root, for the ``sources`` that have shards (in config order)."""
    hashes = {name: entry["params_hash"] for name, entry in read_manifest(root)["stages"].get("ingest", {}).items()}
    present = [source for source in sources if _indexes(root, source)]
    text = card_text({source: source_features(root, source, hashes.get(source)) for source in present})
    path = storage.join(root, layout.CARD)
    storage.write_whole(path, text.encode("utf-8"))
    return path
