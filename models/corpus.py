"""The labelled photo corpus: the training and test data of the whole project.

`build_corpus(out_dir, n, seed)` turns a handful of real photographs that ship with installed
packages (scikit-image's bundled photos, the photographic KDE wallpapers of the Debian package
`plasma-workspace-wallpapers`) into `n` photos with known labels:

- clean variants (crops, sizes, JPEG qualities, baseline/progressive, a few PNG) -- about 45 %;
- degraded variants: gaussian and motion blur, under- and over-exposure, sensor-like noise,
  heavy JPEG compression (quality 5-15) and spam-like overlaid text (Latin and Cyrillic), each with
  a random strength (some subtle), about a quarter of them combining two degradations;
- exact duplicates (byte-identical copies under another name) and near-duplicates (the written
  photo decoded and re-encoded at another quality and/or resized by a few per cent);
- sizes from ~0.1 MP to >= 12 MP (a few large photos when n >= 20).

Output layout::

    DIR/photos/pNNNNN.jpg|png      the photos (names carry no label information)
    DIR/labels.parquet             one row per photo, see LABEL_COLUMNS and `build_corpus`
    DIR/broken/, DIR/broken.json   (--broken) bad inputs: {absolute path: expected reason code}
    DIR/oddities/, DIR/oddities.json  (--broken) valid unusual images that must be featured:
                                   {absolute path: {kind, width, height, mode, format, frames,
                                    allowed_outcomes, borderline, note}}

Reproducibility: every random choice comes from numpy Generators seeded with (seed, photo index),
encoders run with fixed settings and nothing depends on time, so the same `n` and `seed` give
byte-identical photos and labels (for the same installed sources, Pillow and libjpeg -- all pinned).
"""
from __future__ import annotations

import io
import itertools
import json
import logging
import math
import re
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont, ImageOps
from tqdm import tqdm

from udfs.errors import PhotoscoreError

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------

WALLPAPER_ROOT = Path("/usr/share/wallpapers")
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")

# scikit-image's bundled *photographs* that load offline. Left out on purpose: `clock` (motion
# blurred by design -- it would be a "clean" blurred photo), `moon` and `hubble_deep_field`
# (mostly black), microscopy/retina images, textures and synthetic images (text, logo, horse...).
SKIMAGE_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins")

# The photographic wallpapers of plasma-workspace-wallpapers (checked by eye; Autumn, SafeLanding,
# Canopee and most others are illustrations or renders). The flag marks nearly featureless photos
# (sky, calm water at dusk): a blur there changes nothing visible, so they never get a blur label.
WALLPAPER_PHOTOS: dict[str, bool] = {
    "BytheWater": False,
    "ColdRipple": False,
    "ColorfulCups": False,
    "DarkestHour": True,
    "EveningGlow": False,
    "FallenLeaf": False,
    "Grey": False,
    "Kite": True,
    "OneStandsOut": False,
    "Path": False,
    "summer_1am": True,
}

_SIZE_NAME = re.compile(r"^(\d+)x(\d+)\.(jpe?g|png)$", re.IGNORECASE)


@dataclass(frozen=True)
class Source:
    """One source photograph: `name` is what `source_photo` holds in the labels."""

    name: str
    kind: str            # "skimage" or "wallpaper"
    ref: str             # skimage function name, or the wallpaper file path
    flat: bool = False   # nearly featureless: never blurred (the label would be invisible)


def available_sources(wallpaper_root: Path = WALLPAPER_ROOT) -> list[Source]:
    """The source photographs installed on this machine, in a fixed order.

    Raises PhotoscoreError naming the packages to install when none is found.
    """
    sources: list[Source] = []
    try:
        import skimage.data as skdata
    except ImportError:
        skdata = None
    if skdata is not None:
        for name in SKIMAGE_PHOTOS:
            try:
                getattr(skdata, name)  # only the attribute: loading happens once, in SourceCache
            except AttributeError:
                continue
            sources.append(Source(name=name, kind="skimage", ref=name))
    for name, flat in WALLPAPER_PHOTOS.items():
        best = _largest_wallpaper_file(wallpaper_root / name / "contents" / "images")
        if best is not None:
            sources.append(Source(name=name, kind="wallpaper", ref=str(best), flat=flat))
    if not sources:
        raise PhotoscoreError(
            f"no source photographs found: neither scikit-image's bundled photos nor the wallpapers "
            f"under {wallpaper_root}. Install the Debian package plasma-workspace-wallpapers "
            f"(apt-get install plasma-workspace-wallpapers) and/or scikit-image (the project's "
            f"'spark' extra)."
        )
    if not any(s.kind == "wallpaper" for s in sources):
        log.warning("plasma-workspace-wallpapers not found under %s: using scikit-image photos only "
                    "(small, so large variants are strongly upscaled)", wallpaper_root)
    return sources


