"""Image decoding, validation and normalisation for ingest.

Every image is fully decoded (a truncated file fails here, not in the trainer), turned upright by its
EXIF orientation, converted to RGB and optionally resized so its longest side fits ``max_side``.
With ``encode: keep`` the original bytes are stored when no pixel had to change, which keeps ingest
lossless and fast; otherwise the result is re-encoded.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
from dataclasses import dataclass

from schemas.config import ImageConfig

_ORIENTATION = 0x0112  # EXIF tag
_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")  # object reprs would make rejects differ between runs
_KEEPABLE = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


class ImageError(ValueError):
    """Bytes that are not a decodable image."""


@dataclass(frozen=True)
class ProcessedImage:
    data: bytes
    extension: str  # the WebDataset member extension: jpg, png or webp
    width: int
    height: int
    sha256: str
    phash: str  # 64-bit perceptual hash, 16 hex digits (near-duplicate detection)


def process_image(data: bytes, config: ImageConfig) -> ProcessedImage:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            original_format = opened.format
            opened.load()
            changed = opened.getexif().get(_ORIENTATION, 1) != 1
            image = ImageOps.exif_transpose(opened)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"{type(e).__name__}: {_ADDRESS.sub('the bytes', str(e))}") from e
    if image.mode != "RGB":
        image = image.convert("RGB")
        changed = True
    if config.max_side and max(image.size) > config.max_side:
        scale = config.max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
        changed = True
    if config.encode == "keep" and not changed and original_format in _KEEPABLE:
        out, extension = data, _KEEPABLE[original_format]
    else:
        out, extension = _encode(image, "png" if config.encode == "png" else "jpg", config.jpeg_quality)
    return ProcessedImage(out, extension, image.width, image.height, hashlib.sha256(out).hexdigest(),
                          perceptual_hash(image))


def perceptual_hash(image) -> str:
    """pHash: the signs of the 8x8 lowest 2-D DCT frequencies of the 32x32 grey image against their
    median. Robust to re-encoding and resizing; Hamming distance compares two images."""
    import numpy as np
    from PIL import Image

    grey = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_dct_matrix() @ grey @ _dct_matrix().T)[:8, :8]
    return np.packbits(low.flatten() > np.median(low)).tobytes().hex()


@functools.cache
def _dct_matrix(size: int = 32):
    import numpy as np

    n = np.arange(size)
    return np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size))


def _encode(image, extension: str, quality: int) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    if extension == "png":
        image.save(buffer, format="PNG", optimize=False)
    else:
        image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue(), extension
