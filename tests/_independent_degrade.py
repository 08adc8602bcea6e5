"""The independent quality check: photos the corpus never saw, degraded by another implementation.

A model trained on `photoscore corpus` could learn the corpus generator's quirks (its blur kernel,
its noise grain, its text font) instead of quality. This module checks it the way a new user's
photos would: source photographs held OUT of training -- two photographic wallpapers removed from
the training corpus's sources, plus photos that ship with scikit-learn and matplotlib and are no
corpus source at all -- cropped and resized to 0.3-2.5 MP, and degraded with other libraries
(scipy.ndimage, scikit-image, Pillow's enhancers, OpenCV's Hershey fonts) and other parameter
ranges than models/corpus/degradations.py. Nothing here imports the corpus's degradations.

`measure_quality` builds a corpus from the remaining sources, trains the default model on it
(xgboost, 300 trees of depth 8), scores the held-out set and returns `models.evaluate.evaluate`'s
report: AUC overall and per kind (each kind's photos against the clean crops).
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance
from scipy import ndimage
from skimage.draw import line_aa
from skimage.exposure import adjust_gamma
from skimage.util import random_noise

from models.corpus import available_sources, build_corpus
from models.evaluate import evaluate
from models.trainers import TrainParams, train_native
from udfs.features import extract_batch, feature_set

# Wallpapers removed from the training corpus's sources (photographic, textured, not flat).
HELD_OUT_WALLPAPERS = ("EveningGlow", "Path")
KINDS = ("blur", "motion", "noise", "overexposed", "jpeg", "dark", "text")
MIN_MP, MAX_MP = 0.3, 2.5
MAX_UPSCALE = 1.3  # a clean crop must not be a soft blow-up (the small photos are 0.27-0.37 MP)


def _package_file(module: str, *parts: str) -> Path:
    import importlib

    return Path(importlib.import_module(module).__file__).parent.joinpath(*parts)


def extra_photo_paths() -> dict[str, Path]:
    """Real photos that ship with installed packages and are no corpus source."""
    paths = {
        "sklearn_china": _package_file("sklearn.datasets", "images", "china.jpg"),
        "sklearn_flower": _package_file("sklearn.datasets", "images", "flower.jpg"),
        "mpl_grace_hopper": _package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
        "skimage_motorcycle": _package_file("skimage", "data", "motorcycle_left.png"),
    }
    return {name: p for name, p in paths.items() if p.is_file()}


def training_sources():
    """The corpus sources minus the held-out wallpapers."""
    return [s for s in available_sources() if s.name not in HELD_OUT_WALLPAPERS]


def held_out_images() -> dict[str, Image.Image]:
    """The held-out photographs, decoded to RGB: the held-out wallpapers and the extra photos."""
    images = {s.name: s.ref for s in available_sources() if s.name in HELD_OUT_WALLPAPERS}
    images.update({name: str(p) for name, p in extra_photo_paths().items()})
    out = {}
    for name, path in sorted(images.items()):
        with Image.open(path) as im:
            out[name] = im.convert("RGB")
    return out


def crop_resize(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random crop (55-100 % of the area, its own aspect) resized to 0.3-2.5 MP (bicubic), never
    upscaled more than MAX_UPSCALE, so the smallest photos stay near 0.3 MP."""
    w, h = img.size
    frac = math.sqrt(rng.uniform(0.55, 1.0))
    cw, ch = int(w * frac), int(h * frac)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    target = rng.uniform(MIN_MP, MAX_MP) * 1e6
    scale = min(math.sqrt(target / (cw * ch)), MAX_UPSCALE)
    size = (round(cw * scale), round(ch * scale))
    return img.crop((x0, y0, x0 + cw, y0 + ch)).resize(size, Image.Resampling.BICUBIC)