def _largest_wallpaper_file(images_dir: Path) -> Path | None:
    """The largest landscape rendition (names are WIDTHxHEIGHT.ext)."""
    if not images_dir.is_dir():
        return None
    best, best_px = None, 0
    for path in sorted(images_dir.iterdir()):
        m = _SIZE_NAME.match(path.name)
        if not m:
            continue
        w, h = int(m.group(1)), int(m.group(2))
        if w >= h and w * h > best_px:
            best, best_px = path, w * h
    return best


def load_source(source: Source) -> Image.Image:
    """Decode one source photograph to an RGB or L (grayscale) Pillow image."""
    if source.kind == "skimage":
        import skimage.data as skdata

        arr = np.asarray(getattr(skdata, source.ref)())
        return Image.fromarray(np.ascontiguousarray(arr.astype(np.uint8)))
    with Image.open(source.ref) as im:
        im.load()
        return im.convert("L") if im.mode in ("L", "I;16", "I") else im.convert("RGB")


class SourceCache:
    """Decodes each source once per run (decoding a 4 MP wallpaper costs more than a variant)."""

    def __init__(self, sources: Sequence[Source]):
        self.by_name = {s.name: s for s in sources}
        self._images: dict[str, Image.Image] = {}

    def get(self, name: str) -> Image.Image:
        if name not in self._images:
            self._images[name] = load_source(self.by_name[name])
        return self._images[name]


# ----------------------------------------------------------------------------------------------
# Degradations: pure functions (image, rng, strength in [0, 1]) -> (image, parameters used)
# ----------------------------------------------------------------------------------------------

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

LABEL_COLUMNS = ("blurred", "dark", "overexposed", "noisy", "has_text", "low_quality")

# Degradation "families" for planning: blur picks gaussian or motion per photo.
_FAMILIES = ("blur", "dark", "overexposed", "noise", "text", HEAVY_JPEG)
_INCOMPATIBLE = {frozenset({"dark", "overexposed"})}


# ----------------------------------------------------------------------------------------------
# Planning: which photo is what (cheap, no pixels)
# ----------------------------------------------------------------------------------------------

@dataclass
class PhotoSpec:
    """What photo `index` will be; decided up front so the mix is balanced and reproducible."""

    index: int
    source: str
    role: str = "original"                    # "original", "exact_duplicate", "near_duplicate"
    degradations: tuple[str, ...] = ()        # names from DEGRADATIONS and/or HEAVY_JPEG
    strengths: tuple[float, ...] = ()
    big: bool = False                         # >= 12 MP
    fmt: str = "JPEG"
    duplicate_of: int | None = None
    extra: dict = field(default_factory=dict)


BIG_MEGAPIXELS = 12.0


