"""Class labels as captions: pseudo image-text pairs (UNIMO-2 §4), ImageNet's ``words.txt`` or WordNet.

UNIMO-2 §4 turns an image-only sample into a pair by filling a prompt template such as
"a photo of [label]" with the image's class labels. Which template a sample gets is a function of its key
alone (``shard_of``), so reruns produce the same caption. Pure functions: no file access here (WordNet
comes in as a loaded reader).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

from schemas.config import PseudoPairConfig
from schemas.keys import shard_of

PLACEHOLDER = "{label}"


def join_labels(labels: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c`` (no serial comma)."""
    if not labels:
        raise ValueError("join_labels: no labels")
    if len(labels) == 1:
        return labels[0]
    return f"{', '.join(labels[:-1])} and {labels[-1]}"


def pseudo_caption(key: str, labels: Sequence[str], config: PseudoPairConfig) -> str:
    """UNIMO-2 §4: ``templates[shard_of(key, len(templates))]`` with ``{label}`` replaced by the first
    ``max_labels`` labels joined. ``str.replace``, not ``format``: templates may hold other braces."""
    template = config.templates[shard_of(key, len(config.templates))]
    return template.replace(PLACEHOLDER, join_labels(labels[: config.max_labels]))


def parse_words_line(line: str) -> tuple[str, list[str]]:
    """``n02084071<TAB>dog, domestic dog, Canis familiaris`` -> ``("n02084071", ["dog", "domestic dog",
    "Canis familiaris"])``. Raises ``ValueError`` for a line without a tab or without a name."""
    wnid, tab, names = line.partition("\t")
    wnid = wnid.strip()
    labels = [name.strip() for name in names.split(",") if name.strip()]
    if not tab or not wnid or not labels:
        raise ValueError(f"expected 'WNID<TAB>name, name, ...', got {line[:80]!r}")
    return wnid, labels


def parse_words(lines: Iterable[str]) -> dict[str, list[str]]:
    """WordNet id -> lemma names from ``words.txt`` lines; blank lines are skipped, the first entry
    of a repeated id wins. Raises ``ValueError`` naming the (1-based) line of a bad one."""
    words: dict[str, list[str]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            wnid, labels = parse_words_line(line.rstrip("\r\n"))
        except ValueError as e:
            raise ValueError(f"line {number}: {e}") from None
        words.setdefault(wnid, labels)
    return words


def wordnet_labels(wordnet, wnid: str) -> list[str] | None:
    """The lemma names of ImageNet synset ``wnid`` (``n02121808``: part of speech and WordNet 3.0 offset) as
    ``words.txt`` has them (``domestic cat, house cat, Felis domesticus, Felis catus``: ``_`` read as a
    space); None for an id that is not a WordNet synset. ``wordnet``: nltk's WordNet corpus reader."""
    from nltk.corpus.reader.wordnet import WordNetError

    if len(wnid) != 9 or wnid[0] not in "nvasr" or not wnid[1:].isdigit():
        return None
    try:
        with warnings.catch_warnings():  # nltk warns, then returns None, for an offset it does not have
            warnings.simplefilter("ignore", UserWarning)
            synset = wordnet.synset_from_pos_and_offset(wnid[0], int(wnid[1:]))
    except WordNetError:
        return None
    return [name.replace("_", " ") for name in synset.lemma_names()] if synset is not None else None
