"""Read a model bundle's native file and turn it into an m2cgen expression tree we can trust.

m2cgen 0.10 (its last release, 2022) interprets the model; this module corrects what it gets wrong
for today's libraries before any code is generated:

* XGBoost 3.x reports `base_score` as None in `get_params()` (the true value lives in
  `save_config()`); m2cgen then crashes. We assemble with the real scalar through a local subclass of
  its assembler (no global patching).
* XGBoost thresholds and leaves are float32. m2cgen keeps them as numpy float32 and prints the
  shortest decimal that round-trips *as float32*; the generated code compares it as a double, so a
  row exactly on a threshold takes the wrong branch. We widen every constant to the float64 that
  equals the float32 exactly, so the printed decimal is exact and `(double)x < t` == `x <f t`.
* XGBoost models saved with early stopping carry `best_iteration`; native predict stops there, so we
  keep only those trees (m2cgen looks for the removed `best_ntree_limit`).
* Classifiers yield `[p0, p1]`; we keep the positive-class probability only. A LogisticRegression
  yields its decision function; we add the sigmoid.

Comparison rules the generated code must keep (and the tests check with rows on every threshold):
XGBoost goes left when `x < t` in float32, a missing (NaN) value goes to the node's `missing` child;
LightGBM goes left when `(double)x <= t` after reading |x| <= 1e-35f as 0.0, NaN goes by `default_left` for missing_type NaN and is
treated as 0.0 for missing_type None (m2cgen encodes both by choosing the comparison's else-branch);
`missing_type` Zero and categorical splits are refused.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from m2cgen import ast
from m2cgen.assemblers import utils as m2c_utils
from m2cgen.assemblers.boosting import (
    BaseTreeBoostingAssembler,
    LightGBMModelAssembler,
    XGBoostTreeModelAssembler,
)
from m2cgen.assemblers.linear import SklearnLinearModelAssembler

from codegen.thresholds import lightgbm_threshold
from udfs.errors import PhotoscoreError

MODEL_TYPES = ("xgboost", "lightgbm", "catboost", "logreg")


@dataclass(frozen=True)
class BundleModel:
    """What code generation needs to know about a bundle: its model type, native file and features."""

    bundle_dir: Path
    model_type: str
    native_path: Path
    feature_names: tuple[str, ...]

    @property
    def n_features(self) -> int:
        return len(self.feature_names)


def read_bundle(bundle_dir: Path) -> BundleModel:
    """Read `bundle.json` and `feature_schema.json` of `bundle_dir`; errors name the file at fault."""
    bundle_dir = Path(bundle_dir)
    manifest_path = bundle_dir / "bundle.json"
    schema_path = bundle_dir / "feature_schema.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        schema = json.loads(schema_path.read_text())
    except FileNotFoundError as exc:
        raise PhotoscoreError(f"{exc.filename} is missing: is {bundle_dir} a model bundle directory?") from None
    except json.JSONDecodeError as exc:
        raise PhotoscoreError(f"{bundle_dir}: invalid JSON in bundle.json or feature_schema.json: {exc}") from None
    model_type = manifest.get("model_type")
    if model_type not in MODEL_TYPES:
        raise PhotoscoreError(
            f"{manifest_path}: model_type {model_type!r} is not one of {', '.join(MODEL_TYPES)}"
        )
    native_path = bundle_dir / manifest.get("native_file", "")
    if not native_path.is_file():
        raise PhotoscoreError(f"{manifest_path}: native_file {native_path.name!r} not found in {bundle_dir}")
    features = schema.get("features") or []
    if not features:
        raise PhotoscoreError(f"{schema_path}: no features listed")
    return BundleModel(bundle_dir, model_type, native_path, tuple(f["name"] for f in features))


# --------------------------------------------------------------------------------------------------
# Native files -> estimator objects m2cgen understands (never unpickling).


def xgboost_base_score(booster) -> float:
    """The scalar base_score (probability space) of an XGBoost booster, read from its config.

    XGBoost >= 3 writes it as a one-element list string such as "[5.085E-1]" (shortest float32
    decimal), older versions as a plain number.
    """
    raw = json.loads(booster.save_config())["learner"]["learner_model_param"]["base_score"]
    values = [float(v) for v in str(raw).strip("[]").split(",") if v.strip()]
    if len(values) != 1:
        raise PhotoscoreError(f"XGBoost model has {len(values)} base scores; only binary models are supported")
    return float(np.float32(values[0]))


class _XGBoostAssembler(XGBoostTreeModelAssembler):
    """m2cgen's XGBoost assembler given the real base_score and the early-stopping tree limit."""

    def __init__(self, model):
        booster = model.get_booster()
        self.multiclass_params_seq_len = 1
        self._feature_name_to_idx = {n: i for i, n in enumerate(booster.feature_names or [])}
        trees = [json.loads(d) for d in booster.get_dump(dump_format="json")]
        best = booster.attr("best_iteration")
        limit = int(best) + 1 if best is not None else None
        BaseTreeBoostingAssembler.__init__(
            self, model, trees, base_score=xgboost_base_score(booster), tree_limit=limit
        )

    def _assemble_bin_class_output(self, estimator_params):
        # m2cgen computes logit(base_score) in float64; XGBoost computes it in float32.
        base = np.float32(self._base_score)
        margin = float(-np.log(np.float32(1.0) / base - np.float32(1.0)))
        proba = self._bin_class_convert_output(
            self._assemble_single_output(estimator_params, base_score=margin))
        return ast.VectorVal([ast.BinNumExpr(ast.NumVal(1.0), proba, ast.BinNumOpType.SUB), proba])


