"""Records that flow between a reader and the shard writer.

A reader turns raw files into ``Candidate`` samples and ``Reject`` records. A candidate is what would
become one WebDataset sample; the writer may still refuse it (an undecodable image, a duplicate id),
in which case it becomes a reject as well. Nothing is dropped silently: for every source,
``records read == samples written + rejects``.

Unified sample format (UNIMO App. A): every sample is one of three modalities; a pair carries an
image and text, an image sample no text, a text sample no image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Modality(str, Enum):
    PAIR = "pair"
    IMAGE = "image"
    TEXT = "text"


class Reason(str, Enum):
    """Why a record was refused. Stable strings: they are stored in ``rejects/`` tables."""

    MALFORMED = "malformed"            # a line or field that does not parse as its format says
    NON_UTF8 = "non_utf8"              # text that is not valid UTF-8
    EMPTY_TEXT = "empty_text"          # an empty or whitespace-only caption or sentence
    MISSING_IMAGE = "missing_image"    # the image file or member the record points at is absent
    CORRUPT_IMAGE = "corrupt_image"    # bytes that do not decode as an image
    TOO_LARGE = "too_large"            # an image of more pixels than image.max_pixels (not decoded)
    DUPLICATE_ID = "duplicate_id"      # a second record with the same source id (the first is kept)
    UNKNOWN_REFERENCE = "unknown_reference"  # an annotation that names an id the source does not have
    FAILED_DOWNLOAD = "failed_download"  # a source that records a download failure for this record
    NO_LABEL = "no_label"              # an image-only source record with no usable label
    DUPLICATE = "duplicate"            # dedup: the same or a near-identical image, or the same text, is kept elsewhere
    CONTAMINATED = "contaminated"      # decontam: the image belongs to an evaluation split (UNITER §3.3)
    OVERLONG_TEXT = "overlong_text"    # a text longer than a stage's max_chars (refused, not silently cut)
    NO_TAGS = "no_tags"                # retrieve: an image with no region labels, so no tag query (mu-VLA §3.2)
    NO_RESULTS = "no_results"          # retrieve: a query no candidate matches (no shared term, empty index)
    NO_PHRASES = "no_phrases"          # retrieve: a retrieved sentence with no noun phrase to link to a region
    NO_REWRITE = "no_rewrite"  # rewrite: a caption for which no method produced a rewrite (detail says why)
    MISSING_ROW = (
        "missing_row"  # pack: a sidecar row a task needs is missing (its stage refused it; detail names the table)
    )
    NO_OTHER_TEXT = "no_other_text"    # pack: an unaligned pair whose shard holds no caption of another image to take


# What the stages after ingest refuse (clean, annotate, embed, retrieve); every other reason is ingest's.
AFTER_INGEST = frozenset({Reason.DUPLICATE, Reason.CONTAMINATED, Reason.OVERLONG_TEXT, Reason.NO_TAGS,
                          Reason.NO_RESULTS, Reason.NO_PHRASES, Reason.NO_REWRITE, Reason.MISSING_ROW,
                          Reason.NO_OTHER_TEXT})


@dataclass
class Candidate:
    """One would-be sample. Exactly one of ``image_path``, ``image_bytes`` or ``image_url`` (fetched by
    the shard writer) holds the image of a pair or image sample.

    ``meta`` is JSON-serialisable and lands in the sample's ``json`` member unchanged.
    """

    key: str
    source: str
    modality: Modality
    source_id: str
    location: str
    text: str | None = None
    image_path: str | None = None
    image_bytes: bytes | None = None
    image_url: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.modality = Modality(self.modality)
        given = [x is not None for x in (self.image_path, self.image_bytes, self.image_url)]
        if sum(given) > 1:
            raise ValueError(f"{self.key}: give one of image_path, image_bytes, image_url")
        has_image = any(given)
        if has_image != (self.modality is not Modality.TEXT):
            raise ValueError(f"{self.key}: modality {self.modality.value} with has_image={has_image}")
        if (self.text is not None) != (self.modality is not Modality.IMAGE):
            raise ValueError(f"{self.key}: modality {self.modality.value} with text={self.text!r}")


@dataclass
class Reject:
    """A refused record: where it came from (file and line, or archive member) and why."""

    source: str
    location: str
    reason: Reason
    detail: str = ""
    key: str | None = None

    def __post_init__(self) -> None:
        self.reason = Reason(self.reason)

    @property
    def shard_key(self) -> str:
        """Rejects are spread over shards like samples; those without a key by their location."""
        return self.key if self.key is not None else self.location


def shard_key(record: Candidate | Reject) -> str:
    return record.key if isinstance(record, Candidate) else record.shard_key
