"""Image decoding, validation and normalisation for ingest.

Every image is fully decoded (a truncated file fails here, not in the trainer), turned upright by its
EXIF orientation, converted to RGB (``to_rgb``: every PIL mode, with its own value range) and optionally
resized so its longest side fits ``max_side``. With ``encode: keep`` the original bytes are stored when no
pixel had to change, which keeps ingest lossless and fast; otherwise the result is re-encoded. An image of
more than ``max_pixels`` pixels is refused from its header, before anything is decoded, in place of PIL's
decompression-bomb warning.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import re
import warnings
from dataclasses import dataclass

from schemas.config import ImageConfig

_ORIENTATION = 0x0112  # EXIF tag
_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")  # object reprs would make rejects differ between runs
_PIXELS = re.compile(r"\((\d+) pixels\)")  # in PIL's DecompressionBombError message
_KEEPABLE = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_HASH_SIZE = 32  # pHash: the grey image is resampled to 32x32 before its DCT


class ImageError(ValueError):
    """Bytes that are not a decodable image."""


class ImageTooLarge(ImageError):
    """An image of more pixels than ``image.max_pixels`` (a ``too_large`` reject)."""


BACKGROUND = (255, 255, 255)  # what transparent pixels are composited on: white, as a web page shows them
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # greys in 0..65535 (PIL opens 16-bit PNG/TIFF so)


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
        with open_stored(data, config.max_pixels) as opened:
            width, height = opened.size
            if width * height > config.max_pixels:
                raise ImageTooLarge(f"{width}x{height} = {width * height} pixels > image.max_pixels "
                                    f"{config.max_pixels}")
            original_format = opened.format
            opened.load()
            changed = opened.getexif().get(_ORIENTATION, 1) != 1
            image = ImageOps.exif_transpose(opened) if changed else opened  # no copy of an upright image
    except Image.DecompressionBombError as e:  # over twice PIL's limit, which is raised to max_pixels
        pixels = _PIXELS.search(str(e))
        size = f"{pixels.group(1)} pixels" if pixels else _ADDRESS.sub("the bytes", str(e))
        raise ImageTooLarge(f"{size} > image.max_pixels {config.max_pixels}") from e
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{type(e).__name__}: {_ADDRESS.sub('the bytes', str(e))}") from e
    if image.mode != "RGB":
        image = to_rgb(image)
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
    # sha256 of the stored bytes (what exact deduplication compares); pHash of the stored pixels
    return ProcessedImage(out, extension, image.width, image.height, hashlib.sha256(out).hexdigest(),
                          perceptual_hash(image))


@contextlib.contextmanager
def open_stored(data: bytes, max_pixels: int | None = None):
    """``Image.open`` without PIL's decompression-bomb warning: the caller checks the size itself (ingest,
    against ``image.max_pixels``) or opens an image ingest has checked already (the report). PIL's
    own error limit (twice its warning limit) is raised to ``max_pixels`` when that is larger."""
    from PIL import Image

    if max_pixels and max_pixels > (Image.MAX_IMAGE_PIXELS or max_pixels):
        Image.MAX_IMAGE_PIXELS = max_pixels  # process-wide, only ever raised, to a limit checked before decoding
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
    with image:
        yield image


def to_rgb(image):
    """An RGB image of any PIL mode, each by its own value range:

    - ``I;16``/``I`` (16-bit PNG and TIFF greys): 0..65535 scaled to 0..255 (clipped), not cut at 255;
    - ``F`` (float greys): 0.0..1.0 scaled to 0..255 (clipped);
    - ``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``, ``P`` or ``L`` with a transparent colour:
      composited over ``BACKGROUND`` (white), ``out = c * a + 255 * (1 - a)``, rounded;
    - ``L``, ``1``, ``P``, ``CMYK`` (``(255 - c)(255 - k) / 255``), ``YCbCr`` (JFIF), ``LAB``, ``HSV``: PIL's
      own conversion."""
    import numpy as np
    from PIL import Image

    if image.mode in _SIXTEEN_BIT or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255 / 65535 if image.mode in _SIXTEEN_BIT else 255.0
        grey = np.floor(np.clip(values * scale, 0, 255) + 0.5).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint32)
        alpha = rgba[..., 3:]
        background = np.asarray(BACKGROUND, dtype=np.uint32)
        out = (rgba[..., :3] * alpha + background * (255 - alpha) + 127) // 255
        return Image.fromarray(out.astype(np.uint8), "RGB")
    return image.convert("RGB")


def perceptual_hash(image) -> str:
    """pHash: the signs of the 8x8 lowest 2-D DCT frequencies of the 32x32 grey image against their
    median. Robust to re-encoding and resizing; Hamming distance compares two images.

    The image is first reduced by an integer factor (``Image.reduce``: a box average, so no aliasing) to
    64-127 px on its short side and made grey. The Lanczos resampling to 32x32 and the DCT are then one
    product, ``(D W_h) grey (D W_w)^T``, with ``W`` PIL's Lanczos weights and ``D`` the 8 lowest DCT rows,
    both cached per side length (a third of the hash's time was PIL's resample of a tiny image). The
    Lanczos step still spans at least 2 pixels per output pixel, so resized copies stay as close as with
    the whole image."""
    import numpy as np

    factor = min(image.size) // (2 * _HASH_SIZE)
    small = image.reduce(factor) if factor > 1 else image
    grey = np.asarray(small.convert("L"), dtype=np.float64)
    low = (_hash_rows(grey.shape[0]) @ grey @ _hash_rows(grey.shape[1]).T).flatten()
    middle = np.sort(low)[31:33]  # np.median's value, without its overhead (a tenth of the hash's time)
    return np.packbits(low > (middle[0] + middle[1]) / 2).tobytes().hex()


@functools.lru_cache(maxsize=512)  # reduced sides: the short one 64-127 px, the long one by aspect: bounded
def _hash_rows(size: int):
    """The 8 lowest DCT rows of a ``size``-pixel side resampled to 32: ``D @ W``, 8 x ``size``."""
    return _dct_rows() @ _lanczos(size, _HASH_SIZE)


def _lanczos(size: int, out: int):
    """PIL's Lanczos (a = 3) resampling of ``size`` points to ``out`` as an ``out x size`` matrix: output
    pixel ``i`` centred at ``(i + 0.5) * size / out``, the kernel widened by the scale when shrinking,
    every row normalised to sum 1 (``Resample.c: precompute_coeffs``)."""
    import numpy as np

    ratio = size / out
    distance = ((np.arange(size) + 0.5)[None, :] - (np.arange(out) + 0.5)[:, None] * ratio) / max(ratio, 1.0)
    weights = np.sinc(distance) * np.sinc(distance / 3) * (np.abs(distance) < 3)
    return weights / weights.sum(axis=1, keepdims=True)


@functools.cache
def _dct_rows(size: int = _HASH_SIZE, rows: int = 8):
    """The first ``rows`` rows of the (unnormalised) DCT-II matrix of ``size`` points."""
    import numpy as np

    n = np.arange(size)
    return np.cos(np.pi * (2 * n[None, :] + 1) * n[:rows, None] / (2 * size))


def _encode(image, extension: str, quality: int) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    if extension == "png":
        image.save(buffer, format="PNG", optimize=False)
    else:
        image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue(), extension
