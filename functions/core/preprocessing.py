"""Image preprocessing as a model card describes it, in numpy and Pillow.

decode (any format Pillow reads: JPEG, PNG, GIF, WebP, BMP, TIFF; grayscale, palette and
alpha included) -> honour EXIF orientation -> RGB -> resize the shorter side (bilinear) ->
center crop -> float32 -> (x - mean) / std -> NCHW or NHWC with a batch axis of 1.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from functions.core.cards import Preprocessing
from functions.core.errors import PayloadTooLarge, ValidationFailed

# Far above any camera photo, far below what would exhaust memory when decoded.
MAX_PIXELS = 50_000_000


def decode_base64(text: str, field: str = "image_data") -> bytes:
    """Strict base64 that tolerates line breaks (``base64`` wraps at 76) and a data: URI."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValidationFailed(
            f"{field} is not valid base64", errors=[_error(field, "base64", str(e))]
        ) from e
    if not raw:
        raise ValidationFailed(f"{field} is empty", errors=[_error(field, "empty", "no bytes")])
    return raw


def decode_image(raw: bytes, field: str = "image_data") -> Image.Image:
    """Decode image bytes to an RGB image, or raise a 4xx naming the problem."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            if image.width * image.height > MAX_PIXELS:
                raise PayloadTooLarge(
                    f"image is {image.width}x{image.height}, above {MAX_PIXELS} pixels"
                )
            return ImageOps.exif_transpose(image).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValidationFailed(
            f"{field} is not a decodable image", errors=[_error(field, "image", str(e))]
        ) from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PayloadTooLarge(f"{field}: {e}") from e


def to_tensor(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """Resize, crop and normalise ``image`` into a batch of one, as ``spec`` says."""
    width, height = image.size
    scale = spec.resize / min(width, height)
    resized = image.resize(
        (max(spec.size, round(width * scale)), max(spec.size, round(height * scale))),
        Image.Resampling.BILINEAR,
    )
    left = (resized.width - spec.size) // 2
    top = (resized.height - spec.size) // 2
    cropped = resized.crop((left, top, left + spec.size, top + spec.size))
    pixels: np.ndarray = np.asarray(cropped, dtype=np.float32)
    pixels = (pixels - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels[np.newaxis])


def _error(field: str, kind: str, msg: str) -> dict[str, object]:
    return {"type": kind, "loc": [field], "msg": msg}
