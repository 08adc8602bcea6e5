"""Java export: m2cgen Java classes under package `photoscore.generated`, compiled into `score.jar`.

Entry points (no dependency beyond the JDK, so Spark can register them as a UDF later):
    photoscore.generated.Score.score(double[] input) -> positive-class probability
    photoscore.generated.Score.score(double f0, ..., double fN)   the same, one argument per feature
    photoscore.generated.ScoreHarness <in.bin> <n> <d> <float32|float64> <out.bin>
        batch scorer for Python-side parity checks: little-endian row-major matrix in, float64 out.

m2cgen 0.10 writes one class per model; for 300 trees x depth 8 javac fails with `too many constants`
(a class's constant pool holds 65535 entries). We split the summed terms (trees) over
`ScorePart<k>` classes of bounded size, each written by m2cgen, add them in `Score`, and apply the
link function (`ScoreLink`, also written by m2cgen).

HotSpot never JIT-compiles a method over 8000 bytes of bytecode (`-XX:+DontCompileHugeMethods`, the
default on every JVM): such a method runs in the bytecode interpreter, ~10x slower. m2cgen writes a
class's whole sum as one method (its own subroutine splitting only cuts chains of additions, never a
tree), so a ScorePart of 12 depth-8 trees was one 44 KB method and 300 x 8 ran at a quarter of
mlflow's spark_udf in Spark. Each class's terms are therefore grouped into methods of at most
METHOD_AST_NODES nodes (about 4 bytes of bytecode a node), and a tree bigger than that is cut into
subtree methods, so every generated method stays compilable on any JVM without flags.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from m2cgen import ast
from m2cgen.interpreters import JavaInterpreter

from codegen.assemble import Decomposed, count_nodes, sum_ast
from udfs.errors import PhotoscoreError
from udfs.scorers.m2cgen_java import HARNESS_CLASS, java_tool

PACKAGE = "photoscore.generated"
JAVA_DIR = "java"
JAR = "score.jar"
ENTRY_CLASS = f"{PACKAGE}.Score"
# AST nodes per class: each tree node costs about one double constant (two pool entries).
NODES_PER_CLASS = 12000
# AST nodes per method: about 4 bytecode bytes a node (measured: 12 depth-8 XGBoost trees, 10 897
# nodes, compiled to 44 135 bytes), so a method stays well under HotSpot's 8000-byte JIT limit
# even when a split subtree's method holds two children just under the limit.
METHOD_AST_NODES = 900

_HARNESS = """package photoscore.generated;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Paths;

/** Batch scorer for parity checks: little-endian row-major n x d matrix in, n float64 out. */
public final class ScoreHarness {
    private ScoreHarness() {}

    public static void main(String[] args) throws IOException {
        if (args.length != 5) {
            System.err.println("usage: ScoreHarness <in.bin> <n> <d> <float32|float64> <out.bin>");
            System.exit(2);
        }
        int n = Integer.parseInt(args[1]);
        int d = Integer.parseInt(args[2]);
        boolean f32 = args[3].equals("float32");
        if (d != Score.N_FEATURES) {
            System.err.println("matrix has " + d + " columns, the model expects " + Score.N_FEATURES);
            System.exit(2);
        }
        ByteBuffer in = ByteBuffer.wrap(Files.readAllBytes(Paths.get(args[0]))).order(ByteOrder.LITTLE_ENDIAN);
        ByteBuffer out = ByteBuffer.allocate(8 * n).order(ByteOrder.LITTLE_ENDIAN);
        double[] row = new double[d];
        for (int r = 0; r < n; r++) {
            for (int j = 0; j < d; j++) {
                row[j] = f32 ? (double) in.getFloat() : in.getDouble();
            }
            out.putDouble(Score.score(row));
        }
        Files.write(Paths.get(args[4]), out.array());
    }
}
"""


class _MethodsInterpreter(JavaInterpreter):
    """m2cgen's Java interpreter writing one class as several bounded methods.

    `interpret_terms(groups)` writes `term<k>(input)` for each group of summed terms and
    `score(input)` adding them in order; any tree (IfExpr) over METHOD_AST_NODES that is not a
    method's own root becomes a method of its own (`subroutine<k>`), recursively.
    """

    def __init__(self, **kwargs):
        super().__init__(package_name=PACKAGE, **kwargs)
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


def _score_class(n_parts: int, n_features: int, header: str) -> str:
    total = " + ".join(f"ScorePart{k}.score(input)" for k in range(n_parts))
    params = ", ".join(f"double f{j}" for j in range(n_features))
    args = ", ".join(f"f{j}" for j in range(n_features))
    return f"""package {PACKAGE};

/** {header}
 *  Positive-class probability of one row; input in feature_schema.json order. */
public final class Score {{
    public static final int N_FEATURES = {n_features};

    private Score() {{}}

    public static double score(double[] input) {{
        double[] margin = {{ {total} }};
        return ScoreLink.apply(margin);
    }}

    public static double score({params}) {{
        return score(new double[] {{ {args} }});
    }}
}}
"""


def write_java_sources(decomposed: Decomposed, n_features: int, bundle_dir: Path, header: str) -> list[str]:
    """Write the Java sources into `bundle_dir/java/`; returns their paths relative to bundle_dir."""
    out_dir = Path(bundle_dir) / JAVA_DIR
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    sources: dict[str, str] = {}
    chunks = _chunks(decomposed.terms, NODES_PER_CLASS)
    for k, chunk in enumerate(chunks):
        sources[f"ScorePart{k}.java"] = _MethodsInterpreter(class_name=f"ScorePart{k}").interpret_terms(
            _chunks(chunk, METHOD_AST_NODES))
    sources["ScoreLink.java"] = _MethodsInterpreter(
        class_name="ScoreLink", function_name="apply", feature_array_name="margin").interpret(decomposed.link_ast)
    sources["Score.java"] = _score_class(len(chunks), n_features, header)
    sources["ScoreHarness.java"] = _HARNESS
    for name, text in sources.items():
        (out_dir / name).write_text(text)
    return [f"{JAVA_DIR}/{name}" for name in sorted(sources)]


def build_java(bundle_dir: Path) -> str:
    """Compile `bundle_dir/java/*.java` with `javac --release 17` into `bundle_dir/score.jar`."""
    bundle_dir = Path(bundle_dir)
    sources = sorted((bundle_dir / JAVA_DIR).glob("*.java"))
    if not sources:
        raise PhotoscoreError(f"{bundle_dir / JAVA_DIR}: no Java sources; run generate_exports first")
    with tempfile.TemporaryDirectory() as classes:
        for cmd, what in (
            ([java_tool("javac"), "--release", "17", "-J-Xss16m", "-d", classes, *map(str, sources)], "javac"),
            ([java_tool("jar"), "cf", str(bundle_dir / JAR), "-C", classes, "."], "jar"),
        ):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise PhotoscoreError(f"{what} failed for {bundle_dir}:\n{proc.stderr[-4000:]}")
    return JAR
