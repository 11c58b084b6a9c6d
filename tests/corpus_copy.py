"""A private copy of some sources of the session's ingested mini corpus, for fixtures that annotate,
retrieve or pack it without touching the shared one."""

import os
import shutil


def copy_sources(ingested, mini_corpus, base, names: list[str]) -> tuple[str, dict, dict]:
    """Copies ``raw/<name>`` of each source under ``base/corpus`` and returns (corpus root, the mini corpus'
    config as loaded YAML, its ``names`` sources with absolute roots)."""
    import yaml

    ingested_config, _, _ = ingested
    root = base / "corpus"
    for name in names:
        shutil.copytree(f"{ingested_config.output}/raw/{name}", root / "raw" / name)
    with open(mini_corpus[0]) as f:
        data = yaml.safe_load(f)
    here = os.path.dirname(mini_corpus[0])
    sources = {name: {**data["sources"][name], "root": os.path.join(here, data["sources"][name]["root"])}
               for name in names}
    return root, data, sources
