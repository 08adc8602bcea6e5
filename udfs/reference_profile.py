"""A model version's reference profile: what its inputs and outputs looked like when it was trained.

Written into the bundle at training time (`reference_profile.json`, covered by `checksums.json`)
and read by the drift monitor (`photoscore monitor`, udfs/drift.py) and the stream job (the
reference band of each rolling feature mean it exports):

    {"profile_version": 1, "feature_version": 2, "training_rows": 1840, "sampled_rows": 1840,
     "features": {name: Distribution, ...},    # the training split's features
     "score": Distribution,                      # the model's scores on the held-out (test) split
     "quarantine": {"inputs": 660, "quarantined": 12, "share": 0.018, "by_reason": {"corrupt_photo": 12}}}

    Distribution = {"count", "missing_share", "mean", "std", "quantiles": 101 values (0..100 %),
                    "histogram": {"edges": 21 values, "counts": 20 values}, "sample": <= N values}

The sample (a seeded draw of at most `monitor.profile_rows` rows, the same rows for every
feature) is what the two-sample tests run against; quantiles and the histogram are for people and
plots. Ground layer: numpy only, no I/O beyond the one JSON file.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from udfs.errors import PhotoscoreError

PROFILE_VERSION = 1
REFERENCE_PROFILE = "reference_profile.json"
HISTOGRAM_BINS = 20
# Values keep 9 significant digits, the fewest that give a float32 back exactly: features are
# float32, and a discrete feature's values must land on the same side of a PSI bin edge as the
# reference's own (udfs/drift.py compares at float32).
_DIGITS = 9


def _round(values: np.ndarray) -> list[float]:
    return [float(f"{v:.{_DIGITS}g}") for v in values.tolist()]


def distribution(values: np.ndarray, sample_index: np.ndarray | None = None) -> dict[str, Any]:
    """The Distribution record of `values` (missing/non-finite values counted, then left out);
    `sample_index` picks the sampled rows (default: all)."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    kept = values[finite]
    sample = values if sample_index is None else values[sample_index]
    sample = sample[np.isfinite(sample)]
    if kept.size == 0:
        return {"count": int(values.size), "missing_share": 1.0 if values.size else 0.0, "mean": None,
                "std": None, "quantiles": [], "histogram": {"edges": [], "counts": []}, "sample": []}
    counts, edges = np.histogram(kept, bins=HISTOGRAM_BINS)
    return {
        "count": int(values.size),
        "missing_share": float(1 - finite.mean()),
        "mean": float(kept.mean()),
        "std": float(kept.std()),
        "quantiles": _round(np.quantile(kept, np.linspace(0, 1, 101))),
        "histogram": {"edges": _round(edges), "counts": counts.astype(int).tolist()},
        "sample": _round(sample),
    }


def build_profile(feature_names: Sequence[str], train_X: np.ndarray, test_scores: np.ndarray,
                  feature_version: int, quarantine: Mapping[str, Any], sample_rows: int,
                  seed: int = 0) -> dict[str, Any]:
    """The reference profile of a model trained on `train_X` (columns in `feature_names` order),
    scoring `test_scores` on its held-out split; `quarantine` is `quarantine_summary(...)` of the
    photos its features came from."""
    train_X = np.asarray(train_X, dtype=float)
    rng = np.random.default_rng(seed)
    n = train_X.shape[0]
    index = np.sort(rng.choice(n, size=min(n, sample_rows), replace=False))
    test_scores = np.asarray(test_scores, dtype=float)
    score_index = np.sort(rng.choice(test_scores.size, size=min(test_scores.size, sample_rows), replace=False))
    return {
        "profile_version": PROFILE_VERSION,
        "feature_version": int(feature_version),
        "training_rows": int(n),
        "sampled_rows": int(index.size),
        "features": {name: distribution(train_X[:, i], index) for i, name in enumerate(feature_names)},
        "score": distribution(test_scores, score_index),
        "quarantine": dict(quarantine),
    }


def quarantine_summary(inputs: int, reasons: Sequence[str]) -> dict[str, Any]:
    """How many of `inputs` photos were quarantined, and why (`reasons`: one reason code each)."""
    by_reason: dict[str, int] = {}
    for reason in reasons:
        by_reason[str(reason)] = by_reason.get(str(reason), 0) + 1
    quarantined = sum(by_reason.values())
    return {"inputs": int(inputs), "quarantined": quarantined,
            "share": quarantined / inputs if inputs else 0.0, "by_reason": dict(sorted(by_reason.items()))}


def write_profile(bundle_dir: Path | str, profile: Mapping[str, Any]) -> Path:
    """Write the profile into the bundle (the caller re-seals its checksums afterwards)."""
    path = Path(bundle_dir) / REFERENCE_PROFILE
    path.write_text(json.dumps(profile, sort_keys=True, allow_nan=False) + "\n")
    return path


@dataclass(frozen=True)
class ReferenceProfile:
    """A bundle's reference profile, read (the bundle's checksums are verified by its loader)."""

    data: Mapping[str, Any]

    @property
    def feature_names(self) -> list[str]:
        return list(self.data["features"])

    def feature(self, name: str) -> Mapping[str, Any]:
        """The Distribution of one training feature (PhotoscoreError naming the known ones)."""
        try:
            return self.data["features"][name]
        except KeyError:
            raise PhotoscoreError(f"the reference profile has no feature {name!r}; it has "
                                  f"{', '.join(self.feature_names)}") from None

    @property
    def score(self) -> Mapping[str, Any]:
        return self.data["score"]

    @property
    def quarantine_share(self) -> float:
        return float(self.data["quarantine"]["share"])

    def band(self, name: str, window: int, z: float) -> tuple[float, float] | None:
        """Where the mean of `window` values of feature `name` (or "score") falls when nothing has
        drifted: mean +- z * std / sqrt(window), the normal approximation of a sample mean's spread.
        None when the reference has no finite values."""
        dist = self.score if name == "score" else self.feature(name)
        if dist["mean"] is None:
            return None
        half = z * dist["std"] / math.sqrt(window)
        return dist["mean"] - half, dist["mean"] + half


def load_profile(bundle_dir: Path | str) -> ReferenceProfile | None:
    """The bundle's reference profile; None for bundles built before profiles existed."""
    path = Path(bundle_dir) / REFERENCE_PROFILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("profile_version") != PROFILE_VERSION:
        raise PhotoscoreError(f"{path}: profile_version {data.get('profile_version')!r} is not "
                              f"{PROFILE_VERSION}; this photoscore cannot read it - upgrade photoscore")
    return ReferenceProfile(data)
