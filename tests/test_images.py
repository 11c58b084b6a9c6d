import hashlib
import io

import pytest
from PIL import Image

from pipelines.images import ImageError, process_image
from schemas.config import ImageConfig
from tests.images import jpeg


def test_keep_stores_original_bytes_when_nothing_changes():
    data = jpeg()
    out = process_image(data, ImageConfig())
    assert out.data == data and out.extension == "jpg"
    assert (out.width, out.height) == (64, 48)
    assert out.sha256 == hashlib.sha256(data).hexdigest()


def test_exif_orientation_is_applied_and_reencoded():
    data = jpeg(64, 48, orientation=6)  # rotate 90 degrees clockwise on display
    out = process_image(data, ImageConfig())
    assert (out.width, out.height) == (48, 64)
    assert out.data != data
    decoded = Image.open(io.BytesIO(out.data))
    assert decoded.size == (48, 64) and decoded.getexif().get(0x0112) is None


def test_non_rgb_is_converted():
    out = process_image(jpeg(mode="L"), ImageConfig())
    assert Image.open(io.BytesIO(out.data)).mode == "RGB"
    png = process_image(jpeg(fmt="PNG", mode="P"), ImageConfig())
    assert png.extension == "jpg" and Image.open(io.BytesIO(png.data)).mode == "RGB"


def test_resize_keeps_aspect_and_png_encode():
    out = process_image(jpeg(400, 100), ImageConfig(max_side=200, encode="png"))
    assert (out.width, out.height) == (200, 50) and out.extension == "png"
    small = process_image(jpeg(40, 30), ImageConfig(max_side=200))
    assert (small.width, small.height) == (40, 30)


@pytest.mark.parametrize("data", [b"", b"not an image at all", jpeg()[:200]])
def test_corrupt_images_raise(data):
    with pytest.raises(ImageError):
        process_image(data, ImageConfig())


def test_error_messages_are_reproducible():
    with pytest.raises(ImageError) as first:
        process_image(b"garbage", ImageConfig())
    with pytest.raises(ImageError) as second:
        process_image(bytearray(b"garbage"), ImageConfig())
    assert str(first.value) == str(second.value) and "0x" not in str(first.value)
