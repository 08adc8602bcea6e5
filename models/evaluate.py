"""How well a model's scores separate a labelled photo set: the work behind `photoscore evaluate`.

A user's labelled set is a CSV with `file` (relative to the photo folder), `low_quality` (0/1) and
optionally `kind` (what is wrong with a low-quality photo: blur, noise...). `evaluate` turns scores
and labels into a report: AUC and PR-AUC over every scored photo, and per kind the AUC of that
kind's positives against the clean photos (low_quality = 0) -- the figure that says whether a model
sees blur, not just whether it sees the easy kinds. Photos that could not be scored are counted and
listed with their reason code, never dropped silently: labelled = scored + unscored.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from models.metrics import evaluate as probability_metrics
from udfs.errors import PhotoscoreError

LABEL_FILE_COLUMNS = ("file", "low_quality")
KIND_COLUMN = "kind"
NOT_SCORED = "not_scored"  # a labelled file with neither a score nor a quarantine record


def read_labels(path: Path | str) -> pd.DataFrame:
    """Read and check a labels CSV: `file` (unique, relative), `low_quality` 0/1, optional `kind`.

    Returns columns file, low_quality (int), kind (string; empty for clean photos or when absent).
    Raises PhotoscoreError naming the file and the problem.
    """
    try:
        labels = pd.read_csv(path, dtype={"file": "string", KIND_COLUMN: "string"})
    except (OSError, ValueError) as exc:
        raise PhotoscoreError(f"cannot read labels CSV {path}: {exc}") from None
    missing = [c for c in LABEL_FILE_COLUMNS if c not in labels.columns]
    if missing:
        raise PhotoscoreError(f"{path} lacks columns {missing} (columns: {', '.join(labels.columns)}); "
                              "expected file, low_quality and optionally kind")
    if labels["file"].isna().any() or (labels["file"].str.len() == 0).any():
        raise PhotoscoreError(f"{path}: every row needs a file")
    duplicated = labels.loc[labels["file"].duplicated(), "file"].tolist()
    if duplicated:
        raise PhotoscoreError(f"{path}: files listed twice: {duplicated[:5]}")
    absolute = [f for f in labels["file"] if Path(f).is_absolute() or ".." in Path(f).parts]
    if absolute:
        raise PhotoscoreError(f"{path}: files must be relative to --photos and stay inside it: {absolute[:5]}")
    y = pd.to_numeric(labels["low_quality"], errors="coerce")
    if y.isna().any() or not set(y.astype(int)) <= {0, 1} or (y != y.astype(int)).any():
        raise PhotoscoreError(f"{path}: low_quality must be 0 or 1 on every row")
    kind = labels[KIND_COLUMN] if KIND_COLUMN in labels.columns else pd.Series(pd.NA, index=labels.index)
    return pd.DataFrame({"file": labels["file"].astype("string"), "low_quality": y.astype(int),
                         "kind": kind.astype("string").fillna("")})


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")


def evaluate(scores: pd.DataFrame, labels: pd.DataFrame,
             unscored: Mapping[str, str] | None = None) -> dict:
    """The report for `scores` (columns file, score) against `labels` (as `read_labels` returns).

    `unscored` maps files that could not be scored to their reason code. Returns: `labelled`,
    `scored`, `unscored` (count) and `unscored_files` ({file: reason}); `overall` (rows, positives,
    auc, pr_auc, brier, ece -- models.metrics); `per_kind` {kind: {positives, negatives, auc,
    pr_auc}} for every kind of a scored positive. A labelled file with neither a score nor a reason
    is listed as `not_scored`; a score for a file that is not labelled is an error.
    """
    unscored = dict(unscored or {})
    extra = sorted(set(scores["file"]) - set(labels["file"]))
    if extra:
        raise PhotoscoreError(f"scores for files that are not labelled: {extra[:5]}")
    table = labels.merge(scores[["file", "score"]], on="file", how="left", validate="one_to_one")
    scored = table[table["score"].notna()]
    for f in table.loc[table["score"].isna(), "file"]:
        unscored.setdefault(str(f), NOT_SCORED)
    y = scored["low_quality"].to_numpy(dtype=int)
    p = scored["score"].to_numpy(dtype=np.float64)
    overall = {k: v for k, v in probability_metrics(y, p).items() if k != "reliability"}
    clean = scored[scored["low_quality"] == 0]
    per_kind = {}
    for kind in sorted(set(scored.loc[scored["low_quality"] == 1, "kind"]) - {""}):
        positives = scored[(scored["low_quality"] == 1) & (scored["kind"] == kind)]
        both = pd.concat([positives, clean])
        yk = both["low_quality"].to_numpy(dtype=int)
        pk = both["score"].to_numpy(dtype=np.float64)
        per_kind[kind] = {"positives": len(positives), "negatives": len(clean), "auc": _auc(yk, pk),
                          "pr_auc": float(average_precision_score(yk, pk)) if len(clean) else float("nan")}
    return {"labelled": len(labels), "scored": len(scored), "unscored": len(unscored),
            "unscored_files": dict(sorted(unscored.items())), "overall": overall, "per_kind": per_kind}


def _fmt(value: float) -> str:
    return f"{value:.3f}" if isinstance(value, float) and math.isfinite(value) else "n/a"


def format_table(report: dict) -> str:
    """The report as a text table: one row per kind, then all, then the unscored photos."""
    lines = [f"{'kind':<16} {'positives':>9} {'negatives':>9} {'auc':>6} {'pr_auc':>6}"]
    for kind, row in report["per_kind"].items():
        lines.append(f"{kind:<16} {row['positives']:>9} {row['negatives']:>9} "
                     f"{_fmt(row['auc']):>6} {_fmt(row['pr_auc']):>6}")
    o = report["overall"]
    lines.append(f"{'all':<16} {o['positives']:>9} {o['rows'] - o['positives']:>9} "
                 f"{_fmt(o['auc']):>6} {_fmt(o['pr_auc']):>6}")
    lines.append(f"labelled={report['labelled']} scored={report['scored']} unscored={report['unscored']}")
    lines += [f"  unscored {f}: {reason}" for f, reason in report["unscored_files"].items()]
    return "\n".join(lines)


def report_json(report: dict) -> str:
    """The report as strict JSON: non-finite figures (an AUC with one class) become null."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return json.dumps(clean(report), indent=2, sort_keys=True) + "\n"
