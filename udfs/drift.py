"""Drift of a window of features, scores and quarantines against a model version's reference profile.

Pure functions over arrays and counts: `photoscore monitor` (jobs/monitor.py) reads the window from
the tables and renders what `judge_window` returns. Per column (each feature and the score):

- PSI against the reference sample's deciles (udfs.comparison.psi), read in the usual bands:
  < psi_warn stable, < psi_alarm moderate, else significant;
- the two-sample Kolmogorov-Smirnov test (scipy) and the Wasserstein distance (scipy), the latter
  in units of the reference's standard deviation so features of any scale read alike;
- the share of missing or non-finite values against the reference's.

A column drifts when its PSI is significant AND the KS test rejects "same distribution" at
ks_alpha: PSI alone over-reacts on small windows, KS alone on huge ones (any tiny, harmless shift
is "significant" at a million rows). The quarantine share of the window's inputs alarms when it
rises more than max_quarantine_increase over the training photos'.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
from scipy import stats

from udfs.comparison import psi
from udfs.reference_profile import ReferenceProfile

QUIET, ALARM, INSUFFICIENT = "quiet", "alarm", "insufficient"
KINDS = ("feature", "score", "missing", "quarantine")


@dataclass(frozen=True)
class DriftThresholds:
    """The monitor section's thresholds (udfs.settings.MonitorSettings)."""

    min_rows: int
    psi_warn: float
    psi_alarm: float
    ks_alpha: float
    max_missing_increase: float
    max_quarantine_increase: float

    @classmethod
    def from_settings(cls, monitor) -> "DriftThresholds":
        return cls(**{name: getattr(monitor, name) for name in cls.__dataclass_fields__})


def psi_band(value: float, thresholds: DriftThresholds) -> str:
    """The usual reading of a PSI: stable, moderate or significant."""
    if not np.isfinite(value) or value < thresholds.psi_warn:
        return "stable"
    return "moderate" if value < thresholds.psi_alarm else "significant"


def column_drift(reference: Mapping[str, Any], values: np.ndarray, thresholds: DriftThresholds) -> dict[str, Any]:
    """Drift figures of one column's window `values` against its reference Distribution."""
    # At the tables' float32 precision, so a value equal to a reference value compares equal (a
    # discrete feature's values otherwise straddle the PSI bin edges the reference puts on them).
    values = np.asarray(values, dtype=np.float32).astype(float)
    finite = np.isfinite(values)
    current = values[finite]
    ref = np.asarray(reference["sample"], dtype=np.float32).astype(float)
    missing = float(1 - finite.mean()) if values.size else 0.0
    figures: dict[str, Any] = {
        "rows": int(values.size), "missing_share": missing,
        "reference_missing_share": float(reference["missing_share"]),
        "mean": float(current.mean()) if current.size else None, "reference_mean": reference["mean"],
        "psi": None, "psi_band": "stable", "ks_statistic": None, "ks_pvalue": None,
        "wasserstein_std": None, "drifted": False,
        "missing_alarm": missing > float(reference["missing_share"]) + thresholds.max_missing_increase,
    }
    if current.size and ref.size:
        ks = stats.ks_2samp(ref, current)
        scale = float(reference["std"]) or 1.0
        figures.update(psi=psi(ref, current), ks_statistic=float(ks.statistic), ks_pvalue=float(ks.pvalue),
                       wasserstein_std=float(stats.wasserstein_distance(ref, current)) / scale)
        figures["psi_band"] = psi_band(figures["psi"], thresholds)
        figures["drifted"] = figures["psi"] >= thresholds.psi_alarm and figures["ks_pvalue"] < thresholds.ks_alpha
    return figures


@dataclass(frozen=True)
class Alarm:
    """One reason the window is not quiet: what kind, which column or reason, and the figures."""

    kind: str       # KINDS
    name: str       # a feature, "score", or "quarantine"
    message: str


def _describe(name: str, f: Mapping[str, Any]) -> str:
    return (f"{name}: PSI {f['psi']:.3f} ({f['psi_band']}), KS p={f['ks_pvalue']:.2g}, "
            f"mean {f['reference_mean']:.4g} -> {f['mean']:.4g}")


def judge_window(profile: ReferenceProfile, features: Mapping[str, np.ndarray], scores: np.ndarray,
                 inputs: int, quarantined: Mapping[str, int], thresholds: DriftThresholds) -> dict[str, Any]:
    """The monitor's verdict on one window.

    `features` maps each reference feature to the window's values (one per featured content),
    `scores` are the window's served scores of the model version, `inputs` the photos that arrived
    in the window and `quarantined` how many of them were quarantined, by reason code. Returns the
    body of drift.json: verdict, alarms (most drifted first) and every column's figures.
    """
    feature_rows = max((len(v) for v in features.values()), default=0)
    columns = {name: column_drift(profile.feature(name), features[name], thresholds)
               for name in profile.feature_names if name in features}
    score = column_drift(profile.score, scores, thresholds)
    q_total = int(sum(quarantined.values()))
    q_share = q_total / inputs if inputs else 0.0
    quarantine = {"inputs": int(inputs), "quarantined": q_total, "share": q_share,
                  "reference_share": profile.quarantine_share,
                  "by_reason": dict(sorted((str(k), int(v)) for k, v in quarantined.items())),
                  "alarm": bool(inputs) and q_share > profile.quarantine_share + thresholds.max_quarantine_increase}
    alarms: list[Alarm] = []
    enough = feature_rows >= thresholds.min_rows
    if enough:
        drifted = sorted((n for n, f in columns.items() if f["drifted"]), key=lambda n: -columns[n]["psi"])
        alarms += [Alarm("feature", n, _describe(n, columns[n])) for n in drifted]
        if score["drifted"] and len(scores) >= thresholds.min_rows:
            alarms.append(Alarm("score", "score", _describe("score", score)))
        for name, f in [*columns.items(), ("score", score)]:
            if f["missing_alarm"] and f["rows"]:
                alarms.append(Alarm("missing", name, f"{name}: {f['missing_share']:.1%} missing or non-finite "
                                                     f"(reference {f['reference_missing_share']:.1%})"))
    if quarantine["alarm"]:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(quarantined.items(), key=lambda kv: -kv[1]))
        alarms.append(Alarm("quarantine", "quarantine",
                            f"quarantine: {q_share:.1%} of {inputs} inputs (reference {profile.quarantine_share:.1%}): {reasons}"))
    verdict = ALARM if alarms else (QUIET if enough else INSUFFICIENT)
    return {
        "verdict": verdict,
        "alarm": verdict == ALARM,
        "alarms": [asdict(a) for a in alarms],
        "feature_rows": feature_rows,
        "score_rows": int(len(scores)),
        "features": columns,
        "score": score,
        "quarantine": quarantine,
        "thresholds": asdict(thresholds),
    }
