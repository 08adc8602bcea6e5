"""Build a model bundle: train, write every export, run the parity gate, seal with checksums.

Order matters: the native file is written first and every other export is derived from that file
(not from the in-memory model); checksums are written before the gate because scorers verify them
on load, then rewritten once the parity report is in, so the final listing covers every file.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.data import TrainingData
from models.metrics import evaluate
from models.onnx_export import ONNX_OPSET, export_onnx
from models.parity import run_parity_gate, write_report
from models.trainers import TrainParams, train_native
from udfs.bundle import (BUNDLE_VERSION, FEATURE_SCHEMA, MANIFEST, MODEL_TYPES, FeatureSchema,
                         ONNX_FILE, write_checksums)
from udfs.errors import PhotoscoreError
from udfs.scorers import load_scorer

log = logging.getLogger(__name__)

# The generated-code exports made by the `codegen` package (DESIGN.md "Model bundle").
CODEGEN_FORMATS = ("m2cgen-python", "m2cgen-java", "m2cgen-c")


@dataclass
class BuiltBundle:
    bundle_dir: Path
    model_type: str
    parity: dict[str, Any]
    metrics: dict[str, dict[str, Any]]   # split name -> evaluate() result, scored by the native export
    digest: str                          # sha256 of checksums.json: identifies the whole bundle
    facts: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.parity["verdict"] == "passed"


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def generated_exports(bundle_dir: Path) -> dict[str, dict[str, Any]]:
    """Ask the codegen package for the m2cgen exports; record why when it cannot make them."""
    try:
        from codegen import generate_exports
    except ImportError as exc:
        return {fmt: {"available": False, "reason": f"codegen package not importable: {exc}"}
                for fmt in CODEGEN_FORMATS}
    try:
        return generate_exports(bundle_dir)
    except Exception as exc:  # a generator crash must surface in the gate as a failure
        log.exception("code generation failed for %s", bundle_dir)
        return {fmt: {"available": False, "error": f"{type(exc).__name__}: {exc}",
                      "reason": "code generation raised"} for fmt in CODEGEN_FORMATS}


def write_exports(bundle_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Add ONNX and generated-code exports to a bundle holding its native file and schema."""
    _write_json(bundle_dir / MANIFEST, manifest)
    export_onnx(bundle_dir)
    manifest["exports"]["onnx"] = {"available": True, "files": [ONNX_FILE], "opset": ONNX_OPSET}
    _write_json(bundle_dir / MANIFEST, manifest)
    manifest["exports"].update(generated_exports(bundle_dir))
    _write_json(bundle_dir / MANIFEST, manifest)
    return manifest


def seal_and_gate(bundle_dir: Path, test_X: np.ndarray, train_X: np.ndarray) -> tuple[dict, str]:
    """Checksum, run the parity gate, write its report and checksum again: (report, digest)."""
    write_checksums(bundle_dir)
    report = run_parity_gate(bundle_dir, test_X, train_X)
    write_report(bundle_dir, report)
    return report, write_checksums(bundle_dir)


def build_bundle(model_type: str, data: TrainingData, params: TrainParams, bundle_dir: Path | str) -> BuiltBundle:
    """Train `model_type` on `data["train"]` and write a complete, gated bundle to `bundle_dir`."""
    if model_type not in MODEL_TYPES:
        raise PhotoscoreError(f"unknown model type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
    bundle_dir = Path(bundle_dir)
    if bundle_dir.exists() and any(bundle_dir.iterdir()):
        raise PhotoscoreError(f"bundle directory {bundle_dir} is not empty; choose a new one")
    bundle_dir.mkdir(parents=True, exist_ok=True)
    train, test = data["train"], data["test"]
    facts = train_native(model_type, train.X, train.y, params, bundle_dir)
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
        "exports": {"native": {"available": True, "files": [facts["native_file"]]}},
    }
    write_exports(bundle_dir, manifest)
    report, digest = seal_and_gate(bundle_dir, test.X, train.X)
    native = load_scorer(bundle_dir, "native")
    metrics = {name: evaluate(split.y, native.score(split.X)) for name, split in data.splits.items()
               if len(split.y)}
    return BuiltBundle(bundle_dir, model_type, report, metrics, digest, facts)
