"""A folder of images without text, e.g. COCO unlabeled2017 (UNIMO App. A Table 5: image-only corpus).

Every image file below ``images`` (recursive, by extension) is one image sample. Its id is the path
relative to ``images`` without the extension (COCO's ``000000000008``), so files of the same name in
different subfolders stay distinct; two files differing only by extension share an id, and the second
becomes a ``duplicate_id`` reject. The writer opens each file and rejects what does not decode.
"""

from __future__ import annotations

import os
from typing import Iterator

from pipelines.sources import Reader
from pipelines.sources.common import IMAGE_EXTENSIONS, candidate, list_files, relative_to
from schemas.records import Candidate, Reject


class ImageFolderReader(Reader):
    """One part: the folder (listing it is cheap; the writer does the per-image work)."""

    def parts(self) -> list[str]:
        return [self.config.path(self.config.images)]

    def read(self, part: str) -> Iterator[Candidate | Reject]:
        for path in list_files(part, IMAGE_EXTENSIONS):
            file_name = relative_to(path, part)
            source_id = os.path.splitext(file_name)[0]
            location = self.config.relative(path)
            yield candidate(self.name, source_id, location, {"file_name": file_name}, image_path=path)
