"""ImageNet-21k: one folder ``nXXXXXXXX/`` or one tar ``nXXXXXXXX.tar`` per WordNet noun synset.

Each image is an image sample; with ``pseudo_pairs.enabled`` its synset's lemma names from ``words.txt``
(or, with ``words: null``, from WordNet 3.0 by the synset's offset) become a caption (UNIMO-2 §4) and the
sample a pair. One part per synset folder or tar (both may be
mixed under ``images``); tar members are streamed (``r|``) and carried as ``image_bytes``.
"""

from __future__ import annotations

import os
import posixpath
import re
import tarfile
from collections.abc import Iterator
from typing import Any

from pipelines import storage
from pipelines.nltk_data import WORDNET, data_dir, require, wordnet
from pipelines.sources import Reader, SourceError
from pipelines.sources.common import (
    IMAGE_EXTENSIONS,
    input_files,
    is_image_name,
    list_files,
    member_location,
    open_source,
    relative_to,
    require_exists,
    source_path,
)
from pipelines.sources.labels import parse_words, pseudo_caption, wordnet_labels
from schemas.config import ImageNetConfig, TextConfig
from schemas.keys import make_key
from schemas.records import Candidate, Modality, Reason, Reject

_SYNSET = re.compile(r"^n\d{8}$")


class ImageNetReader(Reader):
    def __init__(self, name: str, config: ImageNetConfig, text: TextConfig) -> None:
        super().__init__(name, config, text)
        self._words: dict[str, list[str]] | None = None  # words.txt, loaded once per worker

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_words": None}  # workers reload it rather than ship 80K entries

    def parts(self) -> list[str]:
        """The synset folders and tars directly under ``images`` and ``tars``, sorted; other entries are not
        images. None at all is an error naming where it looked (and the subfolders that do hold synsets)."""
        if self.config.words is None:  # before any pipeline: fail with what to put where
            require(data_dir(self.text.nltk_data), WORDNET, f"sources.{self.name}.words", "null (labels from WordNet)")
        folders = [self._folder(self.config.images)]
        if self.config.tars is not None:
            folders.append(self._folder(self.config.tars))
        parts = sorted({part for folder in folders for part in _synset_parts(folder)})
        if not parts:
            hint = [name for name in _entries(folders[0]) if name.endswith("/") and _synset_parts(
                storage.join(folders[0], name[:-1]), probe=True)]
            fields = f"sources.{self.name}.images" + (" and .tars" if self.config.tars is not None else "")
            raise SourceError(
                f"source {self.name}: no synset folder nXXXXXXXX/ or nXXXXXXXX.tar in {' or '.join(folders)} "
                f"({fields})" + (f"; synsets are under {', '.join(hint)}: name it in images: (folders) or tars: "
                                 f"(per-synset tars)" if hint else ""))
        return parts

    def inputs(self, parts: list[str]) -> list:
        """The tars (size, mtime), the synset folders (their mtime changes as images come and go) and
        ``words.txt``. Each redoes every shard: a synset's images spread over all of them."""
        words = [] if self.config.words is None else [source_path(self.config.root, self.config.words)]
        return input_files(self.config.root, [*parts, *words])

    def _folder(self, relative: str) -> str:
        return source_path(self.config.root, relative)

    def read(self, part: str) -> Iterator[Candidate | Reject]:
        base = posixpath.basename(part.rstrip("/"))
        synset = base[: -len(".tar")] if base.endswith(".tar") else base
        if not _SYNSET.match(synset):
            raise ValueError(f"not an ImageNet synset folder or tar: {part!r}")
        labels = self.labels(synset)
        if base.endswith(".tar"):
            yield from self._read_tar(part, synset, labels)
        else:
            for path in list_files(part, IMAGE_EXTENSIONS):
                location = relative_to(path, self.config.root)
                yield self._record(synset, labels, path, location, image_path=path)

    def labels(self, synset: str) -> list[str] | None:
        if self.config.words is None:
            return wordnet_labels(wordnet(data_dir(self.text.nltk_data)), synset)
        return self.words().get(synset)

    def words(self) -> dict[str, list[str]]:
        if self._words is None:
            self._words = load_words(source_path(self.config.root, self.config.words))
        return self._words

    def _read_tar(self, path: str, synset: str, labels: list[str] | None) -> Iterator[Candidate | Reject]:
        relpath = relative_to(path, self.config.root)
        require_exists(path)
        with open_source(path) as raw:
            try:
                with tarfile.open(fileobj=raw, mode="r|") as tar:
                    for member in tar:
                        if member.isfile() and is_image_name(member.name):
                            data = tar.extractfile(member).read()
                            location = member_location(relpath, member.name)
                            yield self._record(synset, labels, member.name, location, image_bytes=data)
            except (tarfile.TarError, EOFError, OSError) as e:
                raise SourceError(f"{path}: not a readable tar: {e}") from e

    def _record(
        self,
        synset: str,
        labels: list[str] | None,
        name: str,
        location: str,
        image_path: str | None = None,
        image_bytes: bytes | None = None,
    ) -> Candidate | Reject:
        file_name = posixpath.basename(name)
        image_id = posixpath.splitext(file_name)[0]
        key = make_key(self.name, image_id)
        text = None
        pseudo = self.config.pseudo_pairs
        if pseudo.enabled:
            if not labels:
                detail = f"synset {synset} is not in {self.config.words or 'WordNet 3.0'}"
                return Reject(self.name, location, Reason.NO_LABEL, detail, key)
            text = pseudo_caption(key, labels, pseudo)
        return Candidate(
            key=key,
            source=self.name,
            modality=Modality.PAIR if text is not None else Modality.IMAGE,
            source_id=image_id,
            location=location,
            text=text,
            image_path=image_path,
            image_bytes=image_bytes,
            meta={"image_id": image_id, "synset": synset, "labels": labels or [], "file_name": file_name},
        )


def _synset_parts(folder: str, probe: bool = False) -> list[str]:
    """The ``nXXXXXXXX/`` folders and ``nXXXXXXXX.tar`` files directly in ``folder``; ``probe``: the first only
    (when guessing where synsets are)."""
    parts = []
    for name in _entries(folder):
        if name.endswith("/") and _SYNSET.match(name[:-1]):
            parts.append(storage.join(folder, name[:-1]))
        elif name.endswith(".tar") and _SYNSET.match(name[: -len(".tar")]):
            parts.append(storage.join(folder, name))
        if probe and parts:
            break
    return parts


def _entries(folder: str) -> list[str]:
    """Names directly in ``folder``, folders with a trailing ``/``. Local folders are scanned one level
    (a glob would stat all 14M images below); object stores have no folders, so their listing is
    reduced to the first path part."""
    require_exists(folder, "folder")
    if "://" not in folder:
        with os.scandir(folder) as entries:
            return [e.name + "/" if e.is_dir() else e.name for e in entries]
    names = set()
    for path in storage.glob(storage.join(folder, "**")):
        first, slash, _ = relative_to(path, folder).partition("/")
        names.add(first + slash)
    return sorted(names)


def load_words(path: str) -> dict[str, list[str]]:
    """``words.txt`` (``n02084071<TAB>dog, domestic dog, Canis familiaris``) as WordNet id -> labels.
    Not records, so an unreadable or malformed file raises ``SourceError`` naming it (and the line)."""
    require_exists(path)
    with open_source(path) as f:
        data = f.read()
    try:
        return parse_words(data.decode("utf-8-sig").splitlines())
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: not UTF-8 at byte {e.start}") from e
    except ValueError as e:
        raise SourceError(f"{path}: {e}") from e
