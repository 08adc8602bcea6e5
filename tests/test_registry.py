"""MLflow: the pyfunc returns probabilities, registry round trip by alias, gate-failed versions,
unknown models, and the CLI commands (train, promote, models, score)."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from _models_fixtures import built_bundle, perturb_onnx
from jobs.cli import main as cli
from jobs.config import load_settings
from udfs.errors import PhotoscoreError
from udfs.features import FEATURE_NAMES
from udfs.formats import load_scorer


@pytest.mark.integration
def test_stock_xgboost_pyfunc_returns_labels_ours_returns_probabilities(model_data, tmp_path_factory, tmp_path):
    """Trap: MLflow's xgboost flavour, loaded as pyfunc, predicts class labels for an
    XGBClassifier. Our models-from-code pyfunc returns the positive-class probability."""
    import mlflow
    import xgboost as xgb

    from models.pyfunc_model import BUNDLE_ARTIFACT
    from models.registry import PYFUNC_CODE, signature_for

    train, test = model_data["train"], model_data["test"]
    clf = xgb.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1).fit(train.X, train.y)
    mlflow.xgboost.save_model(clf, str(tmp_path / "stock"))
    frame = pd.DataFrame(test.X, columns=list(FEATURE_NAMES))
    stock = np.asarray(mlflow.pyfunc.load_model(str(tmp_path / "stock")).predict(frame))
    assert set(np.unique(stock)) <= {0, 1}, "the stock flavour now returns probabilities"

    built = built_bundle("xgboost", model_data, tmp_path_factory)
    mlflow.pyfunc.save_model(str(tmp_path / "ours"), python_model=str(PYFUNC_CODE),
                             artifacts={BUNDLE_ARTIFACT: str(built.bundle_dir)},
                             signature=signature_for(built.bundle_dir))
    ours = mlflow.pyfunc.load_model(str(tmp_path / "ours"))
    p = np.asarray(ours.predict(frame))
    native = load_scorer(built.bundle_dir, "native").score(test.X)
    np.testing.assert_array_equal(p, native)
    assert np.all((p > 0) & (p < 1)) and not set(np.unique(p)) <= {0.0, 1.0}
    onnx_p = np.asarray(ours.predict(frame, params={"export_format": "onnx"}))
    assert np.max(np.abs(onnx_p - native)) <= 1e-5


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A config whose home (SQLite MLflow store, artifacts, bundle cache) is a fresh tmp dir."""
    home = tmp_path_factory.mktemp("home")
    return load_settings([f"home={home}"], env={})


@pytest.mark.integration
def test_registry_round_trip_by_alias(store, model_data, tmp_path_factory):
    from models.registry import list_versions, log_and_register, promote, resolve_bundle

    built = built_bundle("lightgbm", model_data, tmp_path_factory)
    mv = log_and_register(built, "pq", store, {"model_type": "lightgbm"})
    assert mv.tags["parity"] == "passed" and mv.tags["bundle_sha256"] == built.digest
    promote(store, "pq", mv.version, "champion")
    name, version, bundle_dir = resolve_bundle("models:/pq@champion", store)
    assert (name, version) == ("pq", int(mv.version))
    assert str(bundle_dir).startswith(str(store.home / "models" / "cache"))
    X = model_data["test"].X
    np.testing.assert_array_equal(load_scorer(bundle_dir, "native").score(X),
                                  load_scorer(built.bundle_dir, "native").score(X))
    assert resolve_bundle(f"models:/pq/{mv.version}", store)[2] == bundle_dir  # cached
    (row,) = [r for r in list_versions(store, "pq") if r["version"] == int(mv.version)]
    assert row["aliases"] == ["champion"] and row["parity"] == "passed" and row["model_type"] == "lightgbm"

    # A tampered cached copy is refused, naming the file.
    with open(bundle_dir / "model.txt", "a") as fh:
        fh.write("\n")
    with pytest.raises(PhotoscoreError, match=r"model\.txt fails its checksum"):
        resolve_bundle("models:/pq@champion", store)


@pytest.mark.integration
def test_gate_failed_version_is_registered_but_never_aliased(store, model_data, tmp_path_factory, tmp_path):
    from models.build import seal_and_gate
    from models.registry import log_and_register, promote, resolve_bundle
    from _models_fixtures import copy_bundle

    built = built_bundle("catboost", model_data, tmp_path_factory)
    broken = copy_bundle(built, tmp_path / "broken")
    perturb_onnx(broken, reseal=False)
    report, digest = seal_and_gate(broken, model_data["test"].X, model_data["train"].X)
    assert report["verdict"] == "failed"
    failed = type(built)(broken, built.model_type, report, built.metrics, digest, built.facts)
    mv = log_and_register(failed, "pq-failed", store, {"model_type": "catboost"})
    assert mv.tags["parity"] == "failed" and mv.tags["parity_failed_exports"] == "onnx"
    with pytest.raises(PhotoscoreError, match="failed its parity gate.*onnx"):
        promote(store, "pq-failed", mv.version, "champion")
    with pytest.raises(PhotoscoreError, match="parity gate failed"):
        resolve_bundle(f"models:/pq-failed/{mv.version}", store)
    # Inspectable on request, by number only.
    assert resolve_bundle(f"models:/pq-failed/{mv.version}", store, allow_failed_parity=True)[1] == int(mv.version)


