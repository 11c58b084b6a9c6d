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


@pytest.mark.parametrize("scale", [1, 8])  # the hash reduces the image first: by 4, and by 37 at 1600x1200
def test_perceptual_hash_survives_resizing_and_reencoding_but_tells_images_apart(scale):
    from PIL import ImageDraw

    def scene(shift):
        image = Image.new("RGB", (200 * scale, 150 * scale), (90, 160, 220))
        draw = ImageDraw.Draw(image)
        draw.rectangle(tuple(scale * v for v in (20 + shift, 80, 90 + shift, 140)), fill=(200, 40, 40))
        draw.ellipse(tuple(scale * v for v in (120 - shift, 10, 180 - shift, 70)), fill=(250, 220, 40))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    original = process_image(scene(0), ImageConfig())
    smaller = process_image(scene(0), ImageConfig(max_side=90, encode="jpeg", jpeg_quality=60))
    other = process_image(scene(60), ImageConfig())
    assert len(original.phash) == 16
    assert _hamming(original.phash, smaller.phash) <= 4
    assert _hamming(original.phash, other.phash) >= 12


@pytest.mark.parametrize("shape", [(74, 66), (64, 127), (300, 31), (20, 50)])  # shrunk, and enlarged (< 32)
def test_hash_resampling_matrix_is_pils_lanczos(shape):
    """The pHash resamples to 32x32 by a matrix product; it must be the resize it replaced (PIL's Lanczos),
    within PIL's rounding to 8 bits between its two passes."""
    import numpy as np

    from pipelines.images import _lanczos

    height, width = shape
    rows, cols = np.mgrid[0:height, 0:width]
    grey = (127 + 60 * np.sin(rows / 5.0) * np.cos(cols / 7.0) + 50 * ((rows + cols) % 23 < 9)).astype(np.uint8)
    pil = np.asarray(Image.fromarray(grey, "L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    ours = _lanczos(height, 32) @ grey @ _lanczos(width, 32).T
    assert np.abs(pil - ours).max() <= 1.5
    assert np.abs(pil - ours).mean() < 0.5


# --- every PIL mode a real corpus holds, pixel by pixel ------------------------------------------------------


def _encoded(image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _stored_pixels(data: bytes):
    import numpy as np

    out = process_image(data, ImageConfig(encode="png"))  # lossless, so every pixel can be compared
    decoded = Image.open(io.BytesIO(out.data))
    assert decoded.mode == "RGB" and out.extension == "png"
    return np.asarray(decoded)


def _on_white(rgb, alpha):
    """The reference compositing: straight alpha over white, rounded."""
    import numpy as np

    rgb, alpha = np.asarray(rgb, dtype=np.float64), np.asarray(alpha, dtype=np.float64)[..., None] / 255
    return np.floor(rgb * alpha + 255 * (1 - alpha) + 0.5).astype(np.uint8)


def test_sixteen_bit_and_integer_greys_are_scaled_not_clipped():
    import numpy as np

    values = np.array([[0, 257, 40000, 65535]], dtype=np.uint16)
    grey = _stored_pixels(_encoded(Image.fromarray(values), "PNG"))  # mode I;16, as the PNG
    want = np.floor(values / 65535 * 255 + 0.5).astype(np.uint8)  # 40000 -> 156, not 255
    assert grey.tolist() == np.repeat(want[..., None], 3, axis=-1).tolist()
    wide = np.array([[0, 257, 40000, 65535, 70000, -5]], dtype=np.int32)  # mode I (TIFF): 16-bit range, clipped
    grey = _stored_pixels(_encoded(Image.fromarray(wide), "TIFF"))
    assert grey[..., 0].tolist() == [[0, 1, 156, 255, 255, 0]] and (grey[..., 0] == grey[..., 2]).all()


def test_float_greys_are_taken_as_zero_to_one():
    import numpy as np

    values = np.array([[0.0, 0.25, 0.5, 1.0, 2.0, -1.0]], dtype=np.float32)
    grey = _stored_pixels(_encoded(Image.fromarray(values), "TIFF"))  # mode F
    assert grey[..., 1].tolist() == [[0, 64, 128, 255, 255, 0]]


def test_alpha_is_composited_on_white():
    import numpy as np

    rgba = np.array([[[200, 100, 0, 0], [200, 100, 0, 64], [200, 100, 0, 255], [10, 20, 30, 128]]], dtype=np.uint8)
    assert _stored_pixels(_encoded(Image.fromarray(rgba, "RGBA"), "PNG")).tolist() == \
        _on_white(rgba[..., :3], rgba[..., 3]).tolist()
    la = np.array([[[77, 128], [77, 0], [0, 255]]], dtype=np.uint8)
    want = _on_white(np.repeat(la[..., :1], 3, axis=-1), la[..., 1])
    assert _stored_pixels(_encoded(Image.fromarray(la, "LA"), "PNG")).tolist() == want.tolist()
    assert want[0, 0].tolist() == [166] * 3 and want[0, 1].tolist() == [255] * 3


def test_palette_transparency_is_composited_and_opaque_palettes_keep_their_colours():
    palette = Image.new("P", (3, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    palette.putdata([0, 1, 2])
    assert _stored_pixels(_encoded(palette, "PNG")).tolist() == [[[255, 0, 0], [0, 255, 0], [0, 0, 255]]]
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", transparency=1)  # entry 1 (green) fully transparent
    assert _stored_pixels(buffer.getvalue()).tolist() == [[[255, 0, 0], [255, 255, 255], [0, 0, 255]]]


def test_cmyk_and_ycbcr_follow_their_standard_formulas():
    import numpy as np

    from pipelines.images import to_rgb

    cmyk = np.array([[[0, 255, 255, 0], [100, 50, 0, 128], [0, 0, 0, 255], [0, 0, 0, 0]]], dtype=np.uint8)
    got = _stored_pixels(_encoded(Image.fromarray(cmyk, "CMYK"), "TIFF")).astype(int)
    k = cmyk[..., 3:].astype(float)
    want = (255 - cmyk[..., :3]) * (255 - k) / 255  # naive CMYK -> RGB, as PIL and browsers without a profile
    assert np.abs(got - want).max() <= 1 and got[0, 0].tolist() == [255, 0, 0] and got[0, 2].tolist() == [0, 0, 0]
    ycc = np.array([[[100, 50, 200], [128, 128, 128], [255, 128, 128]]], dtype=np.uint8)
    got = np.asarray(to_rgb(Image.fromarray(ycc, "YCbCr"))).astype(int)
    y, cb, cr = (ycc[..., i].astype(float) for i in range(3))  # JFIF (ITU-R BT.601, full range)
    want = np.clip(np.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                             y + 1.772 * (cb - 128)], axis=-1), 0, 255)
    assert np.abs(got - want).max() <= 1


def test_grey_and_rgb_images_convert_as_before():
    import numpy as np

    grey = np.array([[0, 77, 255]], dtype=np.uint8)
    assert _stored_pixels(_encoded(Image.fromarray(grey, "L"), "PNG"))[..., 2].tolist() == grey.tolist()
    data = jpeg()
    assert process_image(data, ImageConfig()).data == data  # RGB with nothing to change: the original bytes


# --- a pixel limit instead of PIL's decompression-bomb warning ------------------------------------------------


def _png_header(width: int, height: int) -> bytes:
    from pipelines.minicorpus.scenes import header_only_png

    return header_only_png(width, height)


@pytest.mark.parametrize("side", [9500, 20000])  # over PIL's warning limit (89.5M pixels), over its error limit
def test_images_over_max_pixels_are_too_large_without_a_pil_warning(side):
    import warnings

    from pipelines.images import ImageTooLarge

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        with pytest.raises(ImageTooLarge, match=f"{side * side} pixels > image.max_pixels 89478485"):
            process_image(_png_header(side, side), ImageConfig())
        with pytest.raises(ImageTooLarge, match="12 pixels > image.max_pixels 11"):
            process_image(jpeg(4, 3), ImageConfig(max_pixels=11))
    assert process_image(jpeg(4, 3), ImageConfig(max_pixels=12)).width == 4


def test_stored_images_open_without_a_pil_warning():
    import warnings

    from pipelines.images import open_stored

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_stored(_png_header(9500, 9500)) as image:  # a stored image may exceed PIL's limit by config
            assert image.size == (9500, 9500)
