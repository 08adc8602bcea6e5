"""Degradations: the registry of kinds of damage a corpus photo can carry, and what each labels.

Each kind is a pure function `(image, rng, strength in [0, 1]) -> (image, parameters used)`
registered in `DEGRADATIONS` by name; `DEGRADATION_LABEL` names the boolean label it sets and
`degrade` applies several in the physical order. Heavy JPEG compression is the one kind that is an
encoder setting, not a pixel operation (`HEAVY_JPEG`, `heavy_jpeg_quality`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from udfs.errors import PhotoscoreError

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")


def _lerp(lo: float, hi: float, t: float) -> float:
    return lo + (hi - lo) * float(t)


def _loglerp(lo: float, hi: float, t: float) -> float:
    return math.exp(_lerp(math.log(lo), math.log(hi), t))


def _short_side(img: Image.Image) -> int:
    return min(img.size)


def _from_array(arr: np.ndarray, mode: str) -> Image.Image:
    # uint8 (h, w) -> L, (h, w, 3) -> RGB; Pillow infers the mode (passing it is deprecated).
    out = Image.fromarray(np.ascontiguousarray(arr))
    assert out.mode == mode, (out.mode, mode)
    return out


def apply_gaussian_blur(img: Image.Image, rng: np.random.Generator, strength: float):
    """Out-of-focus blur. Sigma scales with the image so the blur survives a downscaled analysis."""
    # 1.2..6 px at an 800 px short side: the low end is subtle, the high end unmistakable.
    sigma = _lerp(1.2, 6.0, strength) * _short_side(img) / 800 * rng.uniform(0.9, 1.1)
    sigma = max(sigma, 0.8)
    out = cv2.GaussianBlur(np.asarray(img), (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    return _from_array(out, img.mode), {"sigma": round(sigma, 3)}


def motion_blur_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A normalised line kernel of `length` pixels at `angle_deg` (camera shake along a line)."""
    size = int(math.ceil(length)) | 1
    kernel = np.zeros((size, size), np.float32)
    c = (size - 1) / 2
    dx = math.cos(math.radians(angle_deg)) * (length - 1) / 2
    dy = math.sin(math.radians(angle_deg)) * (length - 1) / 2
    # Sub-pixel line (shift=4 gives 1/16 px precision) so short kernels at odd angles are not empty.
    s = 16
    cv2.line(kernel, (round((c - dx) * s), round((c - dy) * s)),
             (round((c + dx) * s), round((c + dy) * s)), 1.0, 1, cv2.LINE_AA, shift=4)
    return kernel / kernel.sum()


def apply_motion_blur(img: Image.Image, rng: np.random.Generator, strength: float):
    """Camera-shake blur along a random direction."""
    length = _lerp(6.0, 32.0, strength) * _short_side(img) / 800 * rng.uniform(0.9, 1.1)
    length = max(length, 3.0)
    angle = float(rng.uniform(0, 180))
    out = cv2.filter2D(np.asarray(img), -1, motion_blur_kernel(length, angle),
                       borderType=cv2.BORDER_REFLECT)
    return _from_array(out, img.mode), {"length": round(length, 2), "angle": round(angle, 1)}


def _exposure_lut(factor: float) -> list[int]:
    # Exposure scales linear light, not sRGB values: convert with a 2.2 gamma, scale, clip
    # (blown highlights clip as a sensor does), convert back.
    x = np.arange(256, dtype=np.float64) / 255
    y = np.clip((x ** 2.2) * factor, 0, 1) ** (1 / 2.2)
    return [int(v) for v in np.round(y * 255)]


def _apply_lut(img: Image.Image, lut: list[int]) -> Image.Image:
    return img.point(lut * len(img.getbands()))


def apply_underexposure(img: Image.Image, rng: np.random.Generator, strength: float):
    """Too little light: 0.4x (subtle) down to 0.05x of the exposure."""
    factor = _loglerp(0.4, 0.05, strength) * rng.uniform(0.9, 1.1)
    return _apply_lut(img, _exposure_lut(factor)), {"exposure": round(factor, 4)}