def plan_corpus(n: int, seed: int, sources: Sequence[Source]) -> list[PhotoSpec]:
    """Decide each photo's source, role, degradations and strengths.

    Mix: ~5 % exact and ~5 % near duplicates; of the rest ~47 % clean, the others degraded (a
    quarter of those with two degradations); degradation families are dealt round-robin so even
    n = 24 covers every label; a few photos are >= 12 MP (n >= 20).
    """
    if n < 1:
        raise PhotoscoreError(f"--n must be at least 1, got {n}")
    rng = np.random.default_rng([seed, 0xC0])
    n_exact = round(0.05 * n) if n >= 10 else 0
    n_near = round(0.05 * n) if n >= 10 else 0
    m = n - n_exact - n_near
    n_clean = round(0.47 * m)
    n_degraded = m - n_clean
    n_double = round(0.25 * n_degraded)

    families: list[tuple[str, ...]] = [()] * n_clean
    order = list(_FAMILIES)
    rng.shuffle(order)
    for i in range(n_degraded - n_double):
        families.append((order[i % len(order)],))
    pairs = [p for p in itertools.combinations(_FAMILIES, 2) if frozenset(p) not in _INCOMPATIBLE]
    for _ in range(n_double):
        families.append(pairs[int(rng.integers(len(pairs)))])
    rng.shuffle(families)  # a list of tuples: shuffles in place, element order is what matters

    names = [s.name for s in sources]
    assigned = [names[i % len(names)] for i in range(m)]
    rng.shuffle(assigned)
    flat = {s.name for s in sources if s.flat}
    # Swap flat sources away from blurred photos (a blurred sky is not visibly blurred).
    for i, fam in enumerate(families):
        if "blur" in fam and assigned[i] in flat:
            for j in rng.permutation(m):
                if assigned[j] not in flat and "blur" not in families[j]:
                    assigned[i], assigned[j] = assigned[j], assigned[i]
                    break

    specs: list[PhotoSpec] = []
    for fam, src in zip(families, assigned):
        degs, strengths = [], []
        for f in fam:
            if f == "blur":
                f = "gaussian_blur" if rng.random() < 0.5 else "motion_blur"
            elif f == "dark":
                f = "underexposure"
            elif f == "overexposed":
                f = "overexposure"
            degs.append(f)
            # A third of degradations are subtle (strength < 0.3) so the task is not trivial.
            strengths.append(float(rng.uniform(0, 0.3)) if rng.random() < 0.33
                             else float(rng.uniform(0.3, 1.0)))
        specs.append(PhotoSpec(index=-1, source=src, degradations=tuple(degs),
                               strengths=tuple(round(s, 4) for s in strengths)))

    # Large photos: from the wallpapers (the largest sources), without noise (37 M random draws per
    # photo would dominate the run time). ~1.5 % of photos, at least one when n >= 20.
    n_big = max(1, round(0.015 * n)) if n >= 20 else 0
    wallpapers = {s.name for s in sources if s.kind == "wallpaper"} or set(names)
    candidates = [i for i, s in enumerate(specs)
                  if s.source in wallpapers and "noise" not in s.degradations]
    for k, i in enumerate(rng.permutation(candidates)[:n_big]):
        specs[i].big = True
        # At least one baseline and one progressive large JPEG.
        specs[i].extra["progressive"] = bool(k % 2)

    # A few PNGs (~6 %), never for heavy JPEG or large photos (a 12 MP PNG encode is slow).
    for s in specs:
        if not s.big and HEAVY_JPEG not in s.degradations and rng.random() < 0.06:
            s.fmt = "PNG"

    # Duplicates go after their original, at random positions.
    for role, count in (("exact_duplicate", n_exact), ("near_duplicate", n_near)):
        for _ in range(count):
            pos = int(rng.integers(1, len(specs) + 1))
            originals = [j for j in range(pos) if specs[j].role == "original" and not specs[j].big]
            if not originals:
                pos, originals = len(specs), [j for j, s in enumerate(specs)
                                              if s.role == "original" and not s.big]
            orig = specs[originals[int(rng.integers(len(originals)))]]
            dup = PhotoSpec(index=-1, source=orig.source, role=role,
                            degradations=orig.degradations, strengths=orig.strengths,
                            fmt=orig.fmt if role == "exact_duplicate" else "JPEG")
            dup.extra["original"] = orig  # resolved to an index below
            specs.insert(pos, dup)
    for i, s in enumerate(specs):
        s.index = i
    for s in specs:
        if "original" in s.extra:
            s.duplicate_of = s.extra.pop("original").index
    return specs


# ----------------------------------------------------------------------------------------------
# Rendering: one spec -> pixels -> bytes
# ----------------------------------------------------------------------------------------------

_CAMERAS = (("Canon", "Canon EOS 80D"), ("NIKON CORPORATION", "NIKON D750"), ("Apple", "iPhone 12"),
            ("samsung", "SM-G991B"), ("FUJIFILM", "X-T3"))
_ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3)


def _crop_and_resize(img: Image.Image, rng: np.random.Generator, target_mp: float,
                     max_upscale: float) -> tuple[Image.Image, dict]:
    """A random crop (50-100 % of the area, a common aspect ratio) resized to about target_mp."""
    W, H = img.size
    aspect = W / H if rng.random() < 0.35 else _ASPECTS[int(rng.integers(len(_ASPECTS)))]
    area = rng.uniform(0.5, 1.0) * W * H
    cw = min(W, math.sqrt(area * aspect))
    ch = min(H, cw / aspect)
    cw = min(cw, ch * aspect)
    x0 = rng.uniform(0, W - cw)
    y0 = rng.uniform(0, H - ch)
    box = (x0, y0, x0 + cw, y0 + ch)
    scale = math.sqrt(target_mp * 1e6 / (cw * ch))
    scale = min(scale, max_upscale)
    size = (max(16, round(cw * scale)), max(16, round(ch * scale)))
    out = img.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    if rng.random() < 0.3:
        out = ImageOps.mirror(out)
    return out, {"crop": [round(v) for v in box], "scale": round(scale, 4)}


