"""The `native` export: each library scores its own saved model format (no pickle anywhere).

This is the reference every other export is held to by the parity gate (models/parity.py).
Precision: LightGBM, CatBoost and the linear model compute in float64; XGBoost accumulates its
leaf values in float32 and returns float32 probabilities (widened to float64 here).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from udfs.bundle import native_path, read_manifest
from udfs.errors import PhotoscoreError
from udfs.scorers import register

# Engines run one scorer per executor core; a library that grabs every core per call oversubscribes.
_THREADS = int(os.environ.get("PHOTOSCORE_SCORER_THREADS", "1"))


def _as_matrix(features: np.ndarray, width: int) -> np.ndarray:
    x = np.ascontiguousarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != width:
        raise PhotoscoreError(f"expected a float32 matrix with {width} columns, got shape {x.shape}")
    return x


class XGBoostScorer:
    format = "native"

    def __init__(self, path: Path):
        import xgboost as xgb

        self.booster = xgb.Booster(params={"nthread": _THREADS}, model_file=str(path))
        self.width = self.booster.num_features()

    def score(self, features: np.ndarray) -> np.ndarray:
        x = _as_matrix(features, self.width)
        if len(x) == 0:
            return np.empty(0, dtype=np.float64)
        # inplace_predict returns the objective's transformed output: the probability for
        # binary:logistic (not the 0/1 label that a stock classifier wrapper gives).
        return np.asarray(self.booster.inplace_predict(x), dtype=np.float64).reshape(-1)


class LightGBMScorer:
    format = "native"

    def __init__(self, path: Path):
        import lightgbm as lgb

        self.booster = lgb.Booster(model_file=str(path))  # threads are set per predict call
        self.width = self.booster.num_feature()

    def score(self, features: np.ndarray) -> np.ndarray:
        x = _as_matrix(features, self.width)
        if len(x) == 0:
            return np.empty(0, dtype=np.float64)
        return np.asarray(self.booster.predict(x, num_threads=_THREADS), dtype=np.float64)


class CatBoostScorer:
    format = "native"

    def __init__(self, path: Path):
        from catboost import CatBoost

        self.model = CatBoost()
        self.model.load_model(str(path), format="cbm")
        self.width = len(self.model.feature_names_)

    def score(self, features: np.ndarray) -> np.ndarray:
        x = _as_matrix(features, self.width)
        if len(x) == 0:
            return np.empty(0, dtype=np.float64)
        proba = self.model.predict(x, prediction_type="Probability", thread_count=_THREADS)
        return np.asarray(proba, dtype=np.float64)[:, 1]


class LinearScorer:
    """Logistic regression from `coefficients.json`: sigmoid(x . coef + intercept) in float64."""

    format = "native"

    def __init__(self, path: Path):
        try:
            data = json.loads(path.read_text())
            self.coef = np.asarray(data["coef"], dtype=np.float64).reshape(-1)
            self.intercept = float(data["intercept"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PhotoscoreError(f"{path} is not a valid coefficients file: {exc!r}") from None
        if not (np.all(np.isfinite(self.coef)) and math.isfinite(self.intercept)):
            raise PhotoscoreError(f"{path} holds non-finite coefficients")
        self.width = len(self.coef)

    def score(self, features: np.ndarray) -> np.ndarray:
        x = _as_matrix(features, self.width).astype(np.float64)
        z = x @ self.coef + self.intercept
        # Split by sign so exp never overflows for large |z| (the adversarial rows hold 1e9s).
        out = np.empty_like(z)
        pos = z >= 0
        out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
        ez = np.exp(z[~pos])
        out[~pos] = ez / (1.0 + ez)
        return out


_SCORERS = {
    "xgboost": XGBoostScorer,
    "lightgbm": LightGBMScorer,
    "catboost": CatBoostScorer,
    "logreg": LinearScorer,
}


@register("native")
def load_native(bundle_dir: Path):
    """The bundle's native model, scored by its own library."""
    model_type = read_manifest(bundle_dir)["model_type"]
    path = native_path(bundle_dir)
    if not path.is_file():
        raise PhotoscoreError(f"native model file {path} is missing from the bundle")
    return _SCORERS[model_type](path)
