"""Rendering: one planned photo -> pixels (crop, size, degradations) -> encoded bytes."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from models.corpus.degradations import HEAVY_JPEG, apply_camera_look, degrade, heavy_jpeg_quality
from models.corpus.encoding import encode_image, encode_jpeg, exif_bytes
from models.corpus.planning import BIG_MEGAPIXELS, PhotoSpec

_ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3)
# (min MP, max MP) of each size band and the share of non-large photos drawn from it.
_SIZE_BANDS = ((0.08, 0.3), (0.3, 2.5), (2.5, 6.0))
_SIZE_BAND_CUMULATIVE = np.cumsum((0.15, 0.7, 0.15))


def _crop_and_resize(img: Image.Image, rng: np.random.Generator, target_mp: float,
                     max_upscale: float) -> tuple[Image.Image, dict]:
    """A random crop (a common aspect ratio) resized to about target_mp.

    The crop keeps 15-100 % of the area (log-uniform), never less than what reaches target_mp
    within max_upscale and never less than half of a source too small for that: a few large source
    photos then give many different views -- a patch of foliage, a whole landscape -- so a model
    learns degradations, not the look of each source."""
    W, H = img.size
    aspect = W / H if rng.random() < 0.35 else _ASPECTS[int(rng.integers(len(_ASPECTS)))]
    smallest = min(0.5, max(0.15, target_mp * 1e6 / (max_upscale ** 2 * W * H)))
    area = math.exp(rng.uniform(math.log(smallest), 0.0)) * W * H
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


def render_original(spec: PhotoSpec, source_img: Image.Image, seed: int,
                    fonts: Sequence[Path] | None = None) -> tuple[bytes, Image.Image, dict]:
    """Pixels and encoded bytes of an original (clean or degraded) photo."""
    rng = np.random.default_rng([seed, spec.index, 1])
    if spec.big:
        target_mp = rng.uniform(BIG_MEGAPIXELS + 0.2, BIG_MEGAPIXELS + 1.5)
        max_upscale = 50.0
    else:
        # Log-uniform within a size band: most photos 0.3-2.5 MP (phone uploads and web photos),
        # some smaller and some larger, so no one size is what a label looks like. Upscaling is
        # capped at 1.25x so a "clean" photo is never a soft blow-up (the scikit-image photos are
        # only 0.1-0.26 MP).
        band = _SIZE_BANDS[int(np.searchsorted(_SIZE_BAND_CUMULATIVE, rng.random(), side="right"))]
        target_mp = math.exp(rng.uniform(math.log(band[0]), math.log(band[1])))
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
    img, params["look"] = apply_camera_look(img, rng)
    applied = dict(zip(spec.degradations, spec.strengths))
    img, degradation_params = degrade(img, rng, applied, fonts)
    params.update(degradation_params)
    if spec.fmt == "PNG":
        quality, progressive = None, False
        data = encode_image(img, "PNG")
    else:
        if HEAVY_JPEG in applied:
            quality = heavy_jpeg_quality(applied[HEAVY_JPEG])
        else:
            quality = int(rng.integers(60, 96))
        progressive = spec.extra.get("progressive", bool(rng.random() < 0.3))
        subsampling = 0 if quality >= 90 and rng.random() < 0.5 else 2
        data, progressive = encode_jpeg(img, quality, progressive, subsampling, exif_bytes(rng))
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
    data, progressive = encode_jpeg(img, quality, progressive, 2, exif_bytes(rng))
    params.update(quality=quality, progressive=progressive)
    return data, img, params

