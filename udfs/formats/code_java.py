"""The `code-java` format: the bundle's generated Java compiled into `score.jar`.

In Python, each `score` call starts a JVM (`java -cp score.jar photoscore.generated.ScoreHarness
...`): right for parity checks, not for serving. Spark calls `photoscore.generated.Score.scoreBlock`
in the executors' JVM through the kernel jar `jvm_kernel` builds.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from udfs.bundle import JAR, JAVA_DIR, JAVA_PACKAGE
from udfs.errors import PhotoscoreError
from udfs.formats import JVM_PACKAGE, ExportFormat, as_matrix, bundle_file, bundle_tag, export_cell, feature_count
from udfs.toolchain import java_jar, java_tool, render

ID = "code-java"
ENTRY_CLASS = f"{JAVA_PACKAGE}.Score"
HARNESS_CLASS = f"{JAVA_PACKAGE}.ScoreHarness"


class CodeJavaScorer:
    """Runs the generated Java through a `java` subprocess per batch."""

    format = ID

    def __init__(self, bundle_dir: Path):
        self.jar = bundle_file(bundle_dir, JAR, ID)
        self.n_features = feature_count(bundle_dir)
        self.java = java_tool("java")

    def score(self, features: np.ndarray) -> np.ndarray:
        """float32 (n, d) -> float64 (n,) positive-class probability."""
        x = as_matrix(features, self.n_features, ID)
        with tempfile.TemporaryDirectory(prefix="photoscore-java-") as tmp:
            src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
            x.astype("<f4").tofile(src)
            cmd = [self.java, "-cp", str(self.jar), HARNESS_CLASS, str(src), str(len(x)), str(x.shape[1]),
                   "float32", str(dst)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise PhotoscoreError(f"{ID}: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
            out = np.fromfile(dst, dtype="<f8").astype(np.float64)
        if out.shape != (len(x),):
            raise PhotoscoreError(f"{ID}: harness returned {out.shape[0]} scores for {len(x)} rows")
        return out


def export(bundle_dir: Path) -> dict:
    """Write `java/*.java` and build `score.jar` (codegen)."""

    def make() -> list[str]:
        from codegen import export_java

        return export_java(bundle_dir)

    return export_cell(make)


def jvm_kernel(bundle_dir: Path, jar_dir: Path, n_features: int) -> tuple[Path, str]:
    """A jar whose class `scoreBlock(float[] x, int n, double[] out)` calls the bundle's generated
    `Score.scoreBlock`, loaded by a private class loader from the score.jar carried inside, so two
    versions' identically named generated classes never meet; returns (jar, class name)."""
    tag = bundle_tag(bundle_dir)
    cls = f"JavaKernel_{tag}"
    score_jar = Path(bundle_dir) / JAR
    if not score_jar.is_file():
        raise PhotoscoreError(f"{score_jar} is missing: the bundle has no {ID} export")
    resource = f"score-{tag}.jar"
    pkg = JVM_PACKAGE.replace(".", "/")
    java = render("udfs", "jvm/JavaKernel.java.in", cls=cls, tag=tag, resource=resource, generated=ENTRY_CLASS)
    jar = java_jar({f"{pkg}/{cls}.java": java}, name=cls, cache_dir=jar_dir, what=f"the {ID} kernel of {bundle_dir}",
                   resources={f"{pkg}/{resource}": score_jar})
    return jar, f"{JVM_PACKAGE}.{cls}"


FORMAT = ExportFormat(
    id=ID,
    description="generated Java (m2cgen's AST, flat tree arrays) in score.jar; a JVM per call in Python",
    files=(f"{JAVA_DIR}/*.java", JAR),
    precision="float64",
    load=lambda bundle_dir, threads: CodeJavaScorer(bundle_dir),
    export=export,
    jvm_kernel=jvm_kernel,
    aliases=("m2cgen-java",),
    cost="per_call",
    rank=30,
)
