"""C export: `score.c` generated from the corrected m2cgen AST, built into `libscore.so`.

ABI (the same for every model type, CatBoost included):
    void score_batch(const float *x, long n, long d, double *out);   row-major n x d float32 in,
                                                                      n positive-class probabilities out
    long score_n_features(void);                                     d the model expects

Layout of the generated code. m2cgen's own C interpreter writes the link function (sigmoid and any
coefficient) and every summed term that is not a tree (intercepts, linear terms). The trees of a
boosted ensemble are laid out by us as flat, perfect binary trees (padded below shallow leaves) and
evaluated branch-free: `i = 2*i + 1 + !(x[feat[i]] < thr[i])`, one tree over a block of rows at a
time so the tree stays in L1 and the rows' dependency chains overlap. m2cgen's nested if/else is
branch-heavy (every split is an unpredictable jump) and far slower on real data.

Exactness: thresholds are compared in float32 against the float32 input. For a `<` split that is
exact when the threshold is rounded *up* to float32, for a `<=` split (LightGBM, double thresholds)
when it is rounded *down*: for every float32 x, `x < t  <=>  x < up(t)` and `x <= t  <=>  x <= down(t)`.
Leaves are summed in float64. Rows holding a NaN take a scalar path that follows each split's
missing-value direction (the else-branch of m2cgen's comparison) exactly.

Portability: compiled with `-O3` for the baseline of the architecture, not `-march=native`, so a .so
built here runs on any x86-64 (an AVX2 gather version of the walk measured slower than the scalar
interleaved walk on AMD EPYC and was dropped). It is still native code for this OS and architecture:
rebuild it from `score.c` with `build_c` where the platform differs.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from m2cgen import ast
from m2cgen.interpreters import CInterpreter

from codegen.assemble import Decomposed, sum_ast
from codegen.thresholds import float32_threshold
from udfs.bundle import C_LIBRARY, C_SOURCE, CPP_SOURCE
from udfs.errors import PhotoscoreError
from udfs.toolchain import shared_library, source_text

MAX_FLAT_DEPTH = 12  # 2**12 leaves per tree; deeper trees go through m2cgen's if/else code
BLOCK_ROWS = 64


@dataclass
class FlatForest:
    """Trees as perfect binary trees of depth `depth` in heap order (children of i: 2i+1, 2i+2)."""

    depth: int
    less_equal: bool  # split goes left on `x <= thr` (LightGBM) instead of `x < thr` (XGBoost)
    feat: np.ndarray  # (trees, 2**depth - 1) feature index
    thr: np.ndarray  # (trees, 2**depth - 1) float32 threshold, rounded as the module docstring says
    thr64: np.ndarray  # (trees, 2**depth - 1) the float64 threshold of the AST (for float64 inputs: Java)
    nan_left: np.ndarray  # (trees, 2**depth - 1) where a NaN goes
    leaf: np.ndarray  # (trees, 2**depth) float64 leaf values


_LEFT_ON_TRUE = {ast.CompOpType.LT: False, ast.CompOpType.LTE: True}
_LEFT_ON_FALSE = {ast.CompOpType.GTE: False, ast.CompOpType.GT: True}


def _is_tree(term) -> bool:
    return isinstance(term, ast.IfExpr)


def _tree_depth(expr) -> int:
    if isinstance(expr, ast.NumVal):
        return 0
    if not (
        isinstance(expr, ast.IfExpr)
        and isinstance(expr.test, ast.CompExpr)
        and isinstance(expr.test.left, ast.FeatureRef)
        and isinstance(expr.test.right, ast.NumVal)
    ):
        raise ValueError("not a simple decision tree")
    return 1 + max(_tree_depth(expr.body), _tree_depth(expr.orelse))


def flatten_trees(trees: list, n_features: int) -> FlatForest | None:
    """Lay m2cgen tree ASTs out as a FlatForest, or None when they do not fit the flat layout."""
    try:
        depth = max(1, max(_tree_depth(t) for t in trees))
    except ValueError:
        return None
    ops = set()
    _collect_ops(trees, ops)
    if ops <= {ast.CompOpType.LT, ast.CompOpType.GTE}:
        less_equal = False
    elif ops <= {ast.CompOpType.LTE, ast.CompOpType.GT}:
        less_equal = True
    else:
        return None
    if depth > MAX_FLAT_DEPTH:
        return None
    n_int, n_leaf = 2**depth - 1, 2**depth
    forest = FlatForest(
        depth=depth,
        less_equal=less_equal,
        feat=np.zeros((len(trees), n_int), dtype=np.int64),
        thr=np.zeros((len(trees), n_int), dtype=np.float32),
        thr64=np.zeros((len(trees), n_int), dtype=np.float64),
        nan_left=np.zeros((len(trees), n_int), dtype=bool),
        leaf=np.zeros((len(trees), n_leaf), dtype=np.float64),
    )
    for t, tree in enumerate(trees):
        _fill(forest, t, tree, 0, 0)
    if forest.feat.max() >= n_features:
        raise PhotoscoreError(f"a tree splits on feature {forest.feat.max()} but the schema has {n_features}")
    return forest


def split_forest(decomposed: Decomposed, n_features: int) -> tuple[FlatForest | None, list]:
    """The decomposed sum as (its trees laid out flat, the other terms); (None, all terms) when
    there are no trees or they do not fit the flat layout. Shared by the C and Java backends."""
    trees = [t for t in decomposed.terms if _is_tree(t)]
    forest = flatten_trees(trees, n_features) if trees else None
    if forest is None:
        return None, list(decomposed.terms)
    return forest, [t for t in decomposed.terms if not _is_tree(t)]


def _collect_ops(trees, ops: set) -> None:
    stack = list(trees)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.IfExpr):
            ops.add(node.test.op)
            stack += [node.body, node.orelse]


def _fill(forest: FlatForest, t: int, expr, pos: int, level: int) -> None:
    n_int = 2**forest.depth - 1
    if level == forest.depth:
        forest.leaf[t, pos - n_int] = float(expr.value)
        return
    if isinstance(expr, ast.NumVal):
        # A leaf above the bottom level: both sides carry the value, so the padded split is moot.
        _fill(forest, t, expr, 2 * pos + 1, level + 1)
        _fill(forest, t, expr, 2 * pos + 2, level + 1)
        return
    op, threshold = expr.test.op, float(expr.test.right.value)
    if op in _LEFT_ON_TRUE:
        left, right, nan_left = expr.body, expr.orelse, False  # NaN fails the test: else = right
    else:
        left, right, nan_left = expr.orelse, expr.body, True  # x >= t true -> right; NaN -> else = left
    forest.feat[t, pos] = expr.test.left.index
    forest.thr[t, pos] = float32_threshold(threshold, forest.less_equal)
    forest.thr64[t, pos] = threshold
    forest.nan_left[t, pos] = nan_left
    _fill(forest, t, left, 2 * pos + 1, level + 1)
    _fill(forest, t, right, 2 * pos + 2, level + 1)


def _c_float(v: float, suffix: str = "") -> str:
    v = float(v)
    if v == np.inf:
        return "INFINITY"
    if v == -np.inf:
        return "-INFINITY"
    return v.hex() + suffix


def _c_array(ctype: str, name: str, rows: np.ndarray, fmt) -> str:
    lines = [f"static const {ctype} {name}[{rows.shape[0]}][{rows.shape[1]}] = {{"]
    for row in rows:
        lines.append("  {" + ",".join(fmt(v) for v in row) + "},")
    lines.append("};")
    return "\n".join(lines)


def _m2cgen_c(expr, function_name: str, array_name: str) -> str:
    code = CInterpreter(function_name=function_name, feature_array_name=array_name).interpret(expr)
    return code





def write_c_source(decomposed: Decomposed, n_features: int, out_path: Path, header: str) -> None:
    """Write `score.c` for the decomposed probability AST (trees as arrays, the rest via m2cgen)."""
    forest, rest = split_forest(decomposed, n_features)
    rest_ast = sum_ast(rest) if rest else ast.NumVal(0.0)
    parts = [
        f"/* {header} */",
        "#include <math.h>",
        f"#define PS_N_FEATURES {n_features}",
        f"#define PS_BLOCK {BLOCK_ROWS}",
        "/* Non-tree terms of the sum, written by m2cgen. */",
        _m2cgen_c(rest_ast, "ps_rest", "input"),
        "/* Link function (margin -> probability), written by m2cgen. */",
        _m2cgen_c(decomposed.link_ast, "ps_link", "margin"),
    ]
    if forest is None:
        parts.append("#define PS_N_TREES 0")
    else:
        n_trees = forest.feat.shape[0]
        leaf_exact32 = np.array_equal(forest.leaf.astype(np.float32).astype(np.float64), forest.leaf)
        leaf_t = "float" if leaf_exact32 else "double"
        nan_bits = np.packbits(forest.nan_left, axis=1, bitorder="little")
        parts += [
            f"#define PS_N_TREES {n_trees}",
            f"#define PS_DEPTH {forest.depth}",
            f"#define PS_LESS_EQUAL {int(forest.less_equal)}",
            f"#define PS_LEAF_FLOAT {int(leaf_exact32)}",
            f"typedef {leaf_t} PS_LEAF_T;",
            _c_array("int", "ps_feat", forest.feat, str),
            _c_array("float", "ps_thr", forest.thr, lambda v: _c_float(v, "f")),
            _c_array("unsigned char", "ps_nan_left", nan_bits, str),
            _c_array("PS_LEAF_T", "ps_leaf", forest.leaf, lambda v: _c_float(v, "f" if leaf_exact32 else "")),
            source_text("codegen", "c/forest_kernel.h"),
        ]
    parts.append(source_text("codegen", "c/score_batch.h"))
    out_path.write_text("\n".join(parts) + "\n")


def build_c(bundle_dir: Path) -> str:
    """Compile the bundle's `score.c` (or CatBoost's `score.cpp`) into `libscore.so`; returns its name.

    Run this on (a machine like) the one that scores: the .so is native code for this platform.
    """
    bundle_dir = Path(bundle_dir)
    sources = [bundle_dir / name for name in (C_SOURCE, CPP_SOURCE) if (bundle_dir / name).is_file()]
    if not sources:
        raise PhotoscoreError(f"{bundle_dir}: neither {C_SOURCE} nor {CPP_SOURCE} found; export the C code first")
    library = shared_library(sources[:1], name="libscore", what=f"the C export of {bundle_dir}",
                             cpp=sources[0].suffix == ".cpp")
    shutil.copyfile(library, bundle_dir / C_LIBRARY)
    return C_LIBRARY
