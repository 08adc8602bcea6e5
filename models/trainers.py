"""One trainer per model type; each writes its model in the library's own format into a bundle.

Tree models train a fixed size (default 300 trees of depth 8, the size the benches use) with
early stopping off, so the size is exactly what was asked for; threads are bounded so training
shares a machine politely. The linear model is a standardised logistic regression whose scaler is
folded into plain coefficients, so `coefficients.json` is self-contained.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from udfs.bundle import NATIVE_FILES

DEFAULT_TREES = 300
DEFAULT_DEPTH = 8
LEARNING_RATE = 0.1


@dataclass(frozen=True)
class TrainParams:
    trees: int = DEFAULT_TREES
    depth: int = DEFAULT_DEPTH
    learning_rate: float = LEARNING_RATE
    threads: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    seed: int = 7

    def as_dict(self) -> dict:
        return {"trees": self.trees, "depth": self.depth, "learning_rate": self.learning_rate,
                "threads": self.threads, "seed": self.seed}


def _xgboost(X, y, params: TrainParams, out: Path) -> dict:
    import xgboost as xgb

    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": params.depth, "eta": params.learning_rate,
         "tree_method": "hist", "nthread": params.threads, "seed": params.seed,
         "eval_metric": "logloss"},
        xgb.DMatrix(X, label=y), num_boost_round=params.trees,
    )
    booster.save_model(str(out))
    return {"trees": booster.num_boosted_rounds()}


def _lightgbm(X, y, params: TrainParams, out: Path) -> dict:
    import lightgbm as lgb

    booster = lgb.train(
        {"objective": "binary", "max_depth": params.depth, "num_leaves": min(2 ** params.depth, 131072),
         "learning_rate": params.learning_rate, "num_threads": params.threads, "seed": params.seed,
         "deterministic": True, "force_row_wise": True, "verbose": -1},
        lgb.Dataset(X, label=y), num_boost_round=params.trees,
    )
    booster.save_model(str(out))
    return {"trees": booster.num_trees()}


def _catboost(X, y, params: TrainParams, out: Path) -> dict:
    from catboost import CatBoostClassifier

    model = CatBoostClassifier(
        iterations=params.trees, depth=params.depth, learning_rate=params.learning_rate,
        thread_count=params.threads, random_seed=params.seed, verbose=False,
        allow_writing_files=False,
    )
    model.fit(X, y)
    model.save_model(str(out), format="cbm")
    return {"trees": model.tree_count_}


def _logreg(X, y, params: TrainParams, out: Path) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    X64 = np.asarray(X, dtype=np.float64)
    scaler = StandardScaler().fit(X64)
    clf = LogisticRegression(max_iter=2000, random_state=params.seed).fit(scaler.transform(X64), y)
    # Fold the scaler: w.(x - m)/s + b = (w/s).x + (b - sum(w*m/s)). Constant features have
    # scale 1 in StandardScaler, so nothing divides by zero.
    w = clf.coef_.reshape(-1) / scaler.scale_
    b = float(clf.intercept_[0] - np.sum(w * scaler.mean_))
    out.write_text(json.dumps({"coef": [float(v) for v in w], "intercept": b}, indent=2) + "\n")
    return {"trees": 0}


_TRAINERS = {"xgboost": _xgboost, "lightgbm": _lightgbm, "catboost": _catboost, "logreg": _logreg}


def train_native(model_type: str, X: np.ndarray, y: np.ndarray, params: TrainParams,
                 bundle_dir: Path) -> dict:
    """Train `model_type` on (X, y) and save it as the bundle's native file; returns size facts."""
    out = Path(bundle_dir) / NATIVE_FILES[model_type]
    facts = _TRAINERS[model_type](np.asarray(X, dtype=np.float32), np.asarray(y).astype(int), params, out)
    return {"native_file": out.name, **facts}