class _LightGBMAssembler(LightGBMModelAssembler):
    """m2cgen's LightGBM assembler with LightGBM's near-zero input rule folded into thresholds."""

    def _assemble_tree(self, tree):
        if "threshold" in tree:
            tree = dict(tree, threshold=lightgbm_threshold(tree["threshold"]))
        return super()._assemble_tree(tree)


def _load_xgboost(path: Path):
    import xgboost as xgb

    model = xgb.XGBClassifier()
    model.load_model(str(path))
    objective = json.loads(model.get_booster().save_config())["learner"]["objective"]["name"]
    if objective != "binary:logistic":
        raise PhotoscoreError(f"{path}: objective {objective!r}; only binary:logistic is supported")
    return model


def _load_lightgbm(path: Path):
    import lightgbm as lgb

    booster = lgb.Booster(model_file=str(path))
    dump = booster.dump_model()
    objective = str(dump.get("objective", "")).split(" ")[0]
    if objective != "binary":
        raise PhotoscoreError(f"{path}: objective {objective!r}; only binary is supported")
    for tree in dump["tree_info"]:
        _check_lightgbm_tree(tree["tree_structure"], path)
    # m2cgen reads `booster_` and `n_classes_` of an LGBMClassifier; wrap the booster without fitting.
    model = lgb.LGBMClassifier()
    model._Booster = booster
    model._n_classes = 2
    model._classes = np.array([0, 1])
    model.fitted_ = True
    return model


def _check_lightgbm_tree(node: dict, path: Path) -> None:
    if "leaf_value" in node:
        return
    if node.get("decision_type") != "<=":
        raise PhotoscoreError(f"{path}: categorical split ({node.get('decision_type')}) is not supported")
    if node.get("missing_type") not in ("None", "NaN"):
        raise PhotoscoreError(f"{path}: missing_type {node.get('missing_type')!r} is not supported")
    _check_lightgbm_tree(node["left_child"], path)
    _check_lightgbm_tree(node["right_child"], path)


def load_logreg(path: Path):
    """A sklearn LogisticRegression rebuilt from `coefficients.json` (`coef`, `intercept`)."""
    from sklearn.linear_model import LogisticRegression

    try:
        data = json.loads(Path(path).read_text())
        coef = np.asarray(data["coef"], dtype=np.float64).reshape(1, -1)
        intercept = np.asarray([float(data["intercept"])])
    except (KeyError, TypeError, ValueError) as exc:
        raise PhotoscoreError(f"{path}: expected {{'coef': [floats], 'intercept': float}} ({exc})") from None
    model = LogisticRegression()
    model.coef_, model.intercept_, model.classes_ = coef, intercept, np.array([0, 1])
    model.n_features_in_ = coef.shape[1]
    return model


