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


def _hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def test_perceptual_hash_survives_resizing_and_reencoding_but_tells_images_apart():
    from PIL import ImageDraw

    def scene(shift):
        image = Image.new("RGB", (200, 150), (90, 160, 220))
        draw = ImageDraw.Draw(image)
        draw.rectangle((20 + shift, 80, 90 + shift, 140), fill=(200, 40, 40))
        draw.ellipse((120 - shift, 10, 180 - shift, 70), fill=(250, 220, 40))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    original = process_image(scene(0), ImageConfig())
    smaller = process_image(scene(0), ImageConfig(max_side=90, encode="jpeg", jpeg_quality=60))
    other = process_image(scene(60), ImageConfig())
    assert len(original.phash) == 16
    assert _hamming(original.phash, smaller.phash) <= 4
    assert _hamming(original.phash, other.phash) >= 12
