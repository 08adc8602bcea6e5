"""The `native` format: each library scores its own saved model format (no pickle anywhere).

This is the reference every other export is held to by the parity gate (models/parity.py).
Precision: LightGBM, CatBoost and the linear model compute in float64; XGBoost accumulates its
leaf values in float32 and returns float32 probabilities (widened to float64 here).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from udfs.bundle import NATIVE_FILES, native_path, read_manifest
from udfs.errors import PhotoscoreError
from udfs.formats import ExportFormat, as_matrix

ID = "native"


class XGBoostScorer:
    format = ID

    def __init__(self, path: Path, threads: int):
        import xgboost as xgb

        self.booster = xgb.Booster(params={"nthread": threads}, model_file=str(path))
        self.width = self.booster.num_features()

    def score(self, features: np.ndarray) -> np.ndarray:
        x = as_matrix(features, self.width, ID)
        if len(x) == 0:
            return np.empty(0, dtype=np.float64)
        # inplace_predict returns the objective's transformed output: the probability for
        # binary:logistic (not the 0/1 label that a stock classifier wrapper gives).
        return np.asarray(self.booster.inplace_predict(x), dtype=np.float64).reshape(-1)


class LightGBMScorer:
    format = ID

    def __init__(self, path: Path, threads: int):
        import lightgbm as lgb

        self.booster = lgb.Booster(model_file=str(path))  # threads are set per predict call
        self.width = self.booster.num_feature()
        self.threads = threads

    def score(self, features: np.ndarray) -> np.ndarray:
        x = as_matrix(features, self.width, ID)
        if len(x) == 0:
            return np.empty(0, dtype=np.float64)
        return np.asarray(self.booster.predict(x, num_threads=self.threads), dtype=np.float64)


class CatBoostScorer:
    format = ID

    def __init__(self, path: Path, threads: int):
        from catboost import CatBoost

        self.threads = threads
        self.model = CatBoost()
        self.model.load_model(str(path), format="cbm")
        self.width = len(self.model.feature_names_)

    def score(self, features: np.ndarray) -> np.ndarray:
        x = as_matrix(features, self.width, ID)
        if len(x) == 0:
            return np.empty(0, dtype=np.float64)
        proba = self.model.predict(x, prediction_type="Probability", thread_count=self.threads)
        return np.asarray(proba, dtype=np.float64)[:, 1]


class LinearScorer:
    """Logistic regression from `coefficients.json`: sigmoid(x . coef + intercept) in float64."""

    format = ID

    def __init__(self, path: Path, threads: int):
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
        x = as_matrix(features, self.width, ID).astype(np.float64)
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


def load_native(bundle_dir: Path, threads: int):
    """The bundle's native model, scored by its own library with `threads` threads."""
    model_type = read_manifest(bundle_dir)["model_type"]
    path = native_path(bundle_dir)
    if not path.is_file():
        raise PhotoscoreError(f"native model file {path} is missing from the bundle")
    return _SCORERS[model_type](path, threads)


FORMAT = ExportFormat(
    id=ID,
    description="each library's own saved model, scored by that library: the parity reference",
    files=(" | ".join(NATIVE_FILES.values()),),
    # XGBoost sums in float32 itself; the gate holds exports of an XGBoost model to float32 (parity.py).
    precision="float64",
    load=load_native,
    requirements=(),  # the model type's own library, which the registry always lists
    rank=0,
)