def _exif_bytes(rng: np.random.Generator) -> bytes:
    # Half the photos carry camera EXIF, independent of the labels, so `has_exif` varies without
    # leaking a label. No date tags: the bytes must not depend on when the corpus was built.
    if rng.random() >= 0.5:
        return b""
    make, model = _CAMERAS[int(rng.integers(len(_CAMERAS)))]
    exif = Image.Exif()
    exif[0x010F] = make
    exif[0x0110] = model
    exif[0x0112] = 1
    return exif.tobytes()


def encode_jpeg(img: Image.Image, quality: int, progressive: bool, subsampling: int,
                exif: bytes) -> tuple[bytes, bool]:
    """A JPEG and whether it is progressive. Pillow sizes a progressive encode's output buffer at
    one byte per pixel below quality 95, which a grainy 4:4:4 photo at quality 90-94 can exceed
    ("broken data stream"): that photo is written baseline instead (rare, and still deterministic)."""
    try:
        return encode_image(img, "JPEG", quality, progressive, subsampling, exif), progressive
    except OSError:
        if not progressive:
            raise
        return encode_image(img, "JPEG", quality, False, subsampling, exif), False


def encode_image(img: Image.Image, fmt: str, quality: int | None = None, progressive: bool = False,
                 subsampling: int = 2, exif: bytes = b"") -> bytes:
    """Encode with fixed settings (no optimizer randomness, no timestamps): same input, same bytes."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        kwargs = dict(quality=int(quality), progressive=bool(progressive), optimize=False,
                      subsampling=subsampling if img.mode != "L" else 0)
        if exif:
            kwargs["exif"] = exif
        img.save(buf, "JPEG", **kwargs)
    elif fmt == "PNG":
        img.save(buf, "PNG", compress_level=6)
    else:
        raise ValueError(f"unsupported corpus format {fmt!r}")
    return buf.getvalue()


def render_original(spec: PhotoSpec, source_img: Image.Image, seed: int,
                    fonts: Sequence[Path] | None = None) -> tuple[bytes, Image.Image, dict]:
    """Pixels and encoded bytes of an original (clean or degraded) photo."""
    rng = np.random.default_rng([seed, spec.index, 1])
    if spec.big:
        target_mp = rng.uniform(BIG_MEGAPIXELS + 0.2, BIG_MEGAPIXELS + 1.5)
        max_upscale = 50.0
    else:
        # Log-uniform 0.1..3 MP; upscaling capped at 1.25x so a "clean" photo is never a soft
        # blow-up (the scikit-image photos are only 0.1-0.26 MP).
        target_mp = math.exp(rng.uniform(math.log(0.1), math.log(3.0)))
        if spec.fmt == "PNG":
            target_mp = min(target_mp, 0.6)  # PNG encodes are slow and huge at several MP
        max_upscale = 1.25
    img, params = _crop_and_resize(source_img, rng, target_mp, max_upscale)
    if spec.big:
        # The crop may not reach 12 MP after the scale cap; make sure it does.
        w, h = img.size
        if w * h < BIG_MEGAPIXELS * 1e6:
            f = math.sqrt(BIG_MEGAPIXELS * 1e6 * 1.02 / (w * h))
            img = img.resize((math.ceil(w * f), math.ceil(h * f)), Image.Resampling.LANCZOS)
    applied = dict(zip(spec.degradations, spec.strengths))
    for name in _APPLY_ORDER:
        if name in applied:
            fn = DEGRADATIONS[name]
            kwargs = {"fonts": fonts} if name == "text" else {}
            img, p = fn(img, rng, applied[name], **kwargs)
            params[name] = p
    if spec.fmt == "PNG":
        quality, progressive = None, False
        data = encode_image(img, "PNG")
    else:
        if HEAVY_JPEG in applied:
            quality = int(round(_lerp(15, 5, applied[HEAVY_JPEG])))
        else:
            quality = int(rng.integers(60, 96))
        progressive = spec.extra.get("progressive", bool(rng.random() < 0.3))
        subsampling = 0 if quality >= 90 and rng.random() < 0.5 else 2
        data, progressive = encode_jpeg(img, quality, progressive, subsampling, _exif_bytes(rng))
    params.update(quality=quality, progressive=progressive)
    return data, img, params


def render_near_duplicate(original_bytes: bytes, original_quality: int | None, seed: int,
                          index: int) -> tuple[bytes, Image.Image, dict]:
    """Decode a written photo and re-encode it at another quality and/or a few per cent smaller."""
    rng = np.random.default_rng([seed, index, 2])
    with Image.open(io.BytesIO(original_bytes)) as im:
        img = im.convert("L" if im.mode == "L" else "RGB")
    params: dict = {}
    if rng.random() < 0.6:
        f = rng.uniform(0.97, 0.995)
        size = (max(16, round(img.size[0] * f)), max(16, round(img.size[1] * f)))
        img = img.resize(size, Image.Resampling.LANCZOS)
        params["scale"] = round(f, 4)
    choices = [q for q in range(70, 96) if original_quality is None or abs(q - original_quality) >= 5]
    quality = int(choices[int(rng.integers(len(choices)))])
    progressive = bool(rng.random() < 0.3)
    data, progressive = encode_jpeg(img, quality, progressive, 2, _exif_bytes(rng))
    params.update(quality=quality, progressive=progressive)
    return data, img, params


# ----------------------------------------------------------------------------------------------
# The corpus
# ----------------------------------------------------------------------------------------------

_OWNED = ("photos", "broken", "oddities", "labels.parquet", "broken.json", "oddities.json")


def _prepare_out_dir(out_dir: Path) -> None:
    """Reuse a previous corpus directory (stale photos from a bigger n must not linger), but never
    delete anything from a directory that is not a corpus."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise PhotoscoreError(f"{out_dir} exists and is not a directory; choose another --out")
        entries = list(out_dir.iterdir())
        if entries and not (out_dir / "labels.parquet").exists():
            raise PhotoscoreError(
                f"{out_dir} is not empty and holds no corpus (no labels.parquet); choose an empty "
                f"or new --out directory so nothing of yours is overwritten"
            )
        for name in _OWNED:
            p = out_dir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    (out_dir / "photos").mkdir(parents=True, exist_ok=True)


