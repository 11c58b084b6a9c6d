"""A folder of images without text, e.g. COCO unlabeled2017 (UNIMO App. A Table 5: image-only corpus).

Every image file below ``images`` (recursive, by extension) is one image sample. Its id is the path
relative to ``images`` without the extension (COCO's ``000000000008``), so files of the same name in
different subfolders stay distinct; two files differing only by extension share an id, and the second
becomes a ``duplicate_id`` reject. The writer opens each file and rejects what does not decode.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from pipelines.sources import Reader, SourceError
from pipelines.sources.common import IMAGE_EXTENSIONS, InputFile, candidate, list_file_stats, list_files, relative_to
from schemas.keys import make_key
from schemas.records import Candidate, Reject


class ImageFolderReader(Reader):
    """One part: the folder (listing it is cheap; the writer does the per-image work)."""

    def parts(self) -> list[str]:
        return [self.config.path(self.config.images)]

    def inputs(self, parts: list[str]) -> list[InputFile]:
        """Every image file with its size, mtime and key: an added, removed or edited image redoes its
        own shard only. A folder without images is an error, not an empty corpus."""
        (folder,) = parts
        found = [
            InputFile(relative_to(path, self.config.root), size, mtime, make_key(self.name, self._id(path, folder)))
            for path, size, mtime in list_file_stats(folder, IMAGE_EXTENSIONS)
        ]
        if not found:
            raise SourceError(f"source {self.name}: no image file ({' '.join(IMAGE_EXTENSIONS)}) under {folder} "
                              f"(sources.{self.name}.images)")
        return found

    @staticmethod
    def _id(path: str, folder: str) -> str:
        return os.path.splitext(relative_to(path, folder))[0]

    def read(self, part: str) -> Iterator[Candidate | Reject]:
        for path in list_files(part, IMAGE_EXTENSIONS):
            file_name = relative_to(path, part)
            source_id = self._id(path, part)
            location = self.config.relative(path)
            yield candidate(self.name, source_id, location, {"file_name": file_name}, image_path=path)
