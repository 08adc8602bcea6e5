"""MLflow registry: log a built bundle as a models-from-code pyfunc, register it, promote it with an
alias, list versions, and resolve `models:/name@alias` or `models:/name/3` to a verified local
bundle directory.

Policy for the parity gate: a version whose gate failed is still registered (its parity report
stays inspectable next to the model) but carries the tag `parity=failed`; `promote` refuses it,
and `resolve_bundle` refuses to hand it out by alias, so it can never serve by alias.

Tags on every version: `parity` (passed|failed), `parity_failed_exports`, `model_type`,
`feature_version`, `test_auc`, `bundle_sha256` (sha256 of the bundle's checksums.json - a
download whose listing differs is refused, so rewriting checksums.json does not hide tampering).
"""
from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from udfs.bundle import read_feature_schema, read_parity_report, verify_bundle
from udfs.errors import PhotoscoreError
from udfs.formats import all_formats, reference_format, stored_cell

log = logging.getLogger(__name__)

EXPERIMENT = "photoscore"
ALIASES = ("champion", "challenger")
MODEL_ARTIFACT = "model"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def _mlflow(config):
    """The mlflow module pointed at the configured tracking and registry store."""
    # Download progress bars would interleave with the CLI's own output and the engines' logs.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    uri = config.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    # set_tracking_uri also exports MLFLOW_TRACKING_URI into this process's environment, and
    # jobs/config takes that variable over a home's registry: every later load_settings in this
    # process (another home, a test, a long-lived supervisor) would silently use this registry.
    # photoscore hands its subprocesses their settings itself, so the environment is put back.
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if exported is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = exported
    return mlflow


def client(config):
    """An MlflowClient on the configured store."""
    from mlflow import MlflowClient

    uri = _mlflow(config).get_tracking_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _artifact_root(config) -> str:
    root = config.resolve(config.mlflow.artifact_root)
    if "://" in root:
        return root
    Path(root).mkdir(parents=True, exist_ok=True)
    return Path(root).resolve().as_uri()


def ensure_experiment(config) -> str:
    """The `photoscore` experiment's id, created with the configured artifact root if missing."""
    mlflow = _mlflow(config)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(EXPERIMENT, artifact_location=_artifact_root(config))


