"""The model lifecycle's decisions: which new version is best, and does it beat the champion.

Airflow's `photoscore_model_lifecycle` DAG runs these steps (train -> pick -> compare -> challenger
-> approval -> champion); so can a person, with the same functions. Every version is measured with
its registered, checksum-verified bundle on the same labelled data and the same deterministic
split (models/data.py): candidates on the validation split (the one model selection may look at),
the winner and the champion on the held-out test split.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from models.data import TrainingData, load_training_data, training_feature_version
from models.metrics import evaluate
from models.registry import get_registered, resolve_bundle
from udfs.errors import PhotoscoreError


@dataclass(frozen=True)
class Measured:
    """One registered version's metrics on one split of the lifecycle's data."""

    version: int
    split: str
    auc: float
    pr_auc: float
    brier: float
    ece: float
    rows: int

    def line(self) -> str:
        return (f"v{self.version} on {self.split}: auc={self.auc:.4f} pr_auc={self.pr_auc:.4f} "
                f"brier={self.brier:.4f} ece={self.ece:.4f} rows={self.rows}")


def lifecycle_data(features: Path | str, labels: Path | str, target: str) -> TrainingData:
    """The labelled data every step measures on (the same join, feature version and split as
    training: `training_feature_version`)."""
    from udfs.features import feature_set

    version = training_feature_version(features)
    return load_training_data(features, labels, target, feature_set(version).names, version)


def measure(settings, name: str, version: int, data: TrainingData, split: str) -> Measured:
    """Score `split` with the version's native export (parity-gated, checksums verified)."""
    from udfs.bundle import read_feature_schema
    from udfs.formats import load_scorer, reference_format

    _, _, bundle_dir = resolve_bundle(f"models:/{name}/{version}", settings)
    schema = read_feature_schema(bundle_dir)
    if tuple(schema.names) != tuple(data.feature_names) or schema.feature_version != data.feature_version:
        raise PhotoscoreError(f"{name} v{version} scores feature version {schema.feature_version} "
                              f"({len(schema.names)} features); the lifecycle's data has version "
                              f"{data.feature_version}: compare versions trained on the same features")
    rows = data[split]
    if len(rows.y) == 0:
        raise PhotoscoreError(f"the {split} split is empty: the lifecycle's labels need more source photos")
    metrics = evaluate(rows.y, load_scorer(bundle_dir, reference_format().id).score(rows.X))
    return Measured(version, split, metrics["auc"], metrics["pr_auc"], metrics["brier"], metrics["ece"],
                    metrics["rows"])


def _rank(m: Measured) -> tuple:
    # Higher AUC, then higher PR-AUC, then better calibration; NaN (one class) ranks last.
    finite = lambda v, worst: v if math.isfinite(v) else worst  # noqa: E731
    return (finite(m.auc, -1.0), finite(m.pr_auc, -1.0), -finite(m.brier, 2.0), m.version)


def pick_best(candidates: list[Measured]) -> Measured:
    """The best candidate on the validation split."""
    if not candidates:
        raise PhotoscoreError("no new version to choose from: every training task failed or none ran")
    return max(candidates, key=_rank)


def beats_champion(candidate: Measured, champion: Measured | None, margin: float) -> tuple[bool, str]:
    """Whether `candidate` should become the challenger, and why (one line for the log)."""
    if champion is None:
        return True, f"no champion yet: v{candidate.version} becomes the challenger ({candidate.line()})"
    gain = candidate.auc - champion.auc
    if not math.isfinite(gain):
        return False, f"held-out AUC undefined (one class in the test split): {candidate.line()} / {champion.line()}"
    if gain > margin:
        return True, (f"v{candidate.version} beats champion v{champion.version} by {gain:+.4f} AUC "
                      f"(> margin {margin}): {candidate.line()} | {champion.line()}")
    return False, (f"v{candidate.version} does not beat champion v{champion.version} by more than {margin} "
                   f"AUC ({gain:+.4f}): {candidate.line()} | {champion.line()}; no alias moved")


def alias_version(settings, name: str, alias: str) -> int | None:
    """The version `alias` points at, or None (no such model or alias yet)."""
    try:
        registered = get_registered(settings, name)
    except PhotoscoreError:
        return None
    version = (registered.aliases or {}).get(alias)
    return int(version) if version is not None else None


def stage_summary(stage: str, figures: dict) -> str:
    """One line for the log and the approval's body: the stage's comparison figures and verdict."""
    shown = ", ".join(f"{k}={figures[k]:.4g}" if isinstance(figures.get(k), float) else f"{k}={figures.get(k)}"
                      for k in ("pairs", "mean_abs_delta", "rank_correlation", "flip_share", "psi",
                                "challenger_error_rate"))
    verdict = "PASS" if figures.get("passed") else "FAIL: " + "; ".join(figures.get("failures") or [])
    return f"{stage}: challenger v{figures.get('challenger')} vs champion v{figures.get('champion')}: {shown} -> {verdict}"