def load_native(bm: BundleModel):
    """The estimator object for the bundle's native file (xgboost, lightgbm, logreg)."""
    loaders = {"xgboost": _load_xgboost, "lightgbm": _load_lightgbm, "logreg": load_logreg}
    if bm.model_type not in loaders:
        raise PhotoscoreError(f"m2cgen does not support model_type {bm.model_type!r}")
    return loaders[bm.model_type](bm.native_path)


# --------------------------------------------------------------------------------------------------
# Estimator -> corrected AST of the positive-class probability.


def probability_ast(bm: BundleModel) -> ast.Expr:
    """The m2cgen AST computing the positive-class probability, with exact float64 constants."""
    model = load_native(bm)
    if bm.model_type == "xgboost":
        full = _XGBoostAssembler(model).assemble()
    elif bm.model_type == "lightgbm":
        full = _LightGBMAssembler(model).assemble()
    else:
        full = ast.SigmoidExpr(SklearnLinearModelAssembler(model).assemble())
    if isinstance(full, ast.VectorVal):
        if len(full.exprs) != 2:
            raise PhotoscoreError(f"{bm.native_path}: expected a binary classifier, got {len(full.exprs)} outputs")
        full = full.exprs[1]
    return _widen_constants(full)


def _widen_constants(expr):
    """Replace every float32 NumVal by the float64 equal to it, in place; returns `expr`."""
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.NumVal):
            node.value = np.float64(node.value)
            continue
        for child in _children(node):
            stack.append(child)
    return expr


def _children(node) -> list:
    if isinstance(node, ast.IfExpr):
        return [node.test, node.body, node.orelse]
    if isinstance(node, (ast.BinNumExpr, ast.CompExpr)):
        return [node.left, node.right]
    if isinstance(node, (ast.VectorVal, ast.SoftmaxExpr)):
        return list(node.exprs)
    if hasattr(node, "expr"):
        return [node.expr]
    if hasattr(node, "base"):
        return [node.base, node.exp]
    return []


# --------------------------------------------------------------------------------------------------
# Decomposition: probability = link(sum of terms). Lets backends split big models (Java's class size
# limits) and lay tree terms out as flat arrays (the C fast path).


@dataclass
class Decomposed:
    """`link_ast` is the probability with the sum replaced by FeatureRef(0) of a 1-element array."""

    terms: list
    link_ast: ast.Expr


def decompose(expr: ast.Expr) -> Decomposed:
    """Split the probability AST at its outermost ADD chain into summed terms and a link function."""
    path_parent, attr = None, None
    node = expr
    while not (isinstance(node, ast.BinNumExpr) and node.op == ast.BinNumOpType.ADD):
        children = _unary_child(node)
        if children is None:
            # No sum at all (a single tree or constant): the whole body is one term.
            return Decomposed([expr], ast.FeatureRef(0))
        path_parent, attr = node, children
        node = getattr(node, attr)
    terms = _flatten_add(node)
    if path_parent is None:
        return Decomposed(terms, ast.FeatureRef(0))
    setattr(path_parent, attr, ast.FeatureRef(0))
    try:
        link = copy.deepcopy(expr)
    finally:
        setattr(path_parent, attr, node)
    return Decomposed(terms, link)


def _unary_child(node):
    """The attribute leading towards the sum: the only non-constant child of a link-function node."""
    if isinstance(node, (ast.SigmoidExpr, ast.IdExpr, ast.ExpExpr, ast.AbsExpr)):
        return "expr"
    if isinstance(node, ast.BinNumExpr):
        if isinstance(node.left, ast.NumVal):
            return "right"
        if isinstance(node.right, ast.NumVal):
            return "left"
    return None


def _flatten_add(node) -> list:
    out, stack = [], [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, ast.BinNumExpr) and cur.op == ast.BinNumOpType.ADD:
            stack.append(cur.right)
            stack.append(cur.left)
        else:
            out.append(cur)
    return out


def sum_ast(terms: list) -> ast.Expr:
    """An AST adding `terms` in order (the inverse of `_flatten_add`)."""
    return m2c_utils.apply_op_to_expressions(ast.BinNumOpType.ADD, *terms)


def count_nodes(expr) -> int:
    """Number of AST nodes under `expr` (a size measure for splitting generated code)."""
    n, stack = 0, [expr]
    while stack:
        node = stack.pop()
        n += 1
        stack.extend(_children(node))
    return n