def signature_for(bundle_dir: Path):
    """pyfunc signature from feature_schema.json: float32 columns in, probability out, format param."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec
    import numpy as np

    schema = read_feature_schema(bundle_dir)
    return ModelSignature(
        inputs=Schema([ColSpec("float", name) for name in schema.names]),
        outputs=Schema([TensorSpec(np.dtype("float64"), (-1,), "probability")]),
        params=ParamSchema([ParamSpec("export_format", "string", reference_format().id)]),
    )


def pip_requirements(built) -> list[str]:
    """The registered model's pip requirements: the pyfunc's own, the model type's library, and
    those of every export format the bundle carries."""
    exports = built.parity.get("exports", {})
    extra = [req for fmt in all_formats()
             if fmt.reference or (stored_cell(exports, fmt.id) or {}).get("status") == "passed"
             for req in fmt.requirements]
    library = built.model_type if built.model_type != "logreg" else "scikit-learn"
    return list(dict.fromkeys(["mlflow", "numpy", "pandas", library, *extra]))


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def log_and_register(built, name: str, config, run_params: dict[str, Any]):
    """Log the training run and the bundle to MLflow and register a new version of `name`.

    Returns the MLflow ModelVersion (registered whatever the gate said; see the module policy).
    """
    mlflow = _mlflow(config)
    experiment_id = ensure_experiment(config)
    # MLflow stores a directory artifact under its base name; stage the bundle as `bundle/` so
    # every version keeps it at `artifacts/bundle`, where `resolve_bundle` fetches it.
    staging = Path(tempfile.mkdtemp(prefix="photoscore-register-"))
    staged = staging / "bundle"
    shutil.copytree(built.bundle_dir, staged, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        return _log_and_register(mlflow, experiment_id, built, staged, name, run_params)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _log_and_register(mlflow, experiment_id: str, built, staged: Path, name: str, run_params: dict[str, Any]):
    parity = built.parity
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{name}-{built.model_type}") as run:
        mlflow.log_params(run_params)
        for split, metrics in built.metrics.items():
            mlflow.log_metrics({f"{split}_{k}": v for k, v in _finite(metrics).items()})
        for fmt, cell in parity["exports"].items():
            if "max_abs_diff" in cell:
                mlflow.log_metric(f"parity_max_abs_diff_{fmt.replace('-', '_')}", cell["max_abs_diff"])
        mlflow.log_dict({"metrics": built.metrics, "parity": parity}, "evaluation.json")
        mlflow.set_tags({"parity": parity["verdict"], "model_type": built.model_type})
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(PYFUNC_CODE),
            artifacts={"bundle": str(staged)},
            signature=signature_for(built.bundle_dir),
            # Explicit requirements: inferring them would load the model in a subprocess.
            pip_requirements=pip_requirements(built),
        )
    test_auc = built.metrics.get("test", {}).get("auc", float("nan"))
    tags = {
        "parity": parity["verdict"],
        "parity_failed_exports": ",".join(parity["failed"]),
        "parity_not_available": ",".join(parity["not_available"]),
        "model_type": built.model_type,
        "feature_version": str(read_feature_schema(built.bundle_dir).feature_version),
        "test_auc": f"{test_auc:.6f}",
        "bundle_sha256": built.digest,
        "run_id": run.info.run_id,
    }
    version = mlflow.register_model(info.model_uri, name, tags=tags)
    return version


def parse_model_uri(model_uri: str) -> tuple[str, str | None, str | None]:
    """`models:/name@alias` -> (name, None, alias); `models:/name/3` -> (name, "3", None)."""
    match = _URI.match(model_uri.strip())
    if not match:
        raise PhotoscoreError(
            f"unknown_model: {model_uri!r} is not a model URI; use models:/NAME@ALIAS or models:/NAME/VERSION")
    return match["name"], match["version"], match["alias"]


def get_registered(config, name: str):
    """The RegisteredModel `name`; an unknown name raises an `unknown_model` error."""
    from mlflow.exceptions import MlflowException

    mc = client(config)
    try:
        return mc.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in mc.search_registered_models())
        raise PhotoscoreError(
            f"unknown_model: no registered model {name!r} in {config.tracking_uri} "
            f"(registered: {', '.join(known) or 'none'}); train one with `photoscore train`") from None


def get_version(config, name: str, version: str | None = None, alias: str | None = None):
    """The ModelVersion for a number or an alias; unknown ones raise an `unknown_model` error."""
    from mlflow.exceptions import MlflowException

    get_registered(config, name)
    mc = client(config)
    try:
        if alias is not None:
            return mc.get_model_version_by_alias(name, alias)
        return mc.get_model_version(name, str(version))
    except MlflowException:
        what = f"alias @{alias}" if alias is not None else f"version {version}"
        raise PhotoscoreError(
            f"unknown_model: model {name!r} has no {what}; see `photoscore models --name {name}`") from None


def promote(config, name: str, version: str, alias: str):
    """Point `alias` at `version` of `name`; refuses a version whose parity gate failed."""
    if alias not in ALIASES:
        raise PhotoscoreError(f"alias must be one of {', '.join(ALIASES)}, got {alias!r}")
    mv = require_passed_parity(config, name, version)
    client(config).set_registered_model_alias(name, alias, str(version))
    return mv


def require_passed_parity(config, name: str, version) -> Any:
    """The ModelVersion, when its parity gate passed; a PhotoscoreError naming the failed exports
    otherwise (such a version never takes an alias, never serves)."""
    mv = get_version(config, name, version=str(version))
    verdict = mv.tags.get("parity")
    if verdict != "passed":
        failed = mv.tags.get("parity_failed_exports") or "unknown"
        raise PhotoscoreError(
            f"version {version} of {name!r} failed its parity gate (exports: {failed}; parity={verdict}); "
            "a version that fails parity can never take an alias - fix the export and retrain")
    return mv


def list_versions(config, name: str | None = None) -> list[dict[str, Any]]:
    """Every registered version (of `name`, or of all models): aliases, parity, test AUC."""
    mc = client(config)
    names = [name] if name else sorted(m.name for m in mc.search_registered_models())
    rows = []
    for model_name in names:
        aliases: dict[str, list[str]] = {}
        registered = get_registered(config, model_name)
        for alias, version in (registered.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for mv in mc.search_model_versions(f"name='{model_name}'"):
            rows.append({
                "name": model_name, "version": int(mv.version),
                "aliases": sorted(aliases.get(str(mv.version), [])),
                "model_type": mv.tags.get("model_type", ""),
                "parity": mv.tags.get("parity", "unknown"),
                "parity_failed_exports": mv.tags.get("parity_failed_exports", ""),
                "test_auc": mv.tags.get("test_auc", ""),
                "feature_version": mv.tags.get("feature_version", ""),
                "created_ms": mv.creation_timestamp,
            })
    return sorted(rows, key=lambda r: (r["name"], r["version"]))


def _download_bundle(config, mv, dest: Path) -> None:
    """Download the version's `bundle` artifact directory into `dest` (which must not exist)."""
    from mlflow.artifacts import download_artifacts

    # The pyfunc keeps its artifacts under `artifacts/<key>` of the model's storage location.
    location = client(config).get_model_version_download_uri(mv.name, mv.version).rstrip("/")
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=dest.parent))
    try:
        local = Path(download_artifacts(artifact_uri=f"{location}/artifacts/bundle", dst_path=str(staging)))
        try:
            os.replace(local, dest)  # atomic: concurrent executors never see a half-written bundle
        except OSError:
            if not dest.is_dir():  # another process won the race with an identical copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def resolve_bundle(model_uri: str, config, allow_failed_parity: bool = False) -> tuple[str, int, Path]:
    """`models:/name@alias` or `models:/name/N` -> (name, version, verified local bundle dir).

    Downloads the version's bundle once into `<home>/models/cache/<name>/<version>-<digest>` and
    verifies every file's checksum (and the listing's digest recorded in the registry) on each
    call. A version whose parity gate failed is refused unless `allow_failed_parity`, and always
    when asked for by alias. Unknown models, versions and aliases raise `unknown_model` errors.
    """
    name, version, alias = parse_model_uri(model_uri)
    mv = get_version(config, name, version=version, alias=alias)
    if mv.tags.get("parity") != "passed" and (alias is not None or not allow_failed_parity):
        raise PhotoscoreError(
            f"{model_uri} is version {mv.version}, whose parity gate failed "
            f"(exports: {mv.tags.get('parity_failed_exports') or 'unknown'}); refusing to load it")
    digest = mv.tags.get("bundle_sha256", "")
    dest = config.home / "models" / "cache" / name / f"{mv.version}-{digest[:16] or uuid.uuid4().hex}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.is_dir():
        log.info("downloading %s (version %s) to %s", model_uri, mv.version, dest)
        _download_bundle(config, mv, dest)
    verify_bundle(dest, expected_digest=digest or None)
    if read_parity_report(dest).get("verdict") != "passed" and not allow_failed_parity:
        raise PhotoscoreError(f"{dest}: the bundle's own parity report says failed; refusing to load it")
    return name, int(mv.version), dest