def _motion_kernel(length: int, angle: float) -> np.ndarray:
    """A line kernel drawn with scikit-image's anti-aliased line (the corpus uses cv2.line)."""
    size = length | 1
    c = size // 2
    dx, dy = math.cos(angle) * (size // 2), math.sin(angle) * (size // 2)
    rr, cc, val = line_aa(round(c - dy), round(c - dx), round(c + dy), round(c + dx))
    kernel = np.zeros((size, size))
    kernel[rr, cc] = val
    return kernel / kernel.sum()


def _per_channel(arr: np.ndarray, fn) -> np.ndarray:
    return np.stack([fn(arr[..., k]) for k in range(arr.shape[2])], axis=-1)


def degrade(img: Image.Image, kind: str, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """`img` degraded as `kind`, and the JPEG quality to save it at."""
    quality = int(rng.integers(80, 96))
    arr = np.asarray(img, dtype=np.float64) / 255
    long_side = max(img.size)
    if kind == "blur":
        sigma = max(1.5, long_side * rng.uniform(0.0015, 0.005))
        arr = _per_channel(arr, lambda c: ndimage.gaussian_filter(c, sigma, mode="reflect"))
    elif kind == "motion":
        kernel = _motion_kernel(max(5, round(long_side * rng.uniform(0.006, 0.02))), rng.uniform(0, math.pi))
        arr = _per_channel(arr, lambda c: ndimage.convolve(c, kernel, mode="reflect"))
    elif kind == "noise":
        arr = random_noise(arr, mode="gaussian", var=rng.uniform(0.03, 0.08) ** 2,
                           rng=int(rng.integers(2**31)))
    elif kind == "dark":
        arr = adjust_gamma(arr, gamma=rng.uniform(2.2, 3.5), gain=rng.uniform(0.5, 0.8))
    elif kind == "overexposed":
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(1.8, 2.8))
        arr = np.asarray(img, dtype=np.float64) / 255
    elif kind == "jpeg":
        quality = int(rng.integers(4, 8))
    elif kind == "text":
        arr = _hershey_text(arr, rng)
    elif kind != "clean":
        raise ValueError(f"unknown kind {kind!r}")
    return Image.fromarray(np.clip(arr * 255 + 0.5, 0, 255).astype(np.uint8)), quality


_WORDS = ("SALE", "WIN", "FREE", "www.example.org", "LIKE & SHARE", "50% OFF", "CALL NOW",
          "Summer 2024", "@photo_deals", "NEW", "ORDER TODAY", "best price")


def _hershey_text(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """1-4 lines of caption/spam text in OpenCV's Hershey stroke fonts (the corpus uses DejaVu)."""
    out = np.ascontiguousarray(arr.copy())
    h, w = out.shape[:2]
    for _ in range(int(rng.integers(1, 5))):
        text = " ".join(rng.choice(_WORDS, int(rng.integers(1, 3)), replace=False))
        font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_TRIPLEX]))
        scale = min(h, w) * rng.uniform(0.04, 0.1) / 22  # Hershey glyphs are ~22 px tall at scale 1
        thickness = max(1, round(scale * rng.uniform(1.5, 3)))
        (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
        x = int(rng.integers(0, max(1, w - tw)))
        y = int(rng.integers(th + 1, max(th + 2, h - 2)))
        colour = tuple(float(v) for v in rng.uniform(0, 1, 3))
        cv2.putText(out, text, (x, y), font, scale, colour, thickness, cv2.LINE_AA)
    return out


@dataclass(frozen=True)
class HeldOutSet:
    """The held-out photos written to `photos_dir` and their labels (file, low_quality, kind)."""

    photos_dir: Path
    labels: pd.DataFrame


def build_held_out_set(out_dir: Path, clean_per_source: int = 6, per_kind_per_source: int = 3,
                       seed: int = 19) -> HeldOutSet:
    """Write clean and degraded crops of every held-out photo; the labels as `read_labels` returns."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for s, (name, source) in enumerate(held_out_images().items()):
        plan = ["clean"] * clean_per_source + [k for k in KINDS for _ in range(per_kind_per_source)]
        for i, kind in enumerate(plan):
            rng = np.random.default_rng([seed, s, i])
            img, quality = degrade(crop_resize(source, rng), kind, rng)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=quality)
            file = f"{name}_{i:02d}_{kind}.jpg"
            (out_dir / file).write_bytes(buf.getvalue())
            rows.append({"file": file, "low_quality": int(kind != "clean"),
                         "kind": "" if kind == "clean" else kind})
    labels = pd.DataFrame(rows).astype({"file": "string", "kind": "string"})
    return HeldOutSet(out_dir, labels)


def features_of(paths: list[str], version: int) -> pd.DataFrame:
    """Features of `paths` at `version`; every photo must feature (they are all valid JPEGs)."""
    result = extract_batch(paths, [Path(p).read_bytes() for p in paths], version=version)
    assert result.quarantine.empty, result.quarantine
    return result.features


def train_on_corpus(work_dir: Path, n: int, version: int, seed: int = 0,
                    params: TrainParams = TrainParams()):
    """Build an n-photo corpus without the held-out sources, feature it at `version` and train the
    default model (xgboost) on all of it; returns the loaded booster."""
    import xgboost as xgb

    corpus = Path(work_dir) / "corpus"
    if not (corpus / "labels.parquet").exists():
        build_corpus(corpus, n, seed, progress=False, sources=training_sources())
    labels = pd.read_parquet(corpus / "labels.parquet")
    assert not set(labels["source_photo"]) & (set(HELD_OUT_WALLPAPERS) | set(extra_photo_paths()))
    features = features_of(list(labels["photo_id"]), version)
    table = features.merge(labels[["photo_id", "low_quality"]], on="photo_id", validate="one_to_one")
    names = list(feature_set(version).names)
    model_dir = Path(work_dir) / f"model-v{version}"
    model_dir.mkdir(parents=True, exist_ok=True)
    train_native("xgboost", table[names].to_numpy(np.float32), table["low_quality"].to_numpy(int),
                 params, model_dir)
    return xgb.Booster(model_file=str(next(model_dir.iterdir())))


def measure_quality(work_dir: Path, held_out: HeldOutSet, n: int, version: int, seed: int = 0) -> dict:
    """Train on an n-photo corpus (feature `version`) and evaluate on `held_out`: the report of
    `models.evaluate.evaluate` (overall and per-kind AUC)."""
    import xgboost as xgb

    booster = train_on_corpus(work_dir, n, version, seed)
    paths = [str(held_out.photos_dir / f) for f in held_out.labels["file"]]
    features = features_of(paths, version)
    X = features[list(feature_set(version).names)].to_numpy(np.float32)
    scores = pd.DataFrame({"file": [os.path.basename(p) for p in features["photo_id"]],
                           "score": booster.predict(xgb.DMatrix(X))})
    return evaluate(scores, held_out.labels)
