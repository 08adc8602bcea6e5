"""Score stored feature rows with one export of a bundle: score rows plus quarantine records.

Pure over its inputs (a feature frame, a loaded scorer, the bundle's schema), so the local
`photoscore score` command and any engine wrapper produce identical rows. Every input row ends in
exactly one of the two outputs: inputs = scored + quarantined.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from udfs import schemas
from udfs.bundle import FeatureSchema
from udfs.errors import PhotoscoreError
from udfs.quarantine import QuarantineRecord, now_ms, quarantine_frame

BATCH_ROWS = 4096


@dataclass
class ScoredBatch:
    scores: pd.DataFrame
    quarantine: pd.DataFrame


def score_isolating_failures(scorer, X: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """Scores for X; when a batch raises, rows are retried one by one so one bad row fails alone."""
    out = np.full(len(X), np.nan)
    errors: list[str | None] = [None] * len(X)
    for start in range(0, len(X), BATCH_ROWS):
        block = slice(start, min(start + BATCH_ROWS, len(X)))
        try:
            out[block] = np.asarray(scorer.score(X[block]), dtype=np.float64).reshape(-1)
            continue
        except Exception:  # narrowed below, row by row
            pass
        for i in range(block.start, block.stop):
            try:
                out[i] = float(np.asarray(scorer.score(X[i:i + 1]), dtype=np.float64).reshape(-1)[0])
            except Exception as exc:
                errors[i] = f"{type(exc).__name__}: {exc}"
    for i in np.flatnonzero(~np.isfinite(out)):
        errors[i] = errors[i] or f"the scorer returned {out[i]!r}"
    return out, errors


def score_frame(features: pd.DataFrame, scorer, schema: FeatureSchema, model_name: str,
                model_version: int, source_ref: str, source: str = "batch", role: str = "served") -> ScoredBatch:
    """Score rows of a features table (udfs.schemas.SCORE rows); refuse nothing silently.

    Rows with NaN/inf features are quarantined as `non_finite_feature`, rows the scorer fails on
    (raises, or returns a non-finite value) as `score_failed`. Identical contents
    (`content_sha256`) are scored once and the score given to each of their photo ids.
    """
    missing = [c for c in ("photo_id", *schema.names) if c not in features.columns]
    if missing:
        raise PhotoscoreError(f"{source_ref} lacks columns {missing}; it is not a features table")
    if "feature_version" in features.columns:
        versions = set(pd.unique(features["feature_version"].dropna()).tolist())
        if versions - {schema.feature_version}:
            raise PhotoscoreError(
                f"{source_ref} holds feature versions {sorted(versions)} but model {model_name}/{model_version} "
                f"was trained on feature version {schema.feature_version}: compute that version with "
                f"`photoscore features --feature-version {schema.feature_version}`, or score with a model "
                "trained on the file's version")
    seen = now_ms()
    frame = features.reset_index(drop=True)
    X = frame[list(schema.names)].to_numpy(dtype=np.float32)
    finite = np.isfinite(X).all(axis=1)
    records = []
    for i in np.flatnonzero(~finite):
        bad = [n for n, v in zip(schema.names, X[i]) if not np.isfinite(v)]
        records.append(QuarantineRecord(source_ref, str(frame.at[i, "photo_id"]), "features",
                                        "non_finite_feature", f"non-finite: {', '.join(bad)}", seen))
    rows = np.flatnonzero(finite)
    # One score per distinct content among the finite rows.
    if "content_sha256" in frame.columns:
        keys = frame["content_sha256"].astype("string").fillna(frame["photo_id"].astype("string")).to_numpy()[rows]
    else:
        keys = frame["photo_id"].astype("string").to_numpy()[rows]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    unique_scores, unique_errors = score_isolating_failures(scorer, X[rows[first]])
    scores = unique_scores[inverse]
    errors = [unique_errors[j] for j in inverse]
    ok = np.array([e is None for e in errors], dtype=bool)
    for i, err in zip(rows, errors):
        if err is not None:
            records.append(QuarantineRecord(source_ref, str(frame.at[i, "photo_id"]), "score",
                                            "score_failed", err[:500], seen))
    kept = rows[ok]
    out = schemas.frame(schemas.SCORE, {
        "photo_id": frame["photo_id"].astype("string").to_numpy()[kept],
        "content_sha256": (frame["content_sha256"].astype("string").to_numpy()[kept]
                           if "content_sha256" in frame.columns else pd.array([pd.NA] * len(kept), "string")),
        "model_name": model_name,
        "model_version": model_version,
        "export_format": scorer.format,
        "role": role,
        "score": scores[ok],
        "feature_version": schema.feature_version,
        "scored_at_ms": seen,
        "source": source,
        "from_cache": False,
    })
    return ScoredBatch(out, quarantine_frame(records))
