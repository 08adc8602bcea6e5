"""Write a bundle's `model.onnx` from its native file, normalised to one `probability` output.

Converters: onnxmltools for XGBoost and LightGBM (it supports ONNX opsets <= 15, so the opset is
pinned to 15: asking for more raises), CatBoost's own ONNX export, skl2onnx for the linear model.
Every converter names and shapes its outputs differently (a label plus an (n, 2) tensor, or a
ZipMap sequence of dicts), so the graph is rewritten to end in one float32 (n,) tensor named
`probability`, the positive-class probability - the contract of udfs/formats/onnx.py.

The ONNX is built from the native file already in the bundle, not from the in-memory model, so
both exports provably come from the same bytes.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from codegen.thresholds import float32_threshold, lightgbm_threshold, lightgbm_thresholds
from udfs.bundle import ONNX_FILE, ONNX_OUTPUT, native_path, read_feature_schema, read_manifest
from udfs.errors import PhotoscoreError

ONNX_OPSET = 15        # onnxmltools 1.16 converts to opsets <= 15 only
ONNX_ML_OPSET = 3      # ai.onnx.ml version that goes with opset 15 (TreeEnsemble*, LinearClassifier)
INPUT_NAME = "features"


def _float_input(width: int):
    from onnxmltools.convert.common.data_types import FloatTensorType

    return [(INPUT_NAME, FloatTensorType([None, width]))]


def _xgboost(path: Path, width: int) -> onnx.ModelProto:
    import onnxmltools
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(path))
    return onnxmltools.convert_xgboost(booster, initial_types=_float_input(width), target_opset=ONNX_OPSET)


def _lightgbm(path: Path, width: int) -> onnx.ModelProto:
    import lightgbm as lgb
    import onnxmltools

    booster = lgb.Booster(model_file=str(path))
    model = onnxmltools.convert_lightgbm(
        booster, initial_types=_float_input(width), target_opset=ONNX_OPSET, zipmap=False
    )
    round_thresholds_down(model, lightgbm_thresholds(path))
    return model


def _catboost(path: Path, width: int) -> onnx.ModelProto:
    from catboost import CatBoost

    model = CatBoost()
    model.load_model(str(path), format="cbm")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "catboost.onnx"
        model.save_model(str(out), format="onnx",
                         export_parameters={"onnx_domain": "ai.catboost", "onnx_model_version": 1})
        return onnx.load(str(out))


def _logreg(path: Path, width: int) -> onnx.ModelProto:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    data = json.loads(path.read_text())
    # A LogisticRegression carrying exactly the coefficients of coefficients.json (scaler folded
    # in), so the ONNX graph computes the same formula as the native scorer, in float32.
    clf = LogisticRegression()
    clf.coef_ = np.asarray(data["coef"], dtype=np.float64).reshape(1, -1)
    clf.intercept_ = np.asarray([data["intercept"]], dtype=np.float64)
    clf.classes_ = np.array([0, 1])
    return convert_sklearn(
        clf, initial_types=[(INPUT_NAME, FloatTensorType([None, width]))],
        target_opset={"": ONNX_OPSET, "ai.onnx.ml": 1}, options={id(clf): {"zipmap": False}},
    )


_CONVERTERS = {"xgboost": _xgboost, "lightgbm": _lightgbm, "catboost": _catboost, "logreg": _logreg}


def _attr(node: onnx.NodeProto, name: str):
    for attr in node.attribute:
        if attr.name == name:
            return attr
    return None


def round_thresholds_down(model: onnx.ModelProto, thresholds: dict[int, np.ndarray]) -> int:
    """Make float32 `x <= T` route exactly like LightGBM's float64 `zeroed(x) <= t` for float32 inputs.

    LightGBM thresholds are float64 (bin midpoints nudged upward); the ONNX tree ensemble stores
    them as float32, rounded to nearest. When that rounds *up* to a float32 value v, an input equal
    to v goes left in ONNX and right in LightGBM: a whole leaf's difference. And LightGBM reads
    any |x| <= 1e-35f as 0.0, which moves the outcome of thresholds in [-1e-35, 1e-35)
    (`codegen.thresholds.lightgbm_threshold`). So each BRANCH_LEQ threshold is mapped back to its
    float64 original (the feature's thresholds that round to it) and replaced by the largest
    float32 <= the original's effective threshold. Returns how many thresholds moved.
    """
    moved = 0
    nodes = [n for n in model.graph.node if n.op_type in ("TreeEnsembleClassifier", "TreeEnsembleRegressor")]
    if not nodes:
        raise PhotoscoreError("the LightGBM ONNX graph has no tree ensemble node to fix thresholds in")
    by_feature = {f: (t, t.astype(np.float32)) for f, t in thresholds.items()}
    for node in nodes:
        values_attr, modes, feats = _attr(node, "nodes_values"), _attr(node, "nodes_modes"), _attr(node, "nodes_featureids")
        if values_attr is None or modes is None or feats is None:
            raise PhotoscoreError("unexpected LightGBM ONNX layout: no nodes_values/nodes_modes attributes")
        values = list(values_attr.floats)
        for i, (mode, feature) in enumerate(zip(modes.strings, feats.ints)):
            if mode != b"BRANCH_LEQ":
                continue
            v = np.float32(values[i])
            originals, rounded = by_feature.get(int(feature), (np.empty(0), np.empty(0, np.float32)))
            matches = originals[rounded == v]
            if len(matches) == 0:
                raise PhotoscoreError(
                    f"ONNX threshold {float(v)!r} on feature {feature} matches no LightGBM threshold")
            targets = {float32_threshold(lightgbm_threshold(float(t)), less_equal=True) for t in matches}
            if len(targets) > 1:
                raise PhotoscoreError(
                    f"LightGBM thresholds {matches.tolist()} on feature {feature} share one float32 "
                    "value but route float32 inputs differently; the ONNX export cannot route them exactly")
            target = targets.pop()
            if target != v:
                values[i] = float(target)
                moved += 1
        del values_attr.floats[:]
        values_attr.floats.extend(values)
    return moved


def normalise_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite the graph to output only `probability`: float32 (n,), column 1 of the class scores.

    Works for a plain (n, 2) probabilities tensor and for one wrapped in ZipMap (dropped here).
    """
    graph = model.graph
    candidates = [o.name for o in graph.output if "prob" in o.name.lower()]
    if len(candidates) != 1:
        raise PhotoscoreError(
            f"cannot tell the class-probability output among {[o.name for o in graph.output]}")
    source = candidates[0]
    for node in list(graph.node):
        if node.op_type == "ZipMap" and source in node.output:
            source = node.input[0]
            graph.node.remove(node)
    # A Constant node, not an initializer: CatBoost writes an old IR version in which every
    # initializer must also be declared as a graph input.
    graph.node.append(helper.make_node("Constant", [], ["positive_class"], name="positive_class_index",
                                       value=numpy_helper.from_array(np.array(1, dtype=np.int64))))
    graph.node.append(helper.make_node("Gather", [source, "positive_class"], [ONNX_OUTPUT], axis=1,
                                       name="positive_class_probability"))
    del graph.output[:]
    if not any(op.domain in ("", "ai.onnx") for op in model.opset_import):
        # CatBoost's graph imports only ai.onnx.ml; Gather lives in the default domain.
        model.opset_import.append(helper.make_opsetid("", ONNX_OPSET))
    graph.output.append(helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, [None]))
    return model


def export_onnx(bundle_dir: Path | str) -> Path:
    """Convert the bundle's native model to `model.onnx` (opset 15) and return its path."""
    bundle_dir = Path(bundle_dir)
    model_type = read_manifest(bundle_dir)["model_type"]
    width = read_feature_schema(bundle_dir).width
    model = normalise_output(_CONVERTERS[model_type](native_path(bundle_dir), width))
    onnx.checker.check_model(model)
    out = bundle_dir / ONNX_FILE
    onnx.save(model, str(out))
    return out
