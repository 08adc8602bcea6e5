"""The read side of a model bundle (DESIGN.md "Model bundle"): manifest, feature schema, checksums.

A bundle is a directory holding every export of one model version:

    bundle.json          {"bundle_version": 1, "model_type": ..., "native_file": ..., "exports": {...}}
    <native file>        model.json (XGBoost) | model.txt (LightGBM) | model.cbm (CatBoost)
                         | coefficients.json (logistic regression)
    model.onnx           output "probability": float32 (n,), the positive-class probability
    score.py | java/*.java + score.jar | score.c or score.cpp + libscore.so
                         generated code (codegen/) of the udfs/formats/code_*.py exports
    feature_schema.json  {"feature_version": 1, "features": [{"name": ..., "dtype": "float32"}, ...]}
    parity_report.json   every export vs native (models/parity.py)
    checksums.json       {"algorithm": "sha256", "files": {relative path: hex digest}}

Engines (Spark executors, the Flink job) load bundles with only `udfs/` installed, so everything a
loader needs lives here, not in `models/`. Loading never unpickles anything: every file is a native
model format, JSON, ONNX or generated code, and every file is checked against `checksums.json`
before a scorer touches it.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from udfs.errors import PhotoscoreError

BUNDLE_VERSION = 1
MANIFEST = "bundle.json"
FEATURE_SCHEMA = "feature_schema.json"
PARITY_REPORT = "parity_report.json"
CHECKSUMS = "checksums.json"
ONNX_FILE = "model.onnx"
ONNX_OUTPUT = "probability"
PY_SOURCE = "score.py"
JAVA_DIR = "java"
JAR = "score.jar"
JAVA_PACKAGE = "photoscore.generated"  # of the generated classes in score.jar
C_SOURCE = "score.c"
CPP_SOURCE = "score.cpp"
C_LIBRARY = "libscore.so"
NATIVE_FILES = {
    "xgboost": "model.json",
    "lightgbm": "model.txt",
    "catboost": "model.cbm",
    "logreg": "coefficients.json",
}
MODEL_TYPES = tuple(NATIVE_FILES)

# Interpreter byte-code caches appear when generated Python code is imported from the bundle; they
# are derived from checksummed sources, so they are neither listed nor refused.
_IGNORED_DIRS = {"__pycache__"}


def _files(bundle_dir: Path) -> list[str]:
    """Every regular file under the bundle, as sorted POSIX paths relative to it."""
    found = []
    for root, dirs, names in os.walk(bundle_dir):
        dirs[:] = sorted(d for d in dirs if d not in _IGNORED_DIRS)
        for name in names:
            rel = (Path(root) / name).relative_to(bundle_dir).as_posix()
            if rel != CHECKSUMS:
                found.append(rel)
    return sorted(found)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks (bundles hold multi-megabyte jars and models)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def compute_checksums(bundle_dir: Path | str) -> dict[str, str]:
    """sha256 of every file in the bundle except `checksums.json` itself."""
    bundle_dir = Path(bundle_dir)
    return {rel: sha256_file(bundle_dir / rel) for rel in _files(bundle_dir)}


def write_checksums(bundle_dir: Path | str) -> str:
    """(Re)write `checksums.json` for the bundle's current files; returns the digest of that file.

    The returned digest identifies the whole bundle (it covers every other file's digest); the
    registry records it so a bundle whose `checksums.json` was rewritten is refused as well.
    """
    bundle_dir = Path(bundle_dir)
    payload = {"algorithm": "sha256", "files": compute_checksums(bundle_dir)}
    (bundle_dir / CHECKSUMS).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return sha256_file(bundle_dir / CHECKSUMS)


def verify_bundle(bundle_dir: Path | str, expected_digest: str | None = None) -> None:
    """Refuse a bundle whose files differ from `checksums.json` (PhotoscoreError naming the file).

    Missing, modified and unlisted files are all refused: a scorer must only ever load bytes that
    were there when the parity gate passed. `expected_digest`, when given, is the sha256 of
    `checksums.json` recorded in the registry at registration time.
    """
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise PhotoscoreError(f"model bundle {bundle_dir} does not exist or is not a directory")
    listing = bundle_dir / CHECKSUMS
    if not listing.is_file():
        raise PhotoscoreError(
            f"model bundle {bundle_dir} has no {CHECKSUMS}; it was not built by `photoscore train` "
            "or is incomplete - rebuild or re-download it"
        )
    if expected_digest is not None and sha256_file(listing) != expected_digest:
        raise PhotoscoreError(
            f"{listing} does not match the digest recorded in the model registry: the bundle was "
            "altered after registration; delete the local copy and download it again"
        )
    try:
        expected = json.loads(listing.read_text())["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise PhotoscoreError(f"{listing} is not a valid checksum listing: {exc}") from None
    present = set(_files(bundle_dir))
    for rel in sorted(expected):
        path = bundle_dir / rel
        if rel not in present:
            raise PhotoscoreError(f"model bundle file {path} is missing (listed in {CHECKSUMS})")
        actual = sha256_file(path)
        if actual != expected[rel]:
            raise PhotoscoreError(
                f"model bundle file {path} fails its checksum (sha256 {actual[:12]}..., expected "
                f"{expected[rel][:12]}...): it was modified after the bundle was built; refusing "
                "to load it - re-download or rebuild the model version"
            )
    extra = sorted(present - set(expected))
    if extra:
        raise PhotoscoreError(
            f"model bundle {bundle_dir} holds files not listed in {CHECKSUMS}: {', '.join(extra)}; "
            "refusing to load it - remove them or rebuild the bundle"
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PhotoscoreError(f"model bundle file {path} is missing") from None
    except ValueError as exc:
        raise PhotoscoreError(f"model bundle file {path} is not valid JSON: {exc}") from None


def read_manifest(bundle_dir: Path | str) -> dict[str, Any]:
    """`bundle.json`, checked for a version and model type this code understands."""
    path = Path(bundle_dir) / MANIFEST
    manifest = _read_json(path)
    if manifest.get("bundle_version") != BUNDLE_VERSION:
        raise PhotoscoreError(
            f"{path}: bundle_version {manifest.get('bundle_version')!r} is not supported "
            f"(this photoscore reads version {BUNDLE_VERSION}); upgrade photoscore or rebuild the bundle"
        )
    if manifest.get("model_type") not in NATIVE_FILES:
        raise PhotoscoreError(
            f"{path}: unknown model_type {manifest.get('model_type')!r}; expected one of {MODEL_TYPES}"
        )
    return manifest


def native_path(bundle_dir: Path | str) -> Path:
    """Path of the bundle's native model file."""
    return Path(bundle_dir) / read_manifest(bundle_dir)["native_file"]


@dataclass(frozen=True)
class FeatureSchema:
    """The ordered model inputs of a bundle."""

    feature_version: int
    names: tuple[str, ...]
    dtypes: tuple[str, ...]

    @property
    def width(self) -> int:
        return len(self.names)

    def to_json(self) -> dict[str, Any]:
        return {
            "feature_version": self.feature_version,
            "features": [{"name": n, "dtype": d} for n, d in zip(self.names, self.dtypes)],
        }


def read_feature_schema(bundle_dir: Path | str) -> FeatureSchema:
    """`feature_schema.json` as a FeatureSchema."""
    path = Path(bundle_dir) / FEATURE_SCHEMA
    data = _read_json(path)
    try:
        features = data["features"]
        return FeatureSchema(
            feature_version=int(data["feature_version"]),
            names=tuple(str(f["name"]) for f in features),
            dtypes=tuple(str(f["dtype"]) for f in features),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PhotoscoreError(f"{path} is not a valid feature schema: {exc!r}") from None


def read_parity_report(bundle_dir: Path | str) -> dict[str, Any]:
    """`parity_report.json` (written by the parity gate at build time)."""
    return _read_json(Path(bundle_dir) / PARITY_REPORT)
