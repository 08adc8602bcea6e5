"""Bounded photo decoding: header checks first, then a DCT-scaled decode straight to a working size.

A photo is refused from its header alone (no pixel decoded) when it announces more pixels or larger
sides than the limits allow, so a 30 KB decompression bomb never becomes gigabytes of memory. JPEGs
are decoded with libjpeg's 1/2-1/8 DCT scaling ("draft" mode), so a 24 MP photo costs a 0.4 MP decode.
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# EXIF orientations 5-8 store the image sideways: the upright width is the stored height.
_SIDEWAYS_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION_TAG = 0x0112
# Alpha is composited over white, as a page shows a transparent photo; a fixed choice keeps
# features deterministic.
_ALPHA_BACKGROUND = 255


@dataclass(frozen=True)
class DecodeLimits:
    """What a photo's header may announce before it is refused (defaults = conf/photoscore.yaml)."""

    max_pixels: int = 100_000_000
    max_side: int = 30_000
    min_side: int = 1
    max_file_bytes: int = 64 * 1024 * 1024


class PhotoRejected(Exception):
    """A photo that cannot be decoded; carries the quarantine stage and reason code."""

    def __init__(self, reason_code: str, detail: str, stage: str = "decode"):
        super().__init__(f"{reason_code}: {detail}")
        self.reason_code = reason_code
        self.detail = detail
        self.stage = stage


@dataclass(frozen=True)
class DecodedPhoto:
    """The upright working-size RGB pixels plus what the header told us."""

    rgb: np.ndarray          # uint8 (h, w, 3), longest side <= sqrt(2) x the working side
    width: int               # upright original width
    height: int              # upright original height
    format: str              # Pillow's format name, e.g. "JPEG"
    is_progressive: bool
    has_exif: bool
    quantization: dict | None  # JPEG quantization tables, from the header


def _open_header(data: bytes, limits: DecodeLimits) -> Image.Image:
    if len(data) == 0:
        raise PhotoRejected("empty_file", "the file has zero bytes")
    if len(data) > limits.max_file_bytes:
        raise PhotoRejected(
            "file_too_large", f"{len(data)} bytes > limit {limits.max_file_bytes}", stage="read"
        )
    with warnings.catch_warnings():
        # Our own pixel limit below is the policy; Pillow's bomb warning is noise here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise PhotoRejected("decompression_bomb", str(exc)) from None
        except UnidentifiedImageError:
            raise PhotoRejected(
                "not_an_image", f"no image format recognises these {len(data)} bytes"
            ) from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise PhotoRejected("truncated_image", f"header unreadable: {exc}") from None
    width, height = image.size
    if width < limits.min_side or height < limits.min_side or max(width, height) > limits.max_side:
        raise PhotoRejected(
            "dimensions_out_of_range",
            f"{width}x{height} outside [{limits.min_side}, {limits.max_side}] px per side",
        )
    if width * height > limits.max_pixels:
        raise PhotoRejected(
            "decompression_bomb",
            f"header announces {width}x{height} = {width * height} px > limit {limits.max_pixels}",
        )
    return image


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 RGB array (CMYK, 16-bit, palette, alpha, grayscale, bilevel)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit samples: keep the top 8 bits (Pillow's convert("L") would clip at 255 instead).
        wide = np.asarray(image, dtype=np.uint32)
        shift = 8 if wide.max(initial=0) > 255 else 0
        gray = (wide >> shift).clip(0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        top = float(values.max(initial=0.0))
        scale = 255.0 / top if top > 255.0 else 1.0
        gray = np.nan_to_num(values * scale).clip(0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        alpha = rgba[:, :, 3:4] / 255.0
        blended = rgba[:, :, :3] * alpha + _ALPHA_BACKGROUND * (1.0 - alpha)
        return np.rint(blended).astype(np.uint8)
    if mode != "RGB":
        try:
            image = image.convert("RGB")
        except (ValueError, OSError) as exc:
            raise PhotoRejected("unsupported_mode", f"mode {mode}: {exc}") from None
    return np.asarray(image, dtype=np.uint8)


def dct_scale(longest: int, working_side: int) -> int:
    """The libjpeg DCT scale 1/s (s in 1, 2, 4, 8) whose output is nearest the working side."""
    return min((1, 2, 4, 8), key=lambda s: (abs(math.log2(longest / s / working_side)), s))


def _fit(width: int, height: int, working_side: int) -> tuple[int, int]:
    """Size after the final resize: images beyond sqrt(2) x the working side shrink to it."""
    longest = max(width, height)
    if longest <= working_side * math.sqrt(2):
        return width, height
    scale = working_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_photo(data: bytes, working_side: int, limits: DecodeLimits = DecodeLimits()) -> DecodedPhoto:
    """Decode `data` to upright RGB near `working_side` (longest side), or raise PhotoRejected.

    Corrupt-but-decodable JPEGs (libjpeg warnings such as extraneous bytes) are decoded as libjpeg
    renders them; data that ends before the image does is `truncated_image`.
    """
    image = _open_header(data, limits)
    stored_w, stored_h = image.size
    fmt = image.format or "UNKNOWN"
    progressive = bool(image.info.get("progressive") or image.info.get("progression"))
    quantization = getattr(image, "quantization", None) if fmt == "JPEG" else None
    try:
        # For PNG, EXIF may follow the pixel data, so reading it can decode the image.
        exif = image.getexif()
        orientation = exif.get(_EXIF_ORIENTATION_TAG, 1)
        if fmt == "JPEG":
            # libjpeg decodes straight to 1/2..1/8 size; the scale nearest the working side means
            # no resize at all for most photos (working images span working_side / sqrt(2) .. x sqrt(2)).
            dct = dct_scale(max(stored_w, stored_h), working_side)
            image.draft("RGB", (max(1, stored_w // dct), max(1, stored_h // dct)))
        image.seek(0)  # first frame of animations
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise PhotoRejected("truncated_image", f"pixel data unreadable: {exc}") from None
    except Image.DecompressionBombError as exc:
        raise PhotoRejected("decompression_bomb", str(exc)) from None
    sideways = orientation in _SIDEWAYS_ORIENTATIONS
    width, height = (stored_h, stored_w) if sideways else (stored_w, stored_h)
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    rgb = _to_rgb(image)
    h, w = rgb.shape[:2]
    target_w, target_h = _fit(w, h, working_side)
    if (target_w, target_h) != (w, h):
        rgb = cv2.resize(rgb, (target_w, target_h), interpolation=cv2.INTER_AREA)
    return DecodedPhoto(
        rgb=np.ascontiguousarray(rgb),
        width=width,
        height=height,
        format=fmt,
        is_progressive=progressive,
        has_exif=len(exif) > 0,
        quantization=quantization,
    )