def apply_overexposure(img: Image.Image, rng: np.random.Generator, strength: float):
    """Too much light: 2x (subtle) up to 9x the exposure, highlights clipping to white."""
    factor = _loglerp(2.0, 9.0, strength) * rng.uniform(0.9, 1.1)
    return _apply_lut(img, _exposure_lut(factor)), {"exposure": round(factor, 4)}


def apply_sensor_noise(img: Image.Image, rng: np.random.Generator, strength: float):
    """Poisson-Gaussian sensor noise, independent per channel (colour noise).

    Shot noise has variance signal/photons, read noise a constant floor. The noise field is drawn
    on a grid of "grain" pixels (about 1/700 of the short side) and upsampled, as demosaicing and
    in-camera processing correlate real noise; white per-pixel noise would average away when the
    feature extractor downsizes the photo, leaving a label nobody can see.
    """
    photons = _loglerp(500.0, 12.0, strength) * rng.uniform(0.85, 1.15)
    read = _lerp(0.004, 0.03, strength)
    arr = np.asarray(img, dtype=np.float32) / 255
    h, w = arr.shape[:2]
    grain = max(1.0, _short_side(img) / 700)
    gh, gw = max(1, round(h / grain)), max(1, round(w / grain))
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    z = rng.standard_normal((gh, gw, channels), dtype=np.float32)
    if (gh, gw) != (h, w):
        z = cv2.resize(z, (w, h), interpolation=cv2.INTER_LINEAR)
        # Bilinear upsampling shrinks the variance; rescale so `photons` keeps its meaning.
        z = z.reshape(h, w, channels) / max(float(z.std()), 1e-6)
    z = z.reshape(arr.shape)
    std = np.sqrt(arr / photons + read * read)
    out = np.clip((arr + std * z) * 255 + 0.5, 0, 255).astype(np.uint8)
    return _from_array(out, img.mode), {"photons": round(photons, 2), "read_sigma": round(read, 4),
                                         "grain": round(grain, 2)}


SPAM_LINES_LATIN = (
    "BUY NOW -50%", "FREE SHIPPING", "Click here to WIN!", "www.best-deals.example",
    "LIMITED OFFER", "Call +1 555 0199", "Subscribe today", "Hot singles nearby",
    "100% GUARANTEED", "Cheap pills online", "SALE SALE SALE", "Only $9.99",
)
SPAM_LINES_CYRILLIC = (
    "СКИДКА 70%", "Купи сейчас!", "Бесплатная доставка", "Звоните: 8 800 555-35-35",
    "Только сегодня", "Акция! Лучшая цена", "Заработок без вложений", "Подпишись!",
    "РАСПРОДАЖА", "Кредит за 5 минут",
)
_FONT_FILES = ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "DejaVuSansCondensed-Bold.ttf")


def font_paths(font_dir: Path = FONT_DIR) -> list[Path]:
    """The DejaVu fonts used for overlaid text; a clear error when fonts-dejavu-core is missing."""
    found = [font_dir / f for f in _FONT_FILES if (font_dir / f).is_file()]
    if not found:
        raise PhotoscoreError(
            f"no DejaVu Sans font under {font_dir}: install the Debian package fonts-dejavu-core "
            f"(apt-get install fonts-dejavu-core); the corpus overlays text with it."
        )
    return found


