"""Generated-code exports (codegen/ + udfs/formats/code_*) against each library's native predict."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import codegen
from _models_fixtures import perturb_leaf
from codegen.assemble import BundleModel, xgboost_base_score
from codegen.thresholds import float32_threshold
from udfs.bundle import write_checksums
from udfs.formats import get_format, load_unchecked

# The generated-code formats (udfs/formats/code_*.py). Bundles here are written by hand, without a
# parity gate, so scorers load through load_unchecked: these tests are the check.
CODE_FORMATS = ("code-python", "code-java", "code-c")

N_FEATURES = 20
TOL = 1e-6
MODEL_TYPES = ("xgboost", "lightgbm", "catboost", "logreg")
NATIVE_FILE = {"xgboost": "model.json", "lightgbm": "model.txt", "catboost": "model.cbm", "logreg": "coefficients.json"}


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features with a nonlinear, imbalanced label (so base scores differ from 0.5)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    x[:, 5] = np.round(x[:, 5] * 2)  # a few discrete columns: many rows sit on split values
    logit = x[:, 0] + x[:, 1] * x[:, 2] + np.sin(2 * x[:, 3]) - 0.8 + 0.3 * x[:, 5]
    y = (logit + rng.normal(size=n) > 0).astype(int)
    return x, y


def write_bundle(bundle_dir: Path, model_type: str, n_trees: int = 30, depth: int = 4) -> Path:
    """Train a small model and write it in the bundle layout (bundle.json, native file, schema)."""
    bundle_dir.mkdir(parents=True, exist_ok=True)
    x, y = synthetic(3000, seed=0)
    native = bundle_dir / NATIVE_FILE[model_type]
    if model_type == "xgboost":
        import xgboost as xgb

        xgb.XGBClassifier(n_estimators=n_trees, max_depth=depth, n_jobs=1).fit(x, y).save_model(native)
    elif model_type == "lightgbm":
        import lightgbm as lgb

        lgb.LGBMClassifier(n_estimators=n_trees, max_depth=depth, num_leaves=2**depth, n_jobs=1,
                           verbose=-1).fit(x, y).booster_.save_model(str(native))
    elif model_type == "catboost":
        from catboost import CatBoostClassifier

        CatBoostClassifier(iterations=n_trees, depth=depth, verbose=0, thread_count=1).fit(x, y).save_model(str(native))
    else:
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(max_iter=500).fit(x, y)
        native.write_text(json.dumps({"coef": lr.coef_[0].tolist(), "intercept": float(lr.intercept_[0])}))
    (bundle_dir / "bundle.json").write_text(json.dumps(
        {"bundle_version": 1, "model_type": model_type, "native_file": native.name, "exports": {}}))
    (bundle_dir / "feature_schema.json").write_text(json.dumps(
        {"feature_version": 1, "features": [{"name": f"f{i}", "dtype": "float32"} for i in range(N_FEATURES)]}))
    return bundle_dir


def generate(bundle_dir: Path) -> dict:
    """Every generated-code format's build step, then the checksums the bundle writer adds (load
    verifies them): {format id: manifest cell}."""
    exports = {fmt: get_format(fmt).export(bundle_dir) for fmt in CODE_FORMATS}
    write_checksums(bundle_dir)
    return exports


def native_predict(bundle_dir: Path, model_type: str, x: np.ndarray) -> np.ndarray:
    """Positive-class probability from the library itself."""
    path = bundle_dir / NATIVE_FILE[model_type]
    if model_type == "xgboost":
        import xgboost as xgb

        m = xgb.XGBClassifier()
        m.load_model(path)
        return m.predict_proba(x)[:, 1].astype(np.float64)
    if model_type == "lightgbm":
        import lightgbm as lgb

        return lgb.Booster(model_file=str(path)).predict(x)
    if model_type == "catboost":
        from catboost import CatBoostClassifier

        m = CatBoostClassifier()
        m.load_model(str(path))
        return m.predict_proba(x)[:, 1]
    data = json.loads(path.read_text())
    z = x.astype(np.float64) @ np.asarray(data["coef"]) + data["intercept"]
    return 1.0 / (1.0 + np.exp(-z))


def split_points(bundle_dir: Path, model_type: str) -> list[tuple[int, float]]:
    """(feature, value) of every split, read from the native model independently of codegen."""
    path = bundle_dir / NATIVE_FILE[model_type]
    points: list[tuple[int, float]] = []
    if model_type == "xgboost":
        trees = json.loads(path.read_text())["learner"]["gradient_booster"]["model"]["trees"]
        for t in trees:
            for left, f, c in zip(t["left_children"], t["split_indices"], t["split_conditions"]):
                if left != -1:
                    points.append((f, float(np.float32(c))))
    elif model_type == "lightgbm":
        import lightgbm as lgb

        def walk(node):
            if "leaf_value" in node:
                return
            t = node["threshold"]
            for v in (np.float32(t), float32_threshold(t, True), float32_threshold(t, False)):
                points.append((node["split_feature"], float(v)))
            walk(node["left_child"])
            walk(node["right_child"])

        for info in lgb.Booster(model_file=str(path)).dump_model()["tree_info"]:
            walk(info["tree_structure"])
    elif model_type == "catboost":
        from catboost import CatBoostClassifier

        m = CatBoostClassifier()
        m.load_model(str(path))
        dumped = bundle_dir.parent / f"{bundle_dir.name}-cb.json"
        m.save_model(str(dumped), format="json")
        for feat in json.loads(dumped.read_text())["features_info"]["float_features"]:
            points += [(feat["flat_feature_index"], float(np.float32(b))) for b in feat.get("borders") or []]
    return points


def threshold_rows(points: list[tuple[int, float]], seed: int = 1) -> np.ndarray:
    """One row per split point whose split feature equals the split value exactly (as float32)."""
    base, _ = synthetic(max(len(points), 1), seed)
    for r, (f, v) in enumerate(points):
        base[r, f] = np.float32(v)
    return base[: len(points)]


@pytest.fixture(scope="module", params=MODEL_TYPES)
def bundle(request, tmp_path_factory):
    """(model_type, bundle_dir, exports) for a small model of each type, exports generated once."""
    bundle_dir = write_bundle(tmp_path_factory.mktemp(request.param) / "bundle", request.param)
    return request.param, bundle_dir, generate(bundle_dir)


@pytest.mark.parametrize("fmt", CODE_FORMATS)
def test_exports_match_native_on_random_and_threshold_rows(bundle, fmt):
    model_type, bundle_dir, exports = bundle
    if model_type == "catboost" and fmt == "code-java":
        assert exports[fmt]["available"] is False and "Java" in exports[fmt]["reason"]
        return
    assert exports[fmt]["available"], exports[fmt]
    for rel in exports[fmt]["files"]:
        assert (bundle_dir / rel).is_file(), rel
    scorer = load_unchecked(bundle_dir, fmt)
    assert scorer.format == fmt
    x, _ = synthetic(500, seed=7)
    points = split_points(bundle_dir, model_type)
    if model_type != "logreg":
        assert len(points) > 50
        x = np.vstack([x, threshold_rows(points)])
    got = scorer.score(x)
    assert got.dtype == np.float64 and got.shape == (len(x),)
    np.testing.assert_allclose(got, native_predict(bundle_dir, model_type, x), rtol=0, atol=TOL)


def test_java_trees_use_the_flat_layout_of_the_c_export(bundle):
    """Tree models' Java walks the same flat arrays as the C kernel (in the same summation order),
    so the two agree far inside TOL; a linear model has no trees and stays m2cgen's code."""
    model_type, bundle_dir, exports = bundle
    if model_type == "catboost":
        pytest.skip("CatBoost has no Java export")
    has_forest = (bundle_dir / "java" / "ScoreForest.java").is_file()
    assert has_forest == (model_type in ("xgboost", "lightgbm"))
    x, _ = synthetic(400, seed=13)
    x = np.vstack([x, threshold_rows(split_points(bundle_dir, model_type))]) if has_forest else x
    java, c = load_unchecked(bundle_dir, "code-java").score(x), load_unchecked(bundle_dir, "code-c").score(x)
    np.testing.assert_allclose(java, c, rtol=0, atol=1e-12)


