"""The parity gate, end to end over model type x export format, and the traps it exists for."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from _models_fixtures import built_bundle, copy_bundle, perturb_leaf, perturb_onnx, synthetic_frames, write_frames
from codegen.onnx_export import ONNX_OPSET, normalise_output
from codegen.thresholds import split_thresholds
from models.build import build_bundle
from models.data import load_training_data
from models.parity import (FLOAT32_TOLERANCE, FLOAT64_TOLERANCE, adversarial_rows, describe_failures,
                           run_parity_gate, tolerance)
from models.trainers import TrainParams
from udfs.bundle import MODEL_TYPES, native_path, write_checksums
from udfs.features import FEATURE_NAMES, FEATURE_VERSION
from udfs.formats import all_formats, load_scorer

EXPORTS = tuple(f.id for f in all_formats() if not f.reference)
CODE_FORMATS = ("code-python", "code-java", "code-c")


def test_report_shape(bundle):
    report = bundle.parity
    assert report["verdict"] == "passed" and report["failed"] == []
    assert report["rows"]["adversarial"] > 100 and report["rows"]["test"] > 0
    assert set(report["exports"]) == set(EXPORTS)
    for fmt, cell in report["exports"].items():
        assert cell["status"] in ("passed", "not_available")
        assert cell["tolerance"] in (FLOAT64_TOLERANCE, FLOAT32_TOLERANCE)
        assert fmt in report["not_available"] or "max_abs_diff" in cell


def test_tolerances_follow_precision():
    assert tolerance("lightgbm", "code-c") == (1e-6, "float64")
    assert tolerance("lightgbm", "onnx") == (FLOAT32_TOLERANCE, "float32")
    assert tolerance("xgboost", "code-python") == (FLOAT32_TOLERANCE, "float32")  # XGBoost sums in float32


def test_adversarial_rows_probe_every_threshold(model_data, tmp_path_factory):
    built = built_bundle("xgboost", model_data, tmp_path_factory)
    thresholds = split_thresholds(built.bundle_dir)
    rows = adversarial_rows(thresholds, model_data["train"].X)
    assert rows.dtype == np.float32
    for feature, values in thresholds.items():
        column = set(rows[:, feature].tolist())
        for t in values:
            assert float(np.float32(t)) in column
            assert float(np.nextafter(np.float32(t), np.float32(-np.inf))) in column
    assert (rows == 0).all(axis=1).any()
    assert (np.abs(rows) == 1e9).any()


def test_gate_blocks_a_broken_onnx_export(bundle, model_data, tmp_path):
    d = copy_bundle(bundle, tmp_path / "bundle")
    perturb_onnx(d)
    report = run_parity_gate(d, model_data["test"].X, model_data["train"].X)
    assert report["verdict"] == "failed" and report["failed"] == ["onnx"]
    cell = report["exports"]["onnx"]
    assert cell["max_abs_diff"] > 1e-3 and cell["rows_over_tolerance"] > 0
    (line,) = describe_failures(report)
    assert line.startswith("export onnx: max |score - native| =") and "tolerance" in line


@pytest.mark.parametrize("export_format", CODE_FORMATS)
def test_gate_blocks_a_broken_generated_export(export_format, model_data, tmp_path_factory, tmp_path):
    built = built_bundle("lightgbm", model_data, tmp_path_factory)
    if built.parity["exports"][export_format]["status"] == "not_available":
        pytest.skip(built.parity["exports"][export_format]["reason"])
    d = copy_bundle(built, tmp_path / "bundle")
    perturb_leaf(d, export_format)
    write_checksums(d)
    report = run_parity_gate(d, model_data["test"].X, model_data["train"].X)
    assert report["failed"] == [export_format], report["exports"][export_format]
    assert export_format in describe_failures(report)[0]


def test_unavailable_exports_are_not_passes(model_data, tmp_path_factory, tmp_path):
    built = built_bundle("logreg", model_data, tmp_path_factory)
    d = copy_bundle(built, tmp_path / "bundle")
    (d / "model.onnx").unlink()  # the manifest still claims it: loading fails -> gate fails
    write_checksums(d)
    report = run_parity_gate(d, model_data["test"].X, model_data["train"].X)
    assert report["exports"]["onnx"]["status"] == "failed" and "missing" in report["exports"]["onnx"]["reason"]


# --- traps --------------------------------------------------------------------------------------

def test_onnxmltools_refuses_opsets_above_15_and_bundles_use_15(model_data, tmp_path_factory):
    import onnxmltools
    import xgboost as xgb
    from onnxmltools.convert.common.data_types import FloatTensorType

    built = built_bundle("xgboost", model_data, tmp_path_factory)
    booster = xgb.Booster(model_file=str(native_path(built.bundle_dir)))
    with pytest.raises(RuntimeError, match="15"):
        onnxmltools.convert_xgboost(booster, initial_types=[("x", FloatTensorType([None, 20]))], target_opset=16)
    for model_type in MODEL_TYPES:
        model = onnx.load(str(built_bundle(model_type, model_data, tmp_path_factory).bundle_dir / "model.onnx"))
        default = [op.version for op in model.opset_import if op.domain in ("", "ai.onnx")]
        assert default and max(default) <= ONNX_OPSET
        assert [o.name for o in model.graph.output] == ["probability"]


@pytest.fixture(scope="module")
def wide_lightgbm(tmp_path_factory):
    """A LightGBM bundle with hundreds of float64 thresholds (synthetic data, 480 rows)."""
    features, labels = synthetic_frames(n_sources=120, variants=4)
    fp, lp = write_frames(features, labels, tmp_path_factory.mktemp("wide-data"))
    data = load_training_data(fp, lp, "low_quality", FEATURE_NAMES, FEATURE_VERSION)
    d = tmp_path_factory.mktemp("wide-lightgbm") / "b"
    return build_bundle("lightgbm", data, TrainParams(trees=40, depth=5, threads=2), d), data


def test_lightgbm_float64_thresholds_are_rounded_down_for_onnx(wide_lightgbm):
    """Trap: onnxmltools rounds LightGBM's float64 thresholds to the nearest float32; an input
    equal to a threshold that rounded up is routed differently. Our export rounds down."""
    import lightgbm as lgb
    import onnxmltools
    import onnxruntime as ort
    from onnxmltools.convert.common.data_types import FloatTensorType

    built, data = wide_lightgbm
    rows = adversarial_rows(split_thresholds(built.bundle_dir), data["train"].X)
    native = load_scorer(built.bundle_dir, "native").score(rows)
    ours = load_scorer(built.bundle_dir, "onnx").score(rows)
    assert np.max(np.abs(ours - native)) <= FLOAT32_TOLERANCE
    stock = normalise_output(onnxmltools.convert_lightgbm(
        lgb.Booster(model_file=str(native_path(built.bundle_dir))),
        initial_types=[("features", FloatTensorType([None, len(FEATURE_NAMES)]))], target_opset=ONNX_OPSET, zipmap=False))
    session = ort.InferenceSession(stock.SerializeToString(), providers=["CPUExecutionProvider"])
    stock_scores = session.run(["probability"], {"features": rows})[0].astype(np.float64)
    assert np.max(np.abs(stock_scores - native)) > 1e-3, "the stock conversion no longer misroutes"


def test_lightgbm_onnx_reads_near_zero_inputs_as_lightgbm_does(tmp_path):
    """LightGBM puts bin edges at +-1e-35f when a feature crosses zero and reads any |x| <= 1e-35f
    as 0.0; the ONNX export must route every float32 around those edges the same way (a bench
    model on zero-centred features once failed the gate on exactly this)."""
    import lightgbm as lgb
    import onnxruntime as ort

    from codegen.onnx_export import _lightgbm
    from codegen.thresholds import LIGHTGBM_ZERO, lightgbm_thresholds

    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (4000, 2)).astype(np.float32)
    X[::3, 0] = 0.0  # exact zeros on the positive side put the split at the zero bin's lower edge
    booster = lgb.train({"objective": "binary", "num_leaves": 4, "min_data_in_leaf": 5, "verbose": -1},
                        lgb.Dataset(X, (X[:, 0] >= 0).astype(int)), 5)
    booster.save_model(str(tmp_path / "model.txt"))
    z = np.float32(LIGHTGBM_ZERO)
    assert float(-z) in set(lightgbm_thresholds(tmp_path / "model.txt")[0].tolist())
    near_zero = [np.nextafter(-z, np.float32(-1)), -z, np.nextafter(-z, np.float32(0)), 0.0,
                 np.nextafter(z, np.float32(0)), z, np.nextafter(z, np.float32(1))]
    rows = np.array([[v, 0.0] for v in near_zero], np.float32)
    session = ort.InferenceSession(_lightgbm(tmp_path / "model.txt", 2).SerializeToString())
    probabilities = session.run(None, {session.get_inputs()[0].name: rows})[1][:, 1]
    np.testing.assert_allclose(probabilities, booster.predict(rows.astype(np.float64)), rtol=0, atol=1e-6)
