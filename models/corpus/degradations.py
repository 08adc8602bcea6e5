"""Degradations: the registry of kinds of damage a corpus photo can carry, and what each labels.

Each kind is a pure function `(image, rng, strength in [0, 1]) -> (image, parameters used)`
registered in `DEGRADATIONS` by name; `DEGRADATION_LABEL` names the boolean label it sets and
`degrade` applies several in the physical order. Heavy JPEG compression is the one kind that is an
encoder setting, not a pixel operation (`HEAVY_JPEG`, `heavy_jpeg_quality`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

from udfs.errors import PhotoscoreError

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")


def _lerp(lo: float, hi: float, t: float) -> float:
    return lo + (hi - lo) * float(t)


def _loglerp(lo: float, hi: float, t: float) -> float:
    return math.exp(_lerp(math.log(lo), math.log(hi), t))


@dataclass(frozen=True)
class Range:
    """A parameter's range: strength 0 maps to `subtle`, 1 to `strong` (geometrically when `log`);
    each draw is then jittered by +-`jitter` so two photos of one strength still differ."""

    subtle: float
    strong: float
    log: bool = False
    jitter: float = 0.15

    def draw(self, strength: float, rng: np.random.Generator) -> float:
        """The parameter for `strength` in [0, 1], jittered with `rng`."""
        base = (_loglerp if self.log else _lerp)(self.subtle, self.strong, strength)
        return base * float(rng.uniform(1 - self.jitter, 1 + self.jitter))


# Every degradation's parameter ranges in one place. Sizes are fractions of the photo's longest
# side, so a degradation means the same at 0.3 MP and at 12 MP and a model cannot learn one size:
# a 0.0012 blur sigma is 1.9 px on a 1600 px photo (barely visible at 100 %), 0.008 is 13 px.
PARAMETER_RANGES: dict[str, Range] = {
    "blur_sigma": Range(0.0012, 0.008, log=True),         # x longest side
    "motion_length": Range(0.004, 0.03, log=True),        # x longest side
    "exposure_under": Range(0.4, 0.05, log=True),         # linear-light factor
    "exposure_over": Range(2.0, 9.0, log=True),           # linear-light factor
    "tone_gamma": Range(1.0, 1.0, jitter=0.15),           # camera tone curve around sRGB's 2.2
    "noise_photons": Range(500.0, 12.0, log=True),        # shot noise: variance = signal/photons
    "noise_read_sigma": Range(0.004, 0.03),               # read-noise floor, fraction of white
    "jpeg_quality": Range(15.0, 5.0, jitter=0.0),         # heavy compression
}
MIN_BLUR_SIGMA_PX = 1.0    # below a pixel a blur is invisible at any size: never label it
MIN_MOTION_LENGTH_PX = 3.0
# Sensor noise grain, in pixels: 1 (white, per pixel, as a small sensor at base resolution) up to
# 1/700 of the longest side (correlated, as demosaicing and in-camera processing make it).
GRAIN_PER_LONG_SIDE = 1 / 700


def _long_side(img: Image.Image) -> int:
    return max(img.size)


def _from_array(arr: np.ndarray, mode: str) -> Image.Image:
    # uint8 (h, w) -> L, (h, w, 3) -> RGB; Pillow infers the mode (passing it is deprecated).
    out = Image.fromarray(np.ascontiguousarray(arr))
    assert out.mode == mode, (out.mode, mode)
    return out


def apply_gaussian_blur(img: Image.Image, rng: np.random.Generator, strength: float):
    """Out-of-focus blur; sigma is a fraction of the longest side (see PARAMETER_RANGES)."""
    sigma = max(PARAMETER_RANGES["blur_sigma"].draw(strength, rng) * _long_side(img),
                MIN_BLUR_SIGMA_PX)
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
    """Camera-shake blur along a random direction; the length is a fraction of the longest side."""
    length = max(PARAMETER_RANGES["motion_length"].draw(strength, rng) * _long_side(img),
                 MIN_MOTION_LENGTH_PX)
    angle = float(rng.uniform(0, 180))
    out = cv2.filter2D(np.asarray(img), -1, motion_blur_kernel(length, angle),
                       borderType=cv2.BORDER_REFLECT)
    return _from_array(out, img.mode), {"length": round(length, 2), "angle": round(angle, 1)}


def _exposure_lut(factor: float, gamma: float = 1.0) -> list[int]:
    # Exposure scales linear light, not sRGB values: convert with a 2.2 gamma, scale, clip
    # (blown highlights clip as a sensor does), convert back with a tone curve of 2.2 * gamma.
    x = np.arange(256, dtype=np.float64) / 255
    y = np.clip((x ** 2.2) * factor, 0, 1) ** (1 / (2.2 * gamma))
    return [int(v) for v in np.round(y * 255)]


def _apply_lut(img: Image.Image, lut: list[int]) -> Image.Image:
    return img.point(lut * len(img.getbands()))


def _apply_exposure(img: Image.Image, rng: np.random.Generator, strength: float, factor_range: str):
    factor = PARAMETER_RANGES[factor_range].draw(strength, rng)
    gamma = PARAMETER_RANGES["tone_gamma"].draw(strength, rng)
    return _apply_lut(img, _exposure_lut(factor, gamma)), {"exposure": round(factor, 4),
                                                          "gamma": round(gamma, 4)}


# The natural spread of a camera's rendering that is NOT a degradation: photos are a little darker
# or brighter, flatter or punchier, some shadows or highlights clip, most are sharpened. Every photo
# gets one, so a model cannot take the first clipped pixel for bad exposure (the sources are all well
# exposed) nor crisp detail for noise or text.
LOOK_EXPOSURE = (0.75, 1.35)     # linear-light factor, log-uniform; within "well exposed"
LOOK_GAMMA = (0.9, 1.12)
LOOK_SATURATION = (0.8, 1.25)
# Unsharp masking, as phones and cameras apply in-camera and web photos get after resizing: most of
# the sources are soft (wallpapers with shallow depth of field, small scikit-image photos), so
# without it every crisp photo the corpus never saw looked like noise or text to a model (issue 19:
# bench/quality.py's v2 AUC rose from 0.70 to 0.83 on seed 0 with it). Amount x (photo -
# gaussian(radius)); its three draws are made for every photo so the look's random stream, and so
# the rest of the photo, does not depend on whether it was sharpened.
LOOK_SHARPEN_SHARE = 0.8
LOOK_SHARPEN_AMOUNT = (0.3, 2.5)
LOOK_SHARPEN_RADIUS_PX = (0.6, 1.6)


def _unsharp_mask(img: Image.Image, amount: float, radius: float) -> Image.Image:
    # OpenCV rather than Pillow's UnsharpMask filter: Pillow takes an integer percent and a
    # threshold, and its radius is not a gaussian sigma.
    arr = np.asarray(img, np.float32)
    soft = cv2.GaussianBlur(arr, (0, 0), sigmaX=radius, borderType=cv2.BORDER_REFLECT)
    out = np.clip(arr + amount * (arr - soft) + 0.5, 0, 255).astype(np.uint8)
    return _from_array(out, img.mode)


def apply_camera_look(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """A clean photo's own exposure, tone curve, saturation and sharpening, drawn from the LOOK_*
    ranges."""
    factor = math.exp(rng.uniform(math.log(LOOK_EXPOSURE[0]), math.log(LOOK_EXPOSURE[1])))
    gamma = float(rng.uniform(*LOOK_GAMMA))
    saturation = float(rng.uniform(*LOOK_SATURATION))
    sharpened = bool(rng.random() < LOOK_SHARPEN_SHARE)
    amount = float(rng.uniform(*LOOK_SHARPEN_AMOUNT))
    radius = float(rng.uniform(*LOOK_SHARPEN_RADIUS_PX))
    out = _apply_lut(img, _exposure_lut(factor, gamma))
    if out.mode == "RGB":
        out = ImageEnhance.Color(out).enhance(saturation)
    look = {"exposure": round(factor, 4), "gamma": round(gamma, 4), "saturation": round(saturation, 4)}
    if sharpened:
        out = _unsharp_mask(out, amount, radius)
        look["sharpen"] = {"amount": round(amount, 3), "radius": round(radius, 3)}
    return out, look


def apply_underexposure(img: Image.Image, rng: np.random.Generator, strength: float):
    """Too little light: 0.4x (subtle) down to 0.05x of the exposure, through a varied tone curve."""
    return _apply_exposure(img, rng, strength, "exposure_under")


def apply_overexposure(img: Image.Image, rng: np.random.Generator, strength: float):
    """Too much light: 2x (subtle) up to 9x the exposure, highlights clipping to white."""
    return _apply_exposure(img, rng, strength, "exposure_over")


def apply_sensor_noise(img: Image.Image, rng: np.random.Generator, strength: float):
    """Poisson-Gaussian sensor noise, independent per channel (colour noise).

    Shot noise has variance signal/photons, read noise a constant floor. The noise field is drawn
    on a grid of "grain" pixels and upsampled; the grain is drawn from 1 px (white noise, which a
    downsizing feature extractor averages away) up to 1/700 of the longest side (correlated, as
    demosaicing and in-camera processing make real noise), so both kinds are in the corpus.
    """
    photons = PARAMETER_RANGES["noise_photons"].draw(strength, rng)
    read = PARAMETER_RANGES["noise_read_sigma"].draw(strength, rng)
    grain = float(rng.uniform(1.0, max(1.0, _long_side(img) * GRAIN_PER_LONG_SIDE)))
    arr = np.asarray(img, dtype=np.float32) / 255
    h, w = arr.shape[:2]
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
    r = PARAMETER_RANGES["jpeg_quality"]
    return int(round(_lerp(r.subtle, r.strong, strength)))


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