@pytest.mark.parametrize("fmt", CODE_FORMATS)
def test_missing_values_follow_native_default_directions(bundle, fmt):
    model_type, bundle_dir, exports = bundle
    if model_type not in ("xgboost", "lightgbm"):
        pytest.skip("NaN routing is defined by the tree libraries; the pipeline quarantines non-finite features")
    x, _ = synthetic(300, seed=11)
    rng = np.random.default_rng(3)
    x[rng.random(x.shape) < 0.15] = np.nan
    got = load_unchecked(bundle_dir, fmt).score(x)
    np.testing.assert_allclose(got, native_predict(bundle_dir, model_type, x), rtol=0, atol=TOL)


@pytest.mark.parametrize("fmt", CODE_FORMATS)
def test_perturbed_leaf_is_detected(bundle, fmt, tmp_path):
    model_type, bundle_dir, exports = bundle
    if not exports[fmt]["available"]:
        pytest.skip(exports[fmt]["reason"])
    copy = shutil.copytree(bundle_dir, tmp_path / "bundle")
    x, _ = synthetic(2000, seed=5)
    before = load_unchecked(copy, fmt).score(x)
    what = perturb_leaf(copy, fmt)
    write_checksums(copy)  # as if the corruption had happened before the checksums were taken
    after = load_unchecked(copy, fmt).score(x)
    assert np.abs(after - before).max() > 1e-3, what
    assert np.abs(after - native_predict(copy, model_type, x)).max() > TOL


