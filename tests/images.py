"""Small real images for tests, drawn with PIL."""

import io

from PIL import Image


def jpeg(width=64, height=48, color=(200, 30, 30), orientation=None, mode="RGB", fmt="JPEG") -> bytes:
    image = Image.new(mode, (width, height), color if mode == "RGB" else 128)
    image.paste((20, 20, 220) if mode == "RGB" else 10, (0, 0, width // 2, height // 4))  # an asymmetric mark
    buffer = io.BytesIO()
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()
