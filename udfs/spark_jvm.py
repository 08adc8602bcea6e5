"""JVM-native Spark scoring: the generated code run inside the executors' JVM, rows never in Python.

`score_rows_jvm` maps each partition of Spark's internal rows through
`photoscore.spark.BlockScorer` (Java, no Row encoder: no per-column conversion): it gathers `spark.jvm_block_rows` rows' float32 features into one array,
scores them with one kernel call, and appends a `score` column to the rows' other columns. The
kernel is per format and per bundle, one class with `static void scoreBlock(float[] x, int n,
double[] out)` (row-major n x N_FEATURES, the C export's ABI), built by the format's `jvm_kernel`
(udfs/formats/): the generated Java's `Score.scoreBlock` behind a private class loader, or the
generated C through JNI - the very kernel `photoscore score` runs in-process, without the Arrow
round trip to a Python worker that otherwise costs as much as the scoring itself (measured:
bench/spark_scoring.py's arrow-identity row). BlockScorer's source is udfs/jvm/BlockScorer.java.

Blocks, not a row-at-a-time UDF: a UDF of N doubles boxes every value and walks all trees per row
with the whole forest out of cache; a block walks each tree over 64 rows while it sits in L1.

Jars are built once (named by content, udfs/toolchain.py) under `jar_dir` and added with `ADD JAR`, which ships them to
every executor, so the same call works on `local[*]` and on a cluster. The shared library inside
the C kernel's jar is native code for the driver's platform, like the bundle's `libscore.so`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from udfs.errors import PhotoscoreError
from udfs.formats import JVM_PACKAGE, all_formats, gated
from udfs.toolchain import java_jar, source_text

def pyspark_jars_dir() -> Path:
    """The Spark jars BlockScorer compiles against ($SPARK_HOME/jars wins, else the pyspark wheel's)."""
    home = os.environ.get("SPARK_HOME")
    if home and (Path(home) / "jars").is_dir():
        return Path(home) / "jars"
    import pyspark

    return Path(pyspark.__file__).resolve().parent / "jars"


def build_block_scorer_jar(jar_dir: Path | str) -> Path:
    """The BlockScorer jar (udfs/jvm/BlockScorer.java compiled against the Spark jars; cached)."""
    source = source_text("udfs", "jvm/BlockScorer.java")
    return java_jar({f"{JVM_PACKAGE.replace('.', '/')}/BlockScorer.java": source}, name="photoscore-block-scorer",
                    cache_dir=jar_dir, classpath=f"{pyspark_jars_dir()}/*", what="the Spark block scorer")


def jvm_formats() -> list[str]:
    """The export formats that can score inside the executors' JVM."""
    return [f.id for f in all_formats() if f.jvm_kernel is not None]


def build_kernel_jar(bundle_dir: Path | str, export_format: str, jar_dir: Path | str,
                     n_features: int) -> tuple[Path, str]:
    """The kernel jar of `export_format` for the bundle (built once; refused unless the bundle's
    parity gate passed the export); returns (jar, kernel class)."""
    fmt = gated(bundle_dir, export_format)
    if fmt.jvm_kernel is None:
        raise PhotoscoreError(f"{fmt.id!r} has no JVM kernel; JVM formats: {', '.join(jvm_formats())}")
    return fmt.jvm_kernel(Path(bundle_dir), Path(jar_dir), n_features)


def score_rows_jvm(spark, rows, bundle_dir: Path | str, feature_names: Sequence[str], export_format: str,
                   jar_dir: Path | str, block_rows: int = 1024):
    """`rows` (float feature columns `feature_names` plus any others) -> its other columns plus a
    double `score`, computed in the executors' JVM by the bundle's `export_format` kernel.

    Null where a feature is null or the kernel failed on that row (its error in the executor log).
    """
    from pyspark.sql import DataFrame

    kernel_jar, kernel_class = build_kernel_jar(bundle_dir, export_format, jar_dir, len(feature_names))
    for jar in (build_block_scorer_jar(jar_dir), kernel_jar):
        spark.sql(f"ADD JAR '{jar}'")
    # ADD JAR put the jars on this thread's context class loader, which py4j resolves classes with.
    scored = spark._jvm.photoscore.spark.BlockScorer.score(rows._jdf, list(feature_names), kernel_class,
                                                           int(block_rows))
    return DataFrame(scored, spark)


__all__ = ["build_block_scorer_jar", "build_kernel_jar", "jvm_formats", "pyspark_jars_dir", "score_rows_jvm"]
