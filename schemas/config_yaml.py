"""YAML for configs, with one check PyYAML leaves out: a key given twice in a mapping is an error.

YAML keeps the last of two equal keys, so a second source of the same name would silently replace the
first. The document is composed to nodes (which know their lines), checked, then constructed as
``yaml.safe_load`` would. Keys brought in by a merge (``<<: *anchor``) may be overridden: that is what
merges are for.
"""

from __future__ import annotations

from typing import IO, Any

from schemas.config_errors import ConfigError

_MERGE = "tag:yaml.org,2002:merge"


def load_yaml(stream: IO[str] | str) -> Any:
    """``yaml.safe_load`` that raises ``ConfigError`` ``LINE: dotted.key: duplicate key (first at line N)``."""
    import yaml

    loader = yaml.SafeLoader(stream)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_unique_keys(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def check_unique_keys(node, where: str = "", seen: set[int] | None = None) -> None:
    """Walk a composed YAML node; every mapping's explicit keys must differ."""
    import yaml

    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias points at a node checked already
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if key.tag == _MERGE:
                check_unique_keys(value, where, seen)
                continue
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            path = f"{where}.{name}".lstrip(".")
            line = key.start_mark.line + 1
            if isinstance(key, yaml.ScalarNode) and name in first:
                raise ConfigError(f"{line}: {path}: duplicate key (first at line {first[name]})")
            first.setdefault(name, line)
            check_unique_keys(value, path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            check_unique_keys(item, f"{where}[{i}]", seen)
