"""SBU Captions (UNIMO App. A Table 5, UNITER Table 1: about 1M pairs): parallel URL and caption files.

Line ``i`` of the URL file and line ``i`` of the caption file make row ``i`` (0-based), whose image a
user downloaded as ``image_pattern.format(row=i)``. The files are read side by side, never loaded whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import zip_longest

from pipelines.sources import Reader
from pipelines.sources.common import (
    candidate,
    caption_or_reject,
    decode_utf8,
    image_reference,
    line_location,
    sample_key,
    source_lines,
)
from schemas.records import Candidate, Reason, Reject


class SbuReader(Reader):
    """One part: the caption file (its URL file is read alongside)."""

    def parts(self) -> list[str]:
        return [self.config.path(self.config.captions)]

    def read(self, part: str) -> Iterator[Candidate | Reject]:
        urls_path = self.config.path(self.config.urls)
        urls_rel, captions_rel = self.config.relative(urls_path), self.config.relative(part)
        images = self.config.path(self.config.images) if self.config.images is not None else None
        pairs = zip_longest(source_lines(urls_path), source_lines(part))
        for row, (url_line, caption_line) in enumerate(pairs):
            key = sample_key(self.name, row)
            if url_line is None or caption_line is None:
                yield self._unpaired(row, url_line, caption_line, urls_rel, captions_rel, key)
                continue
            url = decode_utf8(url_line[1], self.name, line_location(urls_rel, url_line[0]), key)
            location = line_location(captions_rel, caption_line[0])
            caption = caption_or_reject(caption_line[1], self.name, location, key)
            if isinstance(url, Reject) or isinstance(caption, Reject):
                yield url if isinstance(url, Reject) else caption
                continue
            image = image_reference(images, self.config.image_pattern.format(row=row), url.strip())
            if image is None:
                yield Reject(self.name, line_location(urls_rel, url_line[0]), Reason.MALFORMED, "empty url", key)
                continue
            meta = {"url": url.strip(), "row": row}
            yield candidate(self.name, row, location, meta, text=caption, **image)

    def _unpaired(
        self,
        row: int,
        url_line: tuple[int, bytes] | None,
        caption_line: tuple[int, bytes] | None,
        urls_rel: str,
        captions_rel: str,
        key: str,
    ) -> Reject:
        """A line past the end of the other file: the two files do not match line for line."""
        if url_line is not None:
            location, other = line_location(urls_rel, url_line[0]), captions_rel
        else:
            location, other = line_location(captions_rel, caption_line[0]), urls_rel
        return Reject(self.name, location, Reason.MALFORMED, f"no line {row + 1} in {other}", key)
