"""Image decoding and tensor preparation, on real images made in memory."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from functions.core.cards import Preprocessing
from functions.core.errors import PayloadTooLarge, ValidationFailed
from functions.core.preprocessing import decode_base64, decode_image, to_tensor

SPEC = Preprocessing(
    size=4, resize=6, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0), layout="NCHW"
)


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGB", "PNG"),
        ("RGB", "JPEG"),
        ("L", "PNG"),
        ("RGBA", "PNG"),
        ("P", "GIF"),
        ("RGB", "WEBP"),
        ("RGB", "BMP"),
    ],
)
def test_any_common_format_decodes_to_rgb(mode: str, fmt: str) -> None:
    image = decode_image(encode(Image.new(mode, (10, 8)), fmt))
    assert image.mode == "RGB"
    assert image.size == (10, 8)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90° clockwise: a portrait photo stored landscape
    raw = encode(Image.new("RGB", (20, 10)), "JPEG", exif=exif.tobytes())
    assert decode_image(raw).size == (10, 20)


def test_tensor_is_resized_cropped_normalised_and_laid_out() -> None:
    image = Image.new("RGB", (12, 6), (255, 127, 0))
    x = to_tensor(image, SPEC)
    assert x.shape == (1, 3, 4, 4)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [(255 - 127) / 128, 0.0, -127 / 128])
    nhwc = to_tensor(image, SPEC.model_copy(update={"layout": "NHWC"}))
    assert nhwc.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(nhwc[0].transpose(2, 0, 1), x[0])


def test_center_crop_keeps_the_middle() -> None:
    image = Image.new("RGB", (18, 6), (0, 0, 0))
    image.paste((255, 255, 255), (6, 0, 12, 6))  # a white middle third
    x = to_tensor(
        image, Preprocessing(size=6, resize=6, mean=(0, 0, 0), std=(1, 1, 1), layout="NHWC")
    )
    assert float(x.min()) > 200


def test_base64_with_line_breaks_and_data_uri() -> None:
    raw = encode(Image.new("RGB", (4, 4)), "PNG")
    wrapped = base64.encodebytes(raw).decode()  # 76-column lines, as `base64 cat.jpg` prints
    assert "\n" in wrapped
    assert decode_base64(wrapped) == raw
    assert decode_base64("data:image/png;base64," + base64.b64encode(raw).decode()) == raw


@pytest.mark.parametrize("text", ["not base64!", "abc", "   "])
def test_invalid_base64_is_a_validation_error(text: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        decode_base64(text)
    assert info.value.errors
    assert info.value.errors[0]["loc"] == ["image_data"]


def test_bytes_that_are_not_an_image() -> None:
    with pytest.raises(ValidationFailed, match="not a decodable image"):
        decode_image(b"%PDF-1.4 definitely not pixels")


def test_truncated_image() -> None:
    raw = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
    with pytest.raises(ValidationFailed):
        decode_image(raw[: len(raw) // 2])


def test_gigantic_image_is_refused_before_decoding() -> None:
    # A PNG header declaring 20000x20000 pixels: refused from the header alone.
    raw = encode(Image.new("1", (20000, 20000)), "PNG")
    with pytest.raises(PayloadTooLarge):
        decode_image(raw)