def _labels_from(degradations: Sequence[str]) -> dict[str, bool]:
    labels = {c: False for c in (*LABEL_COLUMNS, "heavy_compression")}
    for d in degradations:
        labels[DEGRADATION_LABEL[d]] = True
    labels["low_quality"] = bool(degradations)
    return labels


def labels_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as the labels table with fixed column order and dtypes."""
    columns = ["photo_id", *LABEL_COLUMNS, "source_photo", "duplicate_of", "variant",
               "heavy_compression", "format", "jpeg_quality", "progressive", "width", "height",
               "megapixels", "file_bytes", "params"]
    frame = pd.DataFrame(rows, columns=columns)
    dtypes = {c: "bool" for c in (*LABEL_COLUMNS, "heavy_compression", "progressive")}
    dtypes.update({"photo_id": "string", "source_photo": "string", "duplicate_of": "string",
                   "variant": "string", "format": "string", "params": "string",
                   "jpeg_quality": "Int64", "width": "int64", "height": "int64",
                   "megapixels": "float64", "file_bytes": "int64"})
    return frame.astype(dtypes)


def build_corpus(out_dir: str | Path, n: int, seed: int = 0, broken: bool = False,
                 progress: bool = True, sources: Sequence[Source] | None = None) -> pd.DataFrame:
    """Write `n` labelled photos under `out_dir/photos/` and `out_dir/labels.parquet`.

    Returns the labels frame: `photo_id` (absolute path as written), the boolean labels
    `blurred, dark, overexposed, noisy, has_text, low_quality` (low_quality = any degradation,
    heavy compression included), `source_photo`, `duplicate_of` (photo_id of the original for exact
    and near duplicates, else null), and descriptive columns `variant` ("clean", degradations joined
    by "+", or the duplicate role), `heavy_compression`, `format`, `jpeg_quality`, `progressive`,
    `width`, `height`, `megapixels`, `file_bytes`, `params` (JSON of the parameters used).
    With `broken=True` also writes the bad inputs and oddities (see `write_bad_inputs`,
    `write_oddities`).
    """
    out_dir = Path(out_dir).resolve()
    sources = list(sources) if sources is not None else available_sources()
    specs = plan_corpus(n, seed, sources)
    fonts = font_paths() if any("text" in s.degradations for s in specs) else None
    _prepare_out_dir(out_dir)
    cache = SourceCache(sources)
    photos_dir = out_dir / "photos"
    written: dict[int, tuple[Path, dict]] = {}
    rows: list[dict] = []
    for spec in tqdm(specs, desc="corpus", unit="photo", disable=not progress):
        path = photos_dir / f"p{spec.index:05d}.{'png' if spec.fmt == 'PNG' else 'jpg'}"
        if spec.role == "exact_duplicate":
            orig_path, orig_row = written[spec.duplicate_of]
            shutil.copyfile(orig_path, path)
            data, w, h = None, orig_row["width"], orig_row["height"]
            params = {}
            fmt, quality, progressive = orig_row["format"], orig_row["jpeg_quality"], \
                orig_row["progressive"]
        elif spec.role == "near_duplicate":
            orig_path, orig_row = written[spec.duplicate_of]
            data, img, params = render_near_duplicate(orig_path.read_bytes(),
                                                      orig_row["jpeg_quality"], seed, spec.index)
            w, h = img.size
            fmt, quality, progressive = "JPEG", params["quality"], params["progressive"]
        else:
            data, img, params = render_original(spec, cache.get(spec.source), seed, fonts)
            w, h = img.size
            fmt, quality, progressive = spec.fmt, params["quality"], params["progressive"]
        if data is not None:
            path.write_bytes(data)
        row = {
            "photo_id": str(path),
            **_labels_from(spec.degradations),
            "source_photo": spec.source,
            "duplicate_of": (str(written[spec.duplicate_of][0])
                             if spec.duplicate_of is not None else None),
            "variant": spec.role if spec.role != "original"
            else ("+".join(spec.degradations) or "clean"),
            "format": fmt,
            "jpeg_quality": quality,
            "progressive": bool(progressive),
            "width": int(w),
            "height": int(h),
            "megapixels": round(w * h / 1e6, 4),
            "file_bytes": path.stat().st_size,
            "params": json.dumps({"strengths": dict(zip(spec.degradations, spec.strengths)),
                                  **params}, sort_keys=True, ensure_ascii=False),
        }
        written[spec.index] = (path, row)
        rows.append(row)
    frame = labels_frame(rows)
    frame.to_parquet(out_dir / "labels.parquet", index=False)
    if broken:
        first = cache.get(sources[0].name)
        bad = write_bad_inputs(out_dir / "broken", first)
        odd = write_oddities(out_dir / "oddities", first)
        _write_json(out_dir / "broken.json", bad)
        _write_json(out_dir / "oddities.json", odd)
        # For the summary line. Set after to_parquet on purpose: pandas writes attrs into the
        # parquet metadata, and the file must not depend on the output path.
        frame.attrs.update(broken=len(bad), oddities=len(odd))
    frame.attrs["out_dir"] = str(out_dir)
    return frame


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
                    encoding="utf-8")


def summarize(labels: pd.DataFrame) -> str:
    """One line: photo count, clean count, counts per label, duplicates, large photos, and the
    bad-input/oddity counts when `build_corpus` wrote them (taken from `labels.attrs`)."""
    clean = int((~labels["low_quality"]).sum())
    parts = [f"{len(labels)} photos", f"clean {clean}"]
    parts += [f"{c} {int(labels[c].sum())}" for c in LABEL_COLUMNS]
    parts.append(f"heavy_compression {int(labels['heavy_compression'].sum())}")
    parts.append(f"exact_dup {int((labels['variant'] == 'exact_duplicate').sum())}")
    parts.append(f"near_dup {int((labels['variant'] == 'near_duplicate').sum())}")
    parts.append(f">=12MP {int((labels['megapixels'] >= BIG_MEGAPIXELS).sum())}")
    parts.append(f"png {int((labels['format'] == 'PNG').sum())}")
    for key in ("broken", "oddities"):
        if key in labels.attrs:
            parts.append(f"{key} {labels.attrs[key]}")
    where = f" {labels.attrs['out_dir']}" if "out_dir" in labels.attrs else ""
    return f"corpus{where}: " + ", ".join(parts)


# ----------------------------------------------------------------------------------------------
# Bad inputs and oddities
# ----------------------------------------------------------------------------------------------

def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + \
        struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def patch_png_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite a PNG's IHDR width/height (and its CRC) without touching the pixel data: the header
    then claims a size the file does not hold, as a decompression bomb does."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG starting with IHDR")
    ihdr = struct.pack(">II", width, height) + png[24:29]
    return png[:8] + _png_chunk(b"IHDR", ihdr) + png[33:]


_HTML_PAGE = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>404 Not Found</title></head>
<body><h1>Not Found</h1><p>The requested URL /photos/IMG_0042.jpg was not found on this server.</p>
<hr><address>Apache Server at photos.example.com Port 443</address></body></html>
"""


