"""Scorer for the `m2cgen-python` export: the bundle's generated `score.py`, loaded from the file.

Also holds the input checks shared by the generated-code scorers (Python, C, Java).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from udfs.bundle import read_feature_schema
from udfs.errors import PhotoscoreError
from udfs.scorers import register

FORMAT = "m2cgen-python"


def feature_count(bundle_dir: Path) -> int:
    """Number of model inputs listed in the bundle's `feature_schema.json`."""
    return len(read_feature_schema(bundle_dir).names)


def as_matrix(features: np.ndarray, n_features: int, fmt: str) -> np.ndarray:
    """`features` as a C-contiguous float32 (n, n_features) matrix, or a PhotoscoreError."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise PhotoscoreError(f"{fmt}: expected a (n, {n_features}) feature matrix, got shape {x.shape}")
    return x


def require_file(bundle_dir: Path, name: str, fmt: str) -> Path:
    """Path of `name` in the bundle, or an error saying how to produce it."""
    path = Path(bundle_dir) / name
    if not path.is_file():
        raise PhotoscoreError(f"{fmt}: {path} not found; the bundle has no {fmt} export (codegen.generate_exports)")
    return path


@register(FORMAT)
class M2cgenPythonScorer:
    """Generated Python code; one interpreted call per row, so the slowest export."""

    format = FORMAT

    def __init__(self, bundle_dir: Path):
        path = require_file(bundle_dir, "score.py", FORMAT)
        self.n_features = feature_count(bundle_dir)
        # A unique module name per file: two bundles loaded side by side must not share a module.
        spec = importlib.util.spec_from_file_location(f"photoscore_generated_{abs(hash(str(path.resolve())))}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self._score_batch = module.score_batch

    def score(self, features: np.ndarray) -> np.ndarray:
        """float32 (n, d) -> float64 (n,) positive-class probability."""
        x = as_matrix(features, self.n_features, FORMAT)
        return np.asarray(self._score_batch(x.astype(np.float64).tolist()), dtype=np.float64).reshape(len(x))
