"""Build a model bundle: train, write every export, run the parity gate, seal with checksums.

Order matters: the native file is written first and every other export is derived from that file
(not from the in-memory model); checksums are written before the gate because scorers verify them
on load, then rewritten once the parity report is in, so the final listing covers every file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.data import TrainingData
from models.metrics import evaluate
from models.parity import run_parity_gate, write_report
from models.trainers import TrainParams, train_native
from udfs.bundle import BUNDLE_VERSION, FEATURE_SCHEMA, MANIFEST, MODEL_TYPES, FeatureSchema, write_checksums
from udfs.errors import PhotoscoreError
from udfs.formats import all_formats, load_scorer, reference_format
from udfs.reference_profile import build_profile, quarantine_summary, write_profile

# Training rows sampled into the reference profile when the caller does not say (monitor.profile_rows).
DEFAULT_PROFILE_ROWS = 2000


@dataclass
class BuiltBundle:
    bundle_dir: Path
    model_type: str
    parity: dict[str, Any]
    metrics: dict[str, dict[str, Any]]   # split name -> evaluate() result, scored by the reference export
    digest: str                          # sha256 of checksums.json: identifies the whole bundle
    facts: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.parity["verdict"] == "passed"


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_exports(bundle_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Run the build step of every registered export format on a bundle holding its native file and
    schema, recording each format's cell (files, or why it is not available) in the manifest."""
    _write_json(bundle_dir / MANIFEST, manifest)
    for fmt in all_formats():
        if not fmt.reference:
            manifest["exports"][fmt.id] = fmt.export(bundle_dir)
            _write_json(bundle_dir / MANIFEST, manifest)
    return manifest


def seal_and_gate(bundle_dir: Path, test_X: np.ndarray, train_X: np.ndarray) -> tuple[dict, str]:
    """Checksum, run the parity gate, write its report and checksum again: (report, digest)."""
    write_checksums(bundle_dir)
    report = run_parity_gate(bundle_dir, test_X, train_X)
    write_report(bundle_dir, report)
    return report, write_checksums(bundle_dir)


def build_bundle(model_type: str, data: TrainingData, params: TrainParams, bundle_dir: Path | str,
                 quarantine: dict[str, Any] | None = None, profile_rows: int = DEFAULT_PROFILE_ROWS) -> BuiltBundle:
    """Train `model_type` on `data["train"]` and write a complete, gated bundle to `bundle_dir`.

    The bundle ends with its reference profile (udfs/reference_profile.py): the training split's
    features, the held-out split's scores and `quarantine` (`quarantine_summary` of the photos the
    features came from; unknown: no photo counted as quarantined), sealed by the final checksums.
    """
    if model_type not in MODEL_TYPES:
        raise PhotoscoreError(f"unknown model type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
    bundle_dir = Path(bundle_dir)
    if bundle_dir.exists() and any(bundle_dir.iterdir()):
        raise PhotoscoreError(f"bundle directory {bundle_dir} is not empty; choose a new one")
    bundle_dir.mkdir(parents=True, exist_ok=True)
    train, test = data["train"], data["test"]
    facts = train_native(model_type, train.X, train.y, params, bundle_dir)
    reference = reference_format()
    schema = FeatureSchema(data.feature_version, tuple(data.feature_names), ("float32",) * len(data.feature_names))
    _write_json(bundle_dir / FEATURE_SCHEMA, schema.to_json())
    manifest = {
        "bundle_version": BUNDLE_VERSION,
        "model_type": model_type,
        "native_file": facts["native_file"],
        "feature_version": data.feature_version,
        "target": data.target,
        "train_params": params.as_dict(),
        "trees": facts["trees"],
        "exports": {reference.id: {"available": True, "files": [facts["native_file"]]}},
    }
    write_exports(bundle_dir, manifest)
    report, _ = seal_and_gate(bundle_dir, test.X, train.X)
    scorer = load_scorer(bundle_dir, reference.id)
    scores = {name: scorer.score(split.X) for name, split in data.splits.items() if len(split.y)}
    metrics = {name: evaluate(data[name].y, split_scores) for name, split_scores in scores.items()}
    held_out = scores.get("test", scores["train"])
    if quarantine is None:
        quarantine = quarantine_summary(sum(len(split.y) for split in data.splits.values()), ())
    write_profile(bundle_dir, build_profile(data.feature_names, train.X, held_out, data.feature_version,
                                            quarantine, profile_rows))
    digest = write_checksums(bundle_dir)
    return BuiltBundle(bundle_dir, model_type, report, metrics, digest, facts)
