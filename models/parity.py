"""The parity gate: every export of a bundle must score like the native model, row for row.

Rows scored: the held-out test set plus adversarial rows -
  * every split threshold of the model (parsed from the native file, codegen/thresholds.py) as
    float32 inputs on and next to it: the largest float32 <= t, the smallest >= t, and their outer
    neighbours, so a `<` versus `<=` or a float32 rounding of a float64 threshold shows up;
  * per feature, the training min and max, 0, ten times the max and +-1e9, each on a median row;
  * an all-zero row and all-min / all-max rows.

Tolerances (max |score - native score|), by the precision each format declares (udfs/formats/):
  * FLOAT64_TOLERANCE = 1e-6 when both sides compute in float64 (LightGBM, CatBoost and the
    linear model natively; the generated Python/Java/C, which use doubles).
  * FLOAT32_TOLERANCE = 1e-5 when either side computes in float32: ONNX tree ensembles and linear
    classifiers accumulate in float32, and XGBoost itself sums its leaves in float32. Summing T
    leaf values in float32 costs at most about T * |margin| * 2**-24 on the margin, typically
    ~sqrt(T) times less as rounding errors cancel, and the sigmoid's slope is at most 1/4: for
    300 trees and |margin| ~ 10 that is ~1e-6 typical, 4.5e-5 in the worst case. Measured on
    300-tree depth-8 models (all four types, test + adversarial rows): max 2.3e-7. 1e-5 keeps
    40x headroom over what we see while staying far below what a real defect costs: one
    mis-routed split moves the score by a leaf value times the sigmoid slope, typically >= 1e-3.
An export that is not available (its toolchain is missing, or the generator declined) is recorded
as `not_available` with the reason, never as a pass; it does not fail the gate. An export that is
available but fails to load, raises, returns non-finite values or exceeds its tolerance fails it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from codegen.thresholds import split_thresholds
from udfs.bundle import PARITY_REPORT, read_manifest
from udfs.formats import TOLERANCES, all_formats, get_format, load_unchecked, reference_format, stored_cell

FLOAT64_TOLERANCE = TOLERANCES["float64"]
FLOAT32_TOLERANCE = TOLERANCES["float32"]
# Model types whose own library computes in float32 (the exports' precision is in udfs/formats/).
FLOAT32_NATIVE = {"xgboost"}
LARGE = 1e9


def tolerance(model_type: str, export_format: str) -> tuple[float, str]:
    """(tolerance, precision label) for comparing `export_format` with the native model."""
    precision = "float32" if model_type in FLOAT32_NATIVE else get_format(export_format).precision
    return TOLERANCES[precision], precision


def _neighbours(t: float) -> set[np.float32]:
    """float32 values on and around a float64 threshold t."""
    down = np.float32(t)
    if float(down) > t:
        down = np.nextafter(down, np.float32(-np.inf))
    up = np.float32(t)
    if float(up) < t:
        up = np.nextafter(up, np.float32(np.inf))
    values = {down, up, np.nextafter(down, np.float32(-np.inf)), np.nextafter(up, np.float32(np.inf))}
    return {v for v in values if np.isfinite(v)}


def adversarial_rows(thresholds: dict[int, np.ndarray], train_X: np.ndarray) -> np.ndarray:
    """The gate's adversarial float32 rows for a model with `thresholds` trained on `train_X`."""
    train_X = np.asarray(train_X, dtype=np.float32)
    d = train_X.shape[1]
    median = np.median(train_X, axis=0).astype(np.float32)
    lo, hi = train_X.min(axis=0), train_X.max(axis=0)
    rows = [np.zeros(d, np.float32), lo.copy(), hi.copy()]
    # Extremes: one feature at a time on the median row.
    for j in range(d):
        for value in (lo[j], hi[j], 0.0, 10.0 * hi[j], LARGE, -LARGE):
            row = median.copy()
            row[j] = value
            rows.append(row)
    # Thresholds: row k puts feature j on its k-th threshold value (cycling), so every threshold
    # value is probed with max_j(#values) rows instead of sum_j(#values).
    per_feature = {j: np.array(sorted(set().union(*(_neighbours(float(t)) for t in ts))), np.float32)
                   for j, ts in thresholds.items() if len(ts)}
    longest = max((len(v) for v in per_feature.values()), default=0)
    if longest:
        block = np.tile(median, (longest, 1))
        for j, values in per_feature.items():
            block[:, j] = np.resize(values, longest)
        rows.extend(block)
    return np.vstack(rows).astype(np.float32)