def write_bad_inputs(directory: str | Path, image: Image.Image | None = None) -> dict[str, str]:
    """Write inputs the feature extractor must refuse; returns {absolute path: reason code}.

    `image` is the photo the truncated files are cut from (a fixed gradient if omitted). The
    limits assumed are conf/photoscore.yaml's: max side 30000 px, max 100 M pixels.
    """
    d = Path(directory).resolve()
    d.mkdir(parents=True, exist_ok=True)
    if image is None:
        image = _test_pattern(640, 480)
    photo = ImageOps.fit(image.convert("RGB"), (800, 600), Image.Resampling.LANCZOS)
    jpeg = encode_image(photo, "JPEG", 85)
    png = encode_image(photo, "PNG")
    rng = np.random.default_rng(20240531)  # fixed: the bad inputs are the same in every corpus
    random_bytes = rng.integers(0, 256, 8192, dtype=np.uint8).tobytes()
    # Make sure the random bytes do not by chance start with a known image signature.
    random_bytes = b"\x00" + random_bytes[1:]
    tiny = encode_image(_test_pattern(64, 64), "PNG")
    files = {
        "empty.jpg": (b"", "empty_file"),
        "truncated.jpg": (jpeg[: int(len(jpeg) * 0.4)], "truncated_image"),
        "truncated.png": (png[: int(len(png) * 0.4)], "truncated_image"),
        "random_bytes.jpg": (random_bytes, "not_an_image"),
        "html_page.jpg": (_HTML_PAGE, "not_an_image"),
        # 30000 x 30000 = 900 M pixels: within the side limit, far over the pixel limit.
        "bomb_30000x30000.png": (patch_png_size(tiny, 30000, 30000), "decompression_bomb"),
        # A real, valid 1 x 200000 PNG: few pixels, but a side over 30000.
        "strip_1x200000.png": (encode_image(Image.new("L", (1, 200000), 128), "PNG"),
                               "dimensions_out_of_range"),
    }
    out = {}
    for name, (data, reason) in files.items():
        path = d / name
        path.write_bytes(data)
        out[str(path)] = reason
    return out


