"""Thumbnails of stored images, for the service (``/api/image?thumb=1``) and the HTML report: one decoder
for both, in draft mode (reduced-size JPEG decoding), and a bounded, shared, cached pool for the service.
Plain PIL; imports none of the service or the report."""

from __future__ import annotations

import io
import threading
import warnings
from collections import OrderedDict
from concurrent.futures import Future

QUALITY = 85


class ImageTooLarge(ValueError):
    """A stored image over PIL's decompression-bomb limit: no thumbnail (the original is still served)."""


def make_thumbnail(data: bytes, side: int) -> bytes:
    """A JPEG of at most ``side`` pixels a side. A JPEG is decoded in draft mode: libjpeg scales by 1/2, 1/4 or
    1/8 while decoding (DCT scaling), so a 100-megapixel photo never exists at full size in memory (issue 13:
    10 concurrent thumbnails of one 12000 x 9000 JPEG took 7 GB before). Other formats decode in full.
    PIL's bomb warning is silenced (ingest checked every image); its error (twice the limit) is ImageTooLarge."""
    from PIL import Image

    try:
        with warnings.catch_warnings():  # the corpus' images passed ingest's size check (image.max_pixels)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        with image:
            image.draft("RGB", (side, side))  # a no-op for formats without reduced decoding
            if image.mode != "RGB":
                image = image.convert("RGB")
            image.thumbnail((side, side))
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=QUALITY)
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"image too large for a thumbnail ({e}); ask for the original") from None
    return out.getvalue()


class Thumbnails:
    """Thumbnails by (key, side): at most ``decodes`` images read and decoded at once (memory is bounded by
    that, not by the number of clients), concurrent requests for one image share one decode, and the last
    ``cached`` thumbnails are kept (a few kB each)."""

    def __init__(self, read, decodes: int = 2, cached: int = 1024):
        self._read, self._cached = read, cached
        self._slots = threading.BoundedSemaphore(decodes)
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._pending: dict[tuple[str, int], Future] = {}
        self._lock = threading.Lock()

    def get(self, key: str, side: int) -> bytes:
        with self._lock:
            if (key, side) in self._cache:
                self._cache.move_to_end((key, side))
                return self._cache[(key, side)]
            pending = self._pending.get((key, side))
            if pending is None:
                future = self._pending[(key, side)] = Future()
        if pending is not None:
            return pending.result()
        try:
            with self._slots:
                data = make_thumbnail(self._read(key), side)
        except BaseException as e:
            with self._lock:
                del self._pending[(key, side)]
            future.set_exception(e)
            raise
        with self._lock:
            del self._pending[(key, side)]
            self._cache[(key, side)] = data
            while len(self._cache) > self._cached:
                self._cache.popitem(last=False)
        future.set_result(data)
        return data
