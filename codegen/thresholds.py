"""Split thresholds of a native tree model, parsed from its own saved format.

Values exactly on a split threshold are where exports disagree first (a float32 rounding of a
float64 threshold, `<` versus `<=`), so the parity gate probes every one of them, and the ONNX
export of LightGBM uses them to place its float32 thresholds (codegen/onnx_export.py).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from udfs.bundle import native_path, read_manifest
from udfs.errors import PhotoscoreError


# LightGBM reads any input with |x| <= kZeroThreshold (1e-35f) as exactly 0.0 when it builds a row.
LIGHTGBM_ZERO = float(np.float32(1e-35))


def lightgbm_threshold(t: float) -> float:
    """A threshold that gives `x <= result` the same outcome as LightGBM's `zeroed(x) <= t`.

    Only thresholds in [-Z, Z) differ: the zeroed band [-Z, Z] sits wholly on one side of them.
    """
    if 0.0 <= t < LIGHTGBM_ZERO:
        return LIGHTGBM_ZERO
    if -LIGHTGBM_ZERO <= t < 0.0:
        return float(np.nextafter(-LIGHTGBM_ZERO, -np.inf))
    return t


def float32_threshold(t: float, less_equal: bool) -> np.float32:
    """The float32 T with `x < t <=> x < T` (rounded up) or `x <= t <=> x <= T` (rounded down)."""
    with np.errstate(over="ignore"):
        f = np.float32(t)
    if less_equal and float(f) > t:
        f = np.nextafter(f, np.float32(-np.inf))
    elif not less_equal and float(f) < t:
        f = np.nextafter(f, np.float32(np.inf))
    return f


def xgboost_thresholds(path: Path) -> dict[int, np.ndarray]:
    """XGBoost JSON: `split_conditions` of the internal nodes (leaves store their value there)."""
    model = json.loads(Path(path).read_text())
    found: dict[int, set[float]] = defaultdict(set)
    for tree in model["learner"]["gradient_booster"]["model"]["trees"]:
        for left, feature, cond in zip(
            tree["left_children"], tree["split_indices"], tree["split_conditions"]
        ):
            if left != -1:
                found[int(feature)].add(float(cond))
    return {f: np.array(sorted(v)) for f, v in found.items()}


def lightgbm_thresholds(path: Path) -> dict[int, np.ndarray]:
    """LightGBM text model: per tree, `split_feature=` and `threshold=` lines pair up node by node."""
    found: dict[int, set[float]] = defaultdict(set)
    features: list[str] | None = None
    for line in Path(path).read_text().splitlines():
        if line.startswith("Tree="):
            features = None
        elif line.startswith("split_feature="):
            features = line.partition("=")[2].split()
        elif line.startswith("threshold=") and features is not None:
            values = line.partition("=")[2].split()
            if len(values) != len(features):
                raise PhotoscoreError(f"{path}: a tree's split_feature and threshold lines differ in length")
            for f, t in zip(features, values):
                found[int(f)].add(float(t))
    return {f: np.array(sorted(v)) for f, v in found.items()}


def catboost_thresholds(path: Path) -> dict[int, np.ndarray]:
    """CatBoost: the float-feature borders, through its API on the saved cbm."""
    from catboost import CatBoost

    model = CatBoost()
    model.load_model(str(path), format="cbm")
    return {int(f): np.array(sorted(float(b) for b in borders))
            for f, borders in model.get_borders().items() if len(borders)}


_PARSERS = {
    "xgboost": xgboost_thresholds,
    "lightgbm": lightgbm_thresholds,
    "catboost": catboost_thresholds,
}


def split_thresholds(bundle_dir: Path | str) -> dict[int, np.ndarray]:
    """Feature index -> sorted unique split thresholds (float64) of the bundle's native model.

    A linear model has no thresholds: the result is empty.
    """
    model_type = read_manifest(bundle_dir)["model_type"]
    parser = _PARSERS.get(model_type)
    return parser(native_path(bundle_dir)) if parser else {}
