"""Shared data for the model tests: one source of feature rows, so the suite can switch from
synthetic rows to the real corpus features by changing `training_frames` only."""
from __future__ import annotations

import numpy as np
import pandas as pd

from udfs.features import FEATURE_NAMES, FEATURE_VERSION

SMALL_TREES = 40
SMALL_DEPTH = 5


def synthetic_frames(n_sources: int = 120, variants: int = 4, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A features frame and a labels frame shaped like the real ones (20 float32 features).

    Each source photo has `variants` rows (like the corpus' degraded copies); `low_quality`
    depends on sharpness, exposure and noise with label noise, so models learn something real.
    """
    rng = np.random.default_rng(seed)
    n = n_sources * variants
    source = np.repeat([f"src{i:04d}" for i in range(n_sources)], variants)
    width = rng.choice([640, 1024, 1920, 3840], n).astype(np.float32)
    height = np.round(width * rng.choice([0.5625, 0.75, 1.0], n)).astype(np.float32)
    mp = width * height / 1e6
    file_bytes = np.round(mp * 1e6 * rng.uniform(0.1, 0.6, n)).astype(np.float32)
    cols = {
        "width": width, "height": height, "megapixels": mp, "file_bytes": file_bytes,
        "bytes_per_pixel": file_bytes / (width * height),
        "format_code": rng.choice([1, 2, 4], n), "is_progressive": rng.integers(0, 2, n),
        "mean_luma": rng.uniform(0, 255, n), "luma_std": rng.uniform(5, 90, n),
        "clipped_dark_frac": rng.beta(0.5, 8, n), "clipped_bright_frac": rng.beta(0.5, 8, n),
        "colourfulness": rng.gamma(2, 20, n), "mean_saturation": rng.uniform(0, 1, n),
        "sharpness": rng.lognormal(5, 1.2, n), "edge_density": rng.uniform(0, 0.4, n),
        "text_likeness": rng.beta(1, 5, n), "noise_sigma": rng.gamma(2, 2, n),
        "jpeg_quality": rng.integers(30, 100, n), "face_count": rng.poisson(0.5, n),
        "has_exif": rng.integers(0, 2, n),
    }
    features = pd.DataFrame({name: np.asarray(cols[name], dtype=np.float32) for name in FEATURE_NAMES})
    logit = (-1.2 * (np.log(features["sharpness"]) - 5) + 0.03 * np.abs(features["mean_luma"] - 128)
             + 0.25 * features["noise_sigma"] - 3.0 + rng.normal(0, 0.7, n))
    photo_id = [f"p{i:05d}" for i in range(n)]
    features.insert(0, "photo_id", photo_id)
    features.insert(1, "content_sha256", [f"{i:064x}" for i in range(n)])
    features.insert(2, "feature_version", FEATURE_VERSION)
    labels = pd.DataFrame({"photo_id": photo_id, "low_quality": (logit > 0).astype(bool),
                           "source_photo": source, "duplicate_of": pd.NA})
    return features, labels


def training_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The feature and label frames every model test trains on."""
    return synthetic_frames()
