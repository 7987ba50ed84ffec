"""A photo -> the model's input tensor, from the manifest's preprocessing block alone.

Pillow and numpy only (no transformers, no torch), so a demo app's test vectors and
`edgekit classify` use exactly what the manifest says. The steps copy Hugging Face's PIL image
processor (`MobileViTImageProcessorPil`, and the generic PIL backend for normalization) and the
`transformers.image_utils.load_image` it is fed from, operation for operation, so the tensors
are identical, not merely close (tests/test_preprocess.py checks np.array_equal on real photos):

- loading: `ImageOps.exif_transpose`, then `convert("RGB")` (alpha dropped, not composited;
  greyscale repeated; palette expanded), as `load_image` and the HF pipelines do. The processor
  itself applies no EXIF orientation: a PIL image handed straight to it stays as stored, so a
  phone photo would reach the model sideways; edgekit follows `load_image`.
- resize: Pillow's `Image.resize` on the 8-bit image; shortest-edge sizes truncate
  (`int(size * long / short)`), as HF does.
- center crop: offsets `(H - h) // 2`, `(W - w) // 2`; zero-padding when the image is smaller.
- rescale: uint8 -> float64, times the factor, one rounding to float32.
- normalize: `(x - mean) / std` in float32.
- channel order and layout last.

transformers' default `MobileViTImageProcessor` (its torchvision backend, when torchvision is
installed) resizes with torchvision instead of Pillow, whose filters differ by a few grey levels
at edges: it is not the reference here, and it cannot be identical to this and to Pillow at once.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgekit.errors import EdgekitError
from edgekit.models.base import (
    ChannelOrder,
    CropRule,
    Interpolation,
    Layout,
    Preprocessing,
    ResizeRule,
)

PIL_FILTERS = {
    Interpolation.NEAREST: Image.Resampling.NEAREST,
    Interpolation.LANCZOS: Image.Resampling.LANCZOS,
    Interpolation.BILINEAR: Image.Resampling.BILINEAR,
    Interpolation.BICUBIC: Image.Resampling.BICUBIC,
    Interpolation.BOX: Image.Resampling.BOX,
    Interpolation.HAMMING: Image.Resampling.HAMMING,
}
_IMAGE_HINT = "pass a readable photo (JPEG, PNG, WebP, BMP, GIF or TIFF)."


class ImageError(EdgekitError):
    """An image file that is missing or cannot be decoded."""

    exit_code = 2


def load_image(source: str | Path | Image.Image) -> Image.Image:
    """Decode a file (or take a PIL image), apply its EXIF orientation, convert to RGB.

    A file that is missing, a folder, not an image, truncated or otherwise undecodable raises
    ImageError naming it.
    """
    if isinstance(source, Image.Image):
        return _upright_rgb(source, name="given as a PIL image")
    path = Path(source)
    if not path.exists():
        raise ImageError(f"Image '{path}' does not exist.", hint="check the path.")
    if path.is_dir():
        raise ImageError(f"'{path}' is a folder, not an image file.", hint=_IMAGE_HINT)
    try:
        with Image.open(path) as image:
            image.load()  # Image.open reads the header only; truncation shows here
            return _upright_rgb(image, name=f"'{path}'")
    except UnidentifiedImageError as exc:
        raise ImageError(f"'{path}' is not an image Pillow can decode.", hint=_IMAGE_HINT) from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"Image '{path}' has too many pixels to decode safely: {_first_line(exc)}",
            hint="downscale it first.",
        ) from exc
    except OSError as exc:  # truncated or corrupt data, unreadable file
        raise ImageError(
            f"Image '{path}' cannot be read: {exc.strerror or _first_line(exc)}.", hint=_IMAGE_HINT
        ) from exc
    except (ValueError, SyntaxError, EOFError) as exc:  # Pillow decoders' other failure types
        raise ImageError(
            f"Image '{path}' is damaged: {_first_line(exc)}.", hint=_IMAGE_HINT
        ) from exc


def preprocess(image: str | Path | Image.Image, preprocessing: Preprocessing) -> np.ndarray:
    """The model input for one photo: float32, (1, 3, H, W) for NCHW or (1, H, W, 3) for NHWC."""
    return preprocess_rgb(load_image(image), preprocessing)


def preprocess_rgb(image: Image.Image, preprocessing: Preprocessing) -> np.ndarray:
    """`preprocess` for an image that `load_image` returned (upright, RGB)."""
    pre = preprocessing
    resized = _resize(image, pre)
    pixels = np.asarray(resized, dtype=np.uint8)  # (H, W, 3)
    if pre.crop == CropRule.CENTER:
        pixels = center_crop(pixels, pre.crop_height, pre.crop_width)
    # HF rescales in float64 and rounds once: float32 arithmetic would be off by an ulp.
    values = (pixels.astype(np.float64) * pre.rescale_factor).astype(np.float32)
    values = (values - np.asarray(pre.mean, dtype=np.float32)) / np.asarray(
        pre.std, dtype=np.float32
    )
    if pre.channel_order == ChannelOrder.BGR:
        values = values[..., ::-1]
    if pre.layout == Layout.NCHW:
        values = values.transpose(2, 0, 1)
    return np.ascontiguousarray(values[np.newaxis], dtype=np.float32)


def resized_size(height: int, width: int, preprocessing: Preprocessing) -> tuple[int, int]:
    """(height, width) after the resize rule, with Hugging Face's integer arithmetic."""
    pre = preprocessing
    if pre.resize == ResizeRule.EXACT:
        return pre.resize_height, pre.resize_width
    if pre.resize == ResizeRule.NONE:
        return height, width
    size = pre.resize_shortest_edge
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)  # truncation, as transformers (and torchvision) do
    return (new_long, size) if width <= height else (size, new_long)


def center_crop(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (height, width) window from the middle of (H, W, C) `pixels`; zero-padded if smaller."""
    orig_height, orig_width = pixels.shape[:2]
    top = (orig_height - height) // 2
    left = (orig_width - width) // 2
    if top >= 0 and left >= 0:
        return pixels[top : top + height, left : left + width]
    padded_height, padded_width = max(height, orig_height), max(width, orig_width)
    pad_top = math.ceil((padded_height - orig_height) / 2)
    pad_left = math.ceil((padded_width - orig_width) / 2)
    padded = np.zeros((padded_height, padded_width, pixels.shape[2]), dtype=pixels.dtype)
    padded[pad_top : pad_top + orig_height, pad_left : pad_left + orig_width] = pixels
    top, left = top + pad_top, left + pad_left
    return padded[top : top + height, left : left + width]


def _resize(image: Image.Image, pre: Preprocessing) -> Image.Image:
    if pre.resize == ResizeRule.NONE:
        return image
    height, width = resized_size(image.height, image.width, pre)
    return image.resize((width, height), resample=PIL_FILTERS[pre.interpolation])


def _upright_rgb(image: Image.Image, *, name: str) -> Image.Image:
    try:
        upright = ImageOps.exif_transpose(image)
        return upright.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(
            f"Image {name} cannot be converted to RGB: {_first_line(exc)}.", hint=_IMAGE_HINT
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