def test_xgboost_base_score_comes_from_the_booster_config(tmp_path):
    import xgboost as xgb

    bundle_dir = write_bundle(tmp_path / "b", "xgboost", n_trees=3, depth=2)
    model = xgb.XGBClassifier()
    model.load_model(bundle_dir / "model.json")
    # The trap: get_params() no longer carries it in XGBoost 3, which crashes m2cgen 0.10 itself.
    assert not isinstance(model.get_params()["base_score"], (int, float))  # None or a list
    base = xgboost_base_score(model.get_booster())
    _, y = synthetic(3000, seed=0)
    assert base == pytest.approx(y.mean(), abs=1e-6) and base != 0.5


def test_early_stopped_xgboost_uses_best_iteration(tmp_path):
    import xgboost as xgb

    bundle_dir = tmp_path / "b"
    write_bundle(bundle_dir, "xgboost", n_trees=2, depth=2)
    x, y = synthetic(3000, seed=0)
    xv, yv = synthetic(500, seed=9)
    yv = 1 - yv  # a validation set that gets worse at once, so training stops early
    m = xgb.XGBClassifier(n_estimators=40, max_depth=3, early_stopping_rounds=3, n_jobs=1)
    m.fit(x, y, eval_set=[(xv, yv)], verbose=False)
    assert m.best_iteration < 39
    m.save_model(bundle_dir / "model.json")
    generate(bundle_dir)
    xt, _ = synthetic(400, seed=2)
    got = load_unchecked(bundle_dir, "code-c").score(xt)
    np.testing.assert_allclose(got, native_predict(bundle_dir, "xgboost", xt), rtol=0, atol=TOL)


def test_float32_threshold_rounding_is_exact_for_neighbouring_floats():
    for t in (0.1, -2.5000001, 1e-40, 3.4e38, 1e39, -1e39):
        for le in (True, False):
            big = float32_threshold(t, le)
            f = np.float32(t) if abs(t) < 3.4e38 else np.float32(np.copysign(np.inf, t))
            for x in (np.nextafter(f, -np.inf), f, np.nextafter(f, np.inf)):
                assert (x <= big if le else x < big) == (float(x) <= t if le else float(x) < t)


def test_wrong_feature_count_is_refused(bundle):
    model_type, bundle_dir, exports = bundle
    from udfs.errors import PhotoscoreError

    with pytest.raises(PhotoscoreError, match="feature matrix"):
        load_unchecked(bundle_dir, "code-c").score(np.zeros((3, N_FEATURES + 1), dtype=np.float32))


def test_bundle_without_model_type_names_the_file(tmp_path):
    from udfs.errors import PhotoscoreError

    (tmp_path / "bundle.json").write_text(json.dumps({"bundle_version": 1, "model_type": "svm"}))
    (tmp_path / "feature_schema.json").write_text(json.dumps({"features": [{"name": "a"}]}))
    for export in (codegen.export_python, codegen.export_java, codegen.export_c):
        with pytest.raises(PhotoscoreError, match="bundle.json"):
            export(tmp_path)
    assert BundleModel  # the dataclass stays importable for callers


@pytest.mark.integration
@pytest.mark.parametrize("model_type", ["xgboost", "lightgbm"])
def test_default_size_compiles_in_java_and_c(model_type, tmp_path):
    """300 trees x depth 8 (the training default): javac's constant-pool limit and the C build."""
    bundle_dir = write_bundle(tmp_path / "b", model_type, n_trees=300, depth=8)
    exports = generate(bundle_dir)
    x, _ = synthetic(1000, seed=4)
    x = np.vstack([x, threshold_rows(split_points(bundle_dir, model_type)[:3000])])
    expected = native_predict(bundle_dir, model_type, x)
    for fmt in ("code-java", "code-c"):
        assert exports[fmt]["available"], exports[fmt]
        np.testing.assert_allclose(load_unchecked(bundle_dir, fmt).score(x), expected, rtol=0, atol=TOL)
