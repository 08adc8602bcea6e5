"""Evaluation of a probability model: ranking (ROC-AUC, PR-AUC) and calibration (Brier, ECE)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score


def reliability_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict]:
    """Equal-width probability bins: count, mean predicted probability, observed positive rate."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    # Bin i holds p in [i/bins, (i+1)/bins); p == 1.0 goes to the last bin.
    idx = np.minimum((p * bins).astype(int), bins - 1)
    table = []
    for i in range(bins):
        mask = idx == i
        n = int(mask.sum())
        table.append({
            "bin": f"[{i / bins:.1f}, {(i + 1) / bins:.1f}{']' if i == bins - 1 else ')'}",
            "count": n,
            "mean_predicted": float(p[mask].mean()) if n else None,
            "observed_rate": float(y[mask].mean()) if n else None,
        })
    return table


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Count-weighted mean |observed rate - mean predicted| over the reliability bins."""
    table = reliability_table(y, p, bins)
    total = sum(row["count"] for row in table)
    if total == 0:
        return float("nan")
    return float(sum(row["count"] * abs(row["observed_rate"] - row["mean_predicted"])
                     for row in table if row["count"]) / total)


def evaluate(y: np.ndarray, p: np.ndarray) -> dict:
    """Test metrics for the run log and the registry. AUCs are NaN when only one class is present."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    both = len(np.unique(y)) == 2
    return {
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "brier": float(brier_score_loss(y, p, labels=[0, 1])) if len(y) else float("nan"),
        "ece": expected_calibration_error(y, p),
        "reliability": reliability_table(y, p),
    }