def _compare(reference: np.ndarray, scores: np.ndarray, n_test: int) -> dict[str, Any]:
    diff = np.abs(scores - reference)
    worst = int(np.argmax(diff)) if len(diff) else 0
    return {
        "max_abs_diff": float(diff.max()) if len(diff) else 0.0,
        "max_abs_diff_test": float(diff[:n_test].max()) if n_test else 0.0,
        "max_abs_diff_adversarial": float(diff[n_test:].max()) if len(diff) > n_test else 0.0,
        "worst_row": {"set": "test" if worst < n_test else "adversarial",
                      "index": worst if worst < n_test else worst - n_test,
                      "native": float(reference[worst]) if len(diff) else None,
                      "export": float(scores[worst]) if len(diff) else None},
    }


def run_parity_gate(bundle_dir: Path | str, test_X: np.ndarray, train_X: np.ndarray) -> dict[str, Any]:
    """Score every export listed in the bundle against native; return the parity report.

    The bundle's checksums must already be written (scorers verify them on load).
    """
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    model_type = manifest["model_type"]
    test_X = np.asarray(test_X, dtype=np.float32)
    adversarial = adversarial_rows(split_thresholds(bundle_dir), train_X)
    X = np.vstack([test_X, adversarial]) if len(test_X) else adversarial
    ref = reference_format()
    reference = load_unchecked(bundle_dir, ref.id).score(X)
    listed = manifest.get("exports", {})
    exports: dict[str, Any] = {}
    for fmt in all_formats():
        if fmt.reference:
            continue
        info = stored_cell(listed, fmt.id) or {"available": False, "reason": "not built"}
        tol, precision = tolerance(model_type, fmt.id)
        cell: dict[str, Any] = {"tolerance": tol, "precision": precision}
        if not info.get("available", False):
            cell.update(status="not_available", reason=info.get("reason", "not built"))
        else:
            try:
                # The gate measures an export it has not judged yet: the one unchecked load.
                scores = np.asarray(load_unchecked(bundle_dir, fmt.id).score(X), dtype=np.float64).reshape(-1)
                if scores.shape != reference.shape:
                    raise ValueError(f"returned {scores.shape[0]} scores for {len(X)} rows")
                if not np.all(np.isfinite(scores)):
                    raise ValueError(f"returned {int((~np.isfinite(scores)).sum())} non-finite scores")
                cell.update(_compare(reference, scores, len(test_X)))
                cell["rows_over_tolerance"] = int((np.abs(scores - reference) > tol).sum())
                cell["status"] = "passed" if cell["max_abs_diff"] <= tol else "failed"
            except Exception as exc:  # any failure of an export is a gate failure, reported
                cell.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        exports[fmt.id] = cell
    failed = sorted(f for f, c in exports.items() if c["status"] == "failed")
    return {
        "reference": ref.id,
        "model_type": model_type,
        "rows": {"test": int(len(test_X)), "adversarial": int(len(adversarial)), "total": int(len(X))},
        "tolerances": {"float64": FLOAT64_TOLERANCE, "float32": FLOAT32_TOLERANCE},
        "exports": exports,
        "failed": failed,
        "not_available": sorted(f for f, c in exports.items() if c["status"] == "not_available"),
        "verdict": "failed" if failed else "passed",
    }


def write_report(bundle_dir: Path | str, report: dict[str, Any]) -> Path:
    """Write `parity_report.json` into the bundle."""
    path = Path(bundle_dir) / PARITY_REPORT
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return path


def describe_failures(report: dict[str, Any]) -> list[str]:
    """One line per failed export naming it and the size of the disagreement."""
    lines = []
    for fmt in report.get("failed", []):
        cell = report["exports"][fmt]
        if "max_abs_diff" in cell:
            worst = cell["worst_row"]
            lines.append(
                f"export {fmt}: max |score - native| = {cell['max_abs_diff']:.3g} > tolerance "
                f"{cell['tolerance']:.0e} ({cell['rows_over_tolerance']} of {report['rows']['total']} "
                f"rows; worst on {worst['set']} row {worst['index']}: native {worst['native']:.6f}, "
                f"{fmt} {worst['export']:.6f})")
        else:
            lines.append(f"export {fmt}: {cell.get('reason', 'failed')}")
    return lines