def _test_pattern(w: int, h: int) -> Image.Image:
    """A deterministic colourful gradient with detail (for when no photo is at hand)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 127 + 127 * np.sin(x / 9.0)
    g = 255 * x / max(w - 1, 1)
    b = 255 * y / max(h - 1, 1)
    return Image.fromarray(np.stack([r, g, b], -1).astype(np.uint8))


def corrupt_jpeg_entropy(jpeg: bytes, n_bytes: int = 4, start: float = 0.45) -> bytes:
    """Overwrite a few bytes in the middle of a baseline JPEG's entropy-coded data.

    Avoids 0xFF and the byte after one, so no marker is created or destroyed: libjpeg still finds
    every segment and decodes the rest, with "Corrupt JPEG data" warnings and garbled blocks.
    """
    sos = jpeg.find(b"\xff\xda")
    if sos < 0:
        raise ValueError("no SOS marker: not a JPEG")
    seg_len = struct.unpack(">H", jpeg[sos + 2: sos + 4])[0]
    scan_start = sos + 2 + seg_len
    scan_end = jpeg.rfind(b"\xff\xd9")
    data = bytearray(jpeg)
    pos = scan_start + int((scan_end - scan_start) * start)
    done = 0
    while done < n_bytes and pos < scan_end - 2:
        if data[pos] != 0xFF and data[pos - 1] != 0xFF:
            data[pos] = (data[pos] ^ 0x5A) if (data[pos] ^ 0x5A) != 0xFF else 0x11
            done += 1
        pos += 37  # spread over a few MCUs
    return bytes(data)


def write_oddities(directory: str | Path, image: Image.Image | None = None) -> dict[str, dict]:
    """Write valid but unusual images that the feature extractor must feature.

    Returns {absolute path: {kind, width, height (upright, i.e. after EXIF orientation), mode
    (as Pillow opens it), format, frames, allowed_outcomes, borderline, note}}.
    """
    d = Path(directory).resolve()
    d.mkdir(parents=True, exist_ok=True)
    if image is None:
        image = _test_pattern(640, 480)
    # Landscape 4:3, never square: the EXIF-rotated file must have a stored size that differs
    # from its upright size.
    photo = ImageOps.fit(image.convert("RGB"), (640, 480), Image.Resampling.LANCZOS)
    w, h = photo.size
    entries: dict[str, dict] = {}

    def add(name: str, data: bytes, kind: str, size: tuple[int, int], note: str = "",
            borderline: bool = False, frames: int = 1) -> None:
        path = d / name
        path.write_bytes(data)
        with Image.open(path) as im:
            mode, fmt = im.mode, im.format
        entries[str(path)] = {
            "kind": kind, "width": int(size[0]), "height": int(size[1]), "mode": mode,
            "format": fmt, "frames": frames, "borderline": borderline, "note": note,
            "allowed_outcomes": ["featured", "truncated_image"] if borderline else ["featured"],
        }

    buf = io.BytesIO()
    photo.convert("CMYK").save(buf, "JPEG", quality=90)
    add("cmyk.jpg", buf.getvalue(), "cmyk_jpeg", (w, h), "Adobe CMYK JPEG (print workflows)")

    gray = np.asarray(photo.convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    add("gray16.png", encode_image(Image.fromarray(gray), "PNG"), "gray16_png", (w, h),
        "16-bit grayscale PNG (Pillow mode I;16)")
    # Pillow cannot write 16-bit RGB PNG; OpenCV can (it writes BGR order, hence the flip).
    rgb16 = np.asarray(photo, dtype=np.uint16)[:, :, ::-1] * 257
    ok, enc = cv2.imencode(".png", np.ascontiguousarray(rgb16), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if ok:
        add("rgb16.png", enc.tobytes(), "rgb16_png", (w, h),
            "16-bit per channel RGB PNG (Pillow opens it reduced to 8-bit mode RGB)")

    add("palette.png", encode_image(photo.quantize(64, dither=Image.Dither.NONE), "PNG"),
        "palette_png", (w, h), "PNG with a 64-colour palette (mode P)")

    frames = [photo.quantize(64, dither=Image.Dither.NONE),
              ImageOps.mirror(photo).quantize(64, dither=Image.Dither.NONE),
              ImageOps.invert(photo).quantize(64, dither=Image.Dither.NONE)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    add("animated.gif", buf.getvalue(), "animated_gif", (w, h),
        "3 differing frames; the extractor uses the first", frames=3)

    # Orientation 6 = "rotate 90 degrees clockwise to display": store the upright photo rotated
    # 90 degrees counter-clockwise, so the stored size is (h, w) and the upright size is (w, h).
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    photo.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", quality=90, exif=exif.tobytes())
    add("exif_rotated.jpg", buf.getvalue(), "exif_rotated_jpeg", (w, h),
        f"EXIF orientation 6: stored {h}x{w}, upright {w}x{h}")

    add("gray.jpg", encode_image(photo.convert("L"), "JPEG", 90), "gray_jpeg", (w, h),
        "single-channel (mode L) JPEG")

    rgba = photo.convert("RGBA")
    alpha = np.zeros((h, w), np.uint8)
    alpha[h // 6: h - h // 6, w // 6: w - w // 6] = 255  # opaque centre, transparent frame
    rgba.putalpha(Image.fromarray(alpha))
    add("rgba.png", encode_image(rgba, "PNG"), "rgba_png", (w, h), "RGBA PNG, transparent border")

    add("one_pixel.png", encode_image(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"),
        "one_pixel_png", (1, 1), "1x1 PNG: the smallest valid image")

    corrupt = corrupt_jpeg_entropy(encode_image(photo, "JPEG", 90))
    add("corrupt_entropy.jpg", corrupt, "corrupt_entropy_jpeg", (w, h),
        "a few corrupt bytes mid-scan: libjpeg decodes it with 'Corrupt JPEG data' warnings and "
        "some garbled blocks; whether to feature or quarantine it is the extractor's documented "
        "decision", borderline=True)
    return entries