@pytest.mark.integration
@pytest.mark.parametrize("uri, message", [
    ("models:/no-such-model@champion", "no registered model 'no-such-model'"),
    ("models:/pq/999", "has no version 999"),
    ("models:/pq@challenger", "has no alias @challenger"),
    ("runs:/abc/model", "is not a model URI"),
])
def test_unknown_models_are_clear_errors(store, uri, message, model_data, tmp_path_factory):
    from models.registry import log_and_register, resolve_bundle

    if uri.startswith("models:/pq"):
        from models.registry import client
        from mlflow.exceptions import MlflowException
        try:
            client(store).get_registered_model("pq")
        except MlflowException:
            log_and_register(built_bundle("lightgbm", model_data, tmp_path_factory), "pq", store, {})
    with pytest.raises(PhotoscoreError, match=f"^unknown_model: .*{message}"):
        resolve_bundle(uri, store)


@pytest.mark.integration
def test_cli_train_promote_models_score(model_frames, tmp_path, monkeypatch, capsys):
    features, labels = model_frames
    monkeypatch.setenv("PHOTOSCORE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = ["train", "--features", str(features), "--labels", str(labels), "--trees", "20", "--depth", "4",
            "--threads", "2", "--name", "cli_model"]
    assert cli(base + ["--model", "xgboost"]) == 0
    out = capsys.readouterr().out
    assert "registered cli_model version 1 (parity passed)" in out and "auc=" in out and "ece=" in out

    # A broken exporter: the gate fails, the CLI names the export and the size, exits non-zero.
    import codegen.onnx_export as onnx_export  # the onnx format's build step (udfs/formats/onnx.py)
    real_export = onnx_export.export_onnx

    def broken_export(bundle_dir):
        path = real_export(bundle_dir)
        perturb_onnx(bundle_dir, reseal=False)
        return path

    monkeypatch.setattr(onnx_export, "export_onnx", broken_export)
    assert cli(base + ["--model", "logreg"]) == 3
    out = capsys.readouterr().out
    assert "parity gate FAILED: export onnx: max |score - native| =" in out
    monkeypatch.setattr(onnx_export, "export_onnx", real_export)

    assert cli(["promote", "--name", "cli_model", "--version", "2", "--alias", "champion"]) == 1
    assert "failed its parity gate" in capsys.readouterr().err
    assert cli(["promote", "--name", "cli_model", "--version", "1", "--alias", "champion"]) == 0
    assert cli(["models", "--name", "cli_model"]) == 0
    listing = capsys.readouterr().out
    assert "champion" in listing and "failed (onnx)" in listing
    assert cli(["models", "--name", "cli_model", "--parity"]) == 0
    matrix = capsys.readouterr().out.split("parity matrix")[1].splitlines()
    passed_row = next(line for line in matrix if line.startswith("cli_model  1 "))
    failed_row = next(line for line in matrix if line.startswith("cli_model  2 "))
    assert passed_row.count(" ok") == 4
    assert "FAILED" in failed_row.split()[3:5]

    bad = pd.read_parquet(features)
    bad.loc[0, "sharpness"] = np.inf
    bad.to_parquet(tmp_path / "bad.parquet")
    out_path = tmp_path / "scores.parquet"
    assert cli(["score", "--model", "models:/cli_model@champion", "--format", "onnx",
                "--features", str(tmp_path / "bad.parquet"), "--out", str(out_path)]) == 0
    assert f"inputs={len(bad)} scored={len(bad) - 1} quarantined=1" in capsys.readouterr().out
    scores = pd.read_parquet(out_path)
    quarantine = pd.read_parquet(tmp_path / "scores.quarantine.parquet")
    assert set(scores["export_format"]) == {"onnx"} and set(scores["model_version"]) == {1}
    assert quarantine["reason_code"].tolist() == ["non_finite_feature"]

    assert cli(["score", "--model", "models:/cli_model@challenger", "--features", str(features),
                "--out", str(tmp_path / "x.parquet")]) == 1
    assert "unknown_model" in capsys.readouterr().err


@pytest.mark.integration
def test_using_a_registry_leaves_the_process_environment_as_it_was(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, which outranks a home's registry in
    config: after one registry call every later load_settings in the process took that registry."""
    from models.registry import client

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = load_settings([], env={"PHOTOSCORE_HOME": str(tmp_path / "a")})
    client(first).search_registered_models()
    assert "MLFLOW_TRACKING_URI" not in os.environ
    second = load_settings([], env={**os.environ, "PHOTOSCORE_HOME": str(tmp_path / "b")})
    assert second.tracking_uri != first.tracking_uri and str(tmp_path / "b") in second.tracking_uri

    # A user's own variable is kept as it was.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    client(first).search_registered_models()
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'elsewhere.db'}"
