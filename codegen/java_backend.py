"""Java export: m2cgen Java classes under package `photoscore.generated`, compiled into `score.jar`.

Entry points (no dependency beyond the JDK; Spark calls scoreBlock, udfs/spark_jvm.py):
    photoscore.generated.Score.score(double[] input) -> positive-class probability
    photoscore.generated.Score.score(double f0, ..., double fN)   the same, one argument per feature
    photoscore.generated.Score.scoreBlock(float[] x, int n, double[] out)
        n rows (row-major float32, like the C ABI) at once: the JVM batch path (Spark, the harness)
    photoscore.generated.ScoreHarness <in.bin> <n> <d> <float32|float64> <out.bin>
        batch scorer for Python-side parity checks: little-endian row-major matrix in, float64 out
        (float32 through scoreBlock, float64 row by row through score).

Tree ensembles (XGBoost, LightGBM) are not written as m2cgen's nested if/else: every split there is
an unpredictable branch, and at 300 trees x depth 8 that code ran at ~40-50 k rows/s per core even
fully JIT-compiled. The trees use the C export's flat layout instead (`codegen.c_backend.FlatForest`,
shared, not copied): perfect binary trees in heap order as four arrays (feature, float64 threshold,
NaN direction, leaf) held in static final fields of `ScoreForest`, filled once by the data classes
`ScorePart<k>` (TREES_PER_CLASS trees each, one method per tree: below javac's 64 KB method and
65535-entry constant-pool limits). `ScoreForest.sum` (one float64 row) walks TREE_LANES trees at once,
`i = 2*i + (x[feat[i]] < thr[i] ? 1 : 2)`, so their independent index chains overlap, comparing the
AST's float64 thresholds with the float64 input, exactly m2cgen's comparison. `ScoreForest.sumBlock`
(float32 rows, the batch path) walks each tree over BLOCK_ROWS rows, ROW_LANES rows at once, as the C
kernel does, comparing the C export's float32 thresholds (rounded so that the float32 comparison
equals the float64 one for every float32 input: codegen.c_backend's docstring): the same scores
(the tree stays in L1 while the rows stream through it; ~10-20 % more rows/s than the row walk in a
plain Java loop, docs/spark.md). Trees are summed in
order in both, as in C; a row holding a NaN takes a path that follows each split's missing-value
direction. Non-tree terms (base score, linear terms) go
through m2cgen as `ScoreRest`, the link function as `ScoreLink`.

Models without flat-layout trees (logistic regression; trees deeper than MAX_FLAT_DEPTH) keep
m2cgen's code: m2cgen 0.10 writes one class per model, and javac fails with `too many constants`
beyond 65535 pool entries, so the summed terms are split over `ScorePart<k>` classes of bounded
size. HotSpot never JIT-compiles a method over 8000 bytes of bytecode (`-XX:+DontCompileHugeMethods`),
and m2cgen writes a class's whole sum as one method, so each class's terms are grouped into methods
of at most METHOD_AST_NODES nodes (about 4 bytes of bytecode a node), and a tree bigger than that is
cut into subtree methods.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from m2cgen import ast
from m2cgen.interpreters import JavaInterpreter

from codegen.assemble import Decomposed, count_nodes, sum_ast
from codegen.c_backend import BLOCK_ROWS, FlatForest, split_forest
from udfs.bundle import JAR, JAVA_DIR, JAVA_PACKAGE
from udfs.errors import PhotoscoreError
from udfs.toolchain import java_jar, render, source_text

# AST nodes per class: each tree node costs about one double constant (two pool entries).
NODES_PER_CLASS = 12000
# AST nodes per method: about 4 bytecode bytes a node (measured: 12 depth-8 XGBoost trees, 10 897
# nodes, compiled to 44 135 bytes), so a method stays well under HotSpot's 8000-byte JIT limit
# even when a split subtree's method holds two children just under the limit.
METHOD_AST_NODES = 900
# Trees walked together for one row in ScoreForest.sum: their index chains are independent, so the
# CPU overlaps their load -> compare -> index latencies (one tree at a time serialises them).
TREE_LANES = 4
# Rows walked together through one tree in ScoreForest.sumBlock, and rows per block (the C kernel's).
ROW_LANES = 8
# Trees per ScorePart<k> data class: about 770 constant-pool entries a depth-8 tree, so 20 trees
# stay far below the 65535-entry limit; each tree's data is one method of about 12 KB.
TREES_PER_CLASS = 20



class _MethodsInterpreter(JavaInterpreter):
    """m2cgen's Java interpreter writing one class as several bounded methods.

    `interpret_terms(groups)` writes `term<k>(input)` for each group of summed terms and
    `score(input)` adding them in order; any tree (IfExpr) over METHOD_AST_NODES that is not a
    method's own root becomes a method of its own (`subroutine<k>`), recursively.
    """

    def __init__(self, **kwargs):
        super().__init__(package_name=JAVA_PACKAGE, **kwargs)
        self.ast_size_per_subroutine_threshold = METHOD_AST_NODES
        self._root = None

    def interpret_terms(self, groups: list[list]) -> str:
        top_cg = self.create_code_generator()
        top_cg.add_package_name(self.package_name)
        with top_cg.class_definition(self.class_name):
            for k, group in enumerate(groups):
                self.enqueue_subroutine(f"term{k}", sum_ast(group))
            self.process_subroutine_queue(top_cg)
            total = " + ".join(f"term{k}({self._feature_array_name})" for k in range(len(groups)))
            top_cg.add_code_lines(
                f"public static double {self.function_name}(double[] {self._feature_array_name}) {{\n"
                f"    return {total};\n}}")
        return top_cg.finalize_and_get_generated_code()

    def _process_subroutine(self, subroutine):
        self._root = subroutine.expr
        return super()._process_subroutine(subroutine)

    def _pre_interpret_hook(self, expr, **kwargs):
        if (isinstance(expr, ast.IfExpr) and expr is not self._root
                and count_nodes(expr) > METHOD_AST_NODES):
            name = self._get_subroutine_name()
            self.enqueue_subroutine(name, expr)
            call = self._cg.function_invocation(name, self._feature_array_name)
            # A nested IfExpr assigns its parent's variable instead of returning a value.
            if kwargs.get("if_var_name") is not None:
                self._cg.add_var_assignment(kwargs["if_var_name"], call, expr.output_size)
            return call, kwargs
        return super()._pre_interpret_hook(expr, **kwargs)


def _chunks(terms: list, budget: int) -> list[list]:
    """Consecutive runs of `terms` of at most `budget` AST nodes each (a bigger term stays alone)."""
    chunks, cur, size = [], [], 0
    for term in terms:
        n = count_nodes(term)
        if cur and size + n > budget:
            chunks.append(cur)
            cur, size = [], 0
        cur.append(term)
        size += n
    if cur:
        chunks.append(cur)
    return chunks


def _score_class(margins: str, n_features: int, header: str, block_sums: bool) -> str:
    """The `Score` entry point: `margins` is the Java expression of the link's margin array over
    `input`; `block_sums`: scoreBlock takes the tree sums from ScoreForest.sumBlock (`out[r]`) and
    adds ScoreRest, else it scores row by row."""
    params = ", ".join(f"double f{j}" for j in range(n_features))
    args = ", ".join(f"f{j}" for j in range(n_features))
    prelude = "        ScoreForest.sumBlock(x, n, out);\n" if block_sums else ""
    row_score = ("ScoreLink.apply(new double[] { out[r] + ScoreRest.score(input) })" if block_sums
                 else "score(input)")
    return render("codegen", "java/Score.java.in", package=JAVA_PACKAGE, header=header, n_features=n_features,
                  margins=margins, params=params, args=args, prelude=prelude, row_score=row_score)


def _java_double(v: float, suffix: str = "") -> str:
    """Exact Java literal of `v` (hex); suffix "f" for a float literal (v must be float32-exact)."""
    v = float(v)
    box = "Float" if suffix == "f" else "Double"
    if v == np.inf:
        return f"{box}.POSITIVE_INFINITY"
    if v == -np.inf:
        return f"{box}.NEGATIVE_INFINITY"
    return v.hex() + suffix


def _array_types(forest: FlatForest) -> tuple[str, str]:
    """(feature index type, leaf type): byte / float where they hold every value exactly, so the
    forest takes less cache (a row visits every tree, so the whole forest is its working set)."""
    feat_t = "byte" if int(forest.feat.max()) <= 127 else "int"
    leaf_exact32 = np.array_equal(forest.leaf.astype(np.float32).astype(np.float64), forest.leaf)
    return feat_t, "float" if leaf_exact32 else "double"


def _forest_part(k: int, forest: FlatForest, trees: range) -> str:
    """Data class ScorePart<k>: one method per tree writing its nodes and leaves into the arrays.

    Array data in Java source compiles to one store per element; one method per tree keeps each
    method far below 64 KB and the class's constant pool below its limit. Each leaf goes through a
    named local (`varJ = <leaf>;`) so a reader (and the tests' perturb_leaf) finds leaf J of a tree.
    """
    n_int, n_leaf = forest.feat.shape[1], forest.leaf.shape[1]
    feat_t, leaf_t = _array_types(forest)
    suffix = "f" if leaf_t == "float" else ""
    sig = f"{feat_t}[] feat, double[] thr, float[] thr32, boolean[] nanLeft, {leaf_t}[] leaf"
    methods, calls = [], []
    for t in trees:
        lines = [f"    private static void tree{t}({sig}) {{",
                 f"        int o = {t * n_int};"]
        for j in range(n_int):
            lines.append(f"        feat[o + {j}] = {int(forest.feat[t, j])}; thr[o + {j}] = "
                         f"{_java_double(forest.thr64[t, j])}; thr32[o + {j}] = "
                         f"{_java_double(forest.thr[t, j], 'f')};" + (
                             f" nanLeft[o + {j}] = true;" if forest.nan_left[t, j] else ""))
        lines.append(f"        o = {t * n_leaf};")
        for j in range(n_leaf):
            lines.append(f"        {leaf_t} var{j} = {_java_double(forest.leaf[t, j], suffix)}; leaf[o + {j}] = var{j};")
        lines.append("    }")
        methods.append("\n".join(lines))
        calls.append(f"        tree{t}(feat, thr, thr32, nanLeft, leaf);")
    body = "\n".join(calls)
    return f"""package {JAVA_PACKAGE};

/** Nodes and leaves of trees {trees.start}..{trees.stop - 1}, in ScoreForest's flat layout. */
final class ScorePart{k} {{
    private ScorePart{k}() {{}}

    static void fill({sig}) {{
{body}
    }}

{chr(10).join(methods)}
}}
"""


def _interleaved_walk(var: str, bound: str, lanes: int, decl: str, step: str, add: str, indent: int) -> str:
    """Java loop advancing `var` by `lanes` while `var + lanes <= bound`: each pass walks `lanes`
    independent index chains DEPTH levels down (`decl`, `step`, `add`: one line per lane, `{j}` the
    lane), so the CPU overlaps their load -> compare -> index latencies."""
    pad = " " * indent

    def lines(template: str, extra: int) -> str:
        return "\n".join(pad + " " * extra + template.format(j=j) for j in range(lanes))

    return f"""{pad}for (; {var} + {lanes} <= {bound}; {var} += {lanes}) {{
{lines(decl, 4)}
{pad}    for (int k = 0; k < DEPTH; k++) {{
{lines(step, 8)}
{pad}    }}
{lines(add, 4)}
{pad}}}"""


def _tree_lane_walk(lanes: int, op: str) -> str:
    """ScoreForest.sum's walk: `lanes` trees at once for one float64 row."""
    return _interleaved_walk("t", "N_TREES", lanes, "int b{j} = (t + {j}) * NI, i{j} = 0;",
                             "i{j} = 2 * i{j} + (x[FEAT[b{j} + i{j}]] " + op + " THR[b{j} + i{j}] ? 1 : 2);",
                             "s += LEAF[(t + {j}) * NL + i{j} - NI];", 8)


def _row_lane_walk(lanes: int, op: str) -> str:
    """ScoreForest.sumBlock's walk: `lanes` float32 rows at once through tree t."""
    return _interleaved_walk("r", "end", lanes, "int o{j} = (r + {j}) * d, i{j} = 0;",
                             "i{j} = 2 * i{j} + (x[o{j} + FEAT[b + i{j}]] " + op + " THR32[b + i{j}] ? 1 : 2);",
                             "acc[r + {j}] += LEAF[l + i{j}];", 12)


def _forest_class(forest: FlatForest, n_parts: int) -> str:
    """ScoreForest: the trees as flat perfect binary trees (codegen.c_backend.FlatForest), walked
    TREE_LANES trees at a time per row; the same layout and summation order as the C kernel."""
    n_trees, n_int = forest.feat.shape
    op = "<=" if forest.less_equal else "<"
    feat_t, leaf_t = _array_types(forest)
    fills = "\n".join(f"        ScorePart{k}.fill(FEAT, THR, THR32, NAN_LEFT, LEAF);" for k in range(n_parts))
    return render("codegen", "java/ScoreForest.java.in", package=JAVA_PACKAGE, n_trees=n_trees, depth=forest.depth,
                  op=op, n_int=n_int, n_leaf=n_int + 1, block_rows=BLOCK_ROWS, feat_t=feat_t, leaf_t=leaf_t,
                  fills=fills, tree_walk=_tree_lane_walk(TREE_LANES, op), tree_walk_1=_tree_lane_walk(1, op),
                  row_walk=_row_lane_walk(ROW_LANES, op), row_walk_1=_row_lane_walk(1, op))


def write_java_sources(decomposed: Decomposed, n_features: int, bundle_dir: Path, header: str) -> list[str]:
    """Write the Java sources into `bundle_dir/java/`; returns their paths relative to bundle_dir."""
    out_dir = Path(bundle_dir) / JAVA_DIR
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    sources: dict[str, str] = {}
    forest, rest = split_forest(decomposed, n_features)
    if forest is not None:
        # Trees as flat arrays (ScoreForest + ScorePart<k> data), other terms through m2cgen.
        n_trees = forest.feat.shape[0]
        parts = [range(a, min(a + TREES_PER_CLASS, n_trees)) for a in range(0, n_trees, TREES_PER_CLASS)]
        for k, trees in enumerate(parts):
            sources[f"ScorePart{k}.java"] = _forest_part(k, forest, trees)
        sources["ScoreForest.java"] = _forest_class(forest, len(parts))
        sources["ScoreRest.java"] = _MethodsInterpreter(class_name="ScoreRest").interpret_terms(
            [[sum_ast(rest) if rest else ast.NumVal(0.0)]])
        sources["Score.java"] = _score_class("new double[] { ScoreForest.sum(input) + ScoreRest.score(input) }",
                                             n_features, header, block_sums=True)
    else:
        chunks = _chunks(decomposed.terms, NODES_PER_CLASS)
        for k, chunk in enumerate(chunks):
            sources[f"ScorePart{k}.java"] = _MethodsInterpreter(class_name=f"ScorePart{k}").interpret_terms(
                _chunks(chunk, METHOD_AST_NODES))
        total = " + ".join(f"ScorePart{k}.score(input)" for k in range(len(chunks)))
        sources["Score.java"] = _score_class(f"new double[] {{ {total} }}", n_features, header, block_sums=False)
    sources["ScoreLink.java"] = _MethodsInterpreter(
        class_name="ScoreLink", function_name="apply", feature_array_name="margin").interpret(decomposed.link_ast)
    sources["ScoreHarness.java"] = source_text("codegen", "java/ScoreHarness.java")
    for name, text in sources.items():
        (out_dir / name).write_text(text)
    return [f"{JAVA_DIR}/{name}" for name in sorted(sources)]


def build_java(bundle_dir: Path) -> str:
    """Compile `bundle_dir/java/*.java` (javac --release 17) into `bundle_dir/score.jar`; returns its name."""
    bundle_dir = Path(bundle_dir)
    sources = sorted((bundle_dir / JAVA_DIR).glob("*.java"))
    if not sources:
        raise PhotoscoreError(f"{bundle_dir / JAVA_DIR}: no Java sources; export the Java code first")
    pkg = JAVA_PACKAGE.replace(".", "/")
    jar = java_jar({f"{pkg}/{path.name}": path.read_text() for path in sources}, name="score",
                   what=f"the Java export of {bundle_dir}", javac_flags=("-J-Xss16m",))
    shutil.copyfile(jar, bundle_dir / JAR)
    return JAR