def apply_text_overlay(img: Image.Image, rng: np.random.Generator, strength: float,
                       fonts: Sequence[Path] | None = None):
    """Spam-like overlaid text in Latin and Cyrillic: several coloured lines, large and small.

    Subtle overlays (low strength) are one or two small lines, like a watermark or caption.
    """
    fonts = list(fonts) if fonts is not None else font_paths()
    out = img.convert("RGB")
    draw = ImageDraw.Draw(out)
    w, h = out.size
    short = min(w, h)
    n_lines = int(rng.integers(1, 3)) if strength < 0.3 else int(rng.integers(2, 7))
    pool = SPAM_LINES_LATIN + SPAM_LINES_CYRILLIC
    lines = []
    y = float(rng.uniform(0.03, 0.45 if n_lines > 3 else 0.75)) * h
    for i in range(n_lines):
        text = pool[int(rng.integers(len(pool)))]
        large = strength >= 0.3 and rng.random() < 0.5
        size = short * (rng.uniform(0.07, 0.13) if large else rng.uniform(0.03, 0.05))
        size = max(9, int(size))
        font_file = fonts[int(rng.integers(len(fonts)))]
        font = ImageFont.truetype(str(font_file), size)
        # Shrink until the line fits the width: clipped spam is still spam, but readable is likelier.
        while font.getlength(text) > 0.95 * w and size > 9:
            size = max(9, int(size * 0.85))
            font = ImageFont.truetype(str(font_file), size)
        text_w = font.getlength(text)
        x = float(rng.uniform(0.02 * w, max(0.02 * w, w - text_w - 0.02 * w)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if max(colour) < 160:  # keep it vivid: spam is meant to be seen
            colour = tuple(min(255, c + 120) for c in colour)
        stroke = int(max(1, size // 14)) if rng.random() < 0.6 else 0
        stroke_fill = (0, 0, 0) if sum(colour) > 300 else (255, 255, 255)
        draw.text((x, y), text, font=font, fill=colour, stroke_width=stroke, stroke_fill=stroke_fill)
        lines.append({"text": text, "size": size, "font": font_file.name})
        y += size * float(rng.uniform(1.15, 1.6))
        if y > h - size:
            y = float(rng.uniform(0.02, 0.3)) * h
    return out, {"lines": lines}


DEGRADATIONS: dict[str, Callable] = {
    "gaussian_blur": apply_gaussian_blur,
    "motion_blur": apply_motion_blur,
    "underexposure": apply_underexposure,
    "overexposure": apply_overexposure,
    "noise": apply_sensor_noise,
    "text": apply_text_overlay,
}
# Heavy JPEG compression is an encoder setting (quality 5-15), not a pixel operation.
HEAVY_JPEG = "heavy_jpeg"

# Which boolean label each degradation sets (low_quality is set by all of them).
DEGRADATION_LABEL = {
    "gaussian_blur": "blurred",
    "motion_blur": "blurred",
    "underexposure": "dark",
    "overexposure": "overexposed",
    "noise": "noisy",
    "text": "has_text",
    HEAVY_JPEG: "heavy_compression",
}
# Applied in this order: light reaches the sensor (exposure), optics/shake blur it, the sensor adds
# noise, then someone overlays text, and the encoder compresses last.
_APPLY_ORDER = ("underexposure", "overexposure", "gaussian_blur", "motion_blur", "noise", "text")


def heavy_jpeg_quality(strength: float) -> int:
    """The JPEG quality of a heavily compressed photo: 15 (subtle) down to 5."""
    return int(round(_lerp(15, 5, strength)))


def degrade(img: Image.Image, rng: np.random.Generator, strengths: Mapping[str, float],
            fonts: Sequence[Path] | None = None) -> tuple[Image.Image, dict]:
    """Apply the pixel degradations named in `strengths` (name -> strength), in physical order.

    Returns the degraded image and {name: parameters used}. Names that are not pixel operations
    (`HEAVY_JPEG`) are left to the encoder. `fonts` goes to the text overlay (see `font_paths`).
    """
    params: dict = {}
    for name in _APPLY_ORDER:
        if name in strengths:
            kwargs = {"fonts": fonts} if name == "text" else {}
            img, params[name] = DEGRADATIONS[name](img, rng, strengths[name], **kwargs)
    return img, params
