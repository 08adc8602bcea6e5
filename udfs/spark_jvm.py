"""JVM-native Spark scoring: the generated code run inside the executors' JVM, rows never in Python.

`score_rows_jvm` maps each partition of Spark's internal rows through
`photoscore.spark.BlockScorer` (Java, no Row encoder: no per-column conversion): it gathers `spark.jvm_block_rows` rows' float32 features into one array,
scores them with one kernel call, and appends a `score` column to the rows' other columns. The
kernel is per format and per bundle, one class with `static void scoreBlock(float[] x, int n,
double[] out)` (row-major n x N_FEATURES, the C export's ABI):

- `m2cgen-java`: `photoscore.generated.Score.scoreBlock` of the bundle's `score.jar`, loaded by a
  private class loader so two versions' identically named classes never meet in one JVM;
- `m2cgen-c`: the bundle's generated C (`score.c`, or CatBoost's `score.cpp`) compiled with a small
  JNI shim into a shared library that the kernel class loads: the very kernel `photoscore score`
  runs in-process, without the Arrow round trip to a Python worker that otherwise costs as much as
  the scoring itself (measured: bench/spark_scoring.py's arrow-identity row).

Blocks, not a row-at-a-time UDF: a UDF of N doubles boxes every value and walks all trees per row
with the whole forest out of cache; a block walks each tree over 64 rows while it sits in L1.

Jars are built once (named by content) under `jar_dir` and added with `ADD JAR`, which ships them to
every executor, so the same call works on `local[*]` and on a cluster. The shared library inside
the C kernel's jar is native code for the driver's platform, like the bundle's `libscore.so`.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

from udfs.errors import PhotoscoreError

JVM_FORMATS = ("m2cgen-java", "m2cgen-c")
PACKAGE = "photoscore.spark"
SCORER_CLASS = f"{PACKAGE}.BlockScorer"

_BLOCK_SCORER = """package photoscore.spark;

import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;
import org.apache.spark.api.java.function.FlatMapFunction;
import org.apache.spark.rdd.RDD;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Scores a Dataset's rows in blocks with a kernel class's static scoreBlock(float[], int, double[]).
 *  Output: the input's non-feature columns, then `score` (null where a feature is null or the kernel
 *  failed on that row alone). Works on Spark's internal rows: no conversion of the columns to Java
 *  objects and back (through a Row encoder that conversion cost as much as the C scoring). */
public final class BlockScorer implements FlatMapFunction<Iterator<InternalRow>, InternalRow> {
    private static final long serialVersionUID = 1L;
    private static final Logger LOG = LoggerFactory.getLogger(BlockScorer.class);
    private final String kernelClass;
    private final int[] features;
    private final int[] kept;
    private final DataType[] keptTypes;
    private final int blockRows;

    private BlockScorer(String kernelClass, int[] features, int[] kept, DataType[] keptTypes, int blockRows) {
        this.kernelClass = kernelClass;
        this.features = features;
        this.kept = kept;
        this.keptTypes = keptTypes;
        this.blockRows = blockRows;
    }

    /** `df` with float `featureNames` (in the model's order) -> its other columns plus `score`. */
    public static Dataset<Row> score(Dataset<Row> df, List<String> featureNames, String kernelClass, int blockRows) {
        org.apache.spark.sql.classic.Dataset<Row> classic = (org.apache.spark.sql.classic.Dataset<Row>) df;
        StructType in = df.schema();
        int[] features = new int[featureNames.size()];
        for (int j = 0; j < features.length; j++) {
            features[j] = in.fieldIndex(featureNames.get(j));
            if (!in.fields()[features[j]].dataType().equals(DataTypes.FloatType)) {
                throw new IllegalArgumentException("feature column " + featureNames.get(j) + " must be float");
            }
        }
        List<Integer> keptList = new ArrayList<>();
        List<StructField> outFields = new ArrayList<>();
        for (int i = 0; i < in.fields().length; i++) {
            if (!featureNames.contains(in.fields()[i].name())) {
                keptList.add(i);
                outFields.add(in.fields()[i]);
            }
        }
        outFields.add(DataTypes.createStructField("score", DataTypes.DoubleType, true));
        int[] kept = keptList.stream().mapToInt(Integer::intValue).toArray();
        DataType[] keptTypes = new DataType[kept.length];
        for (int k = 0; k < kept.length; k++) keptTypes[k] = in.fields()[kept[k]].dataType();
        RDD<InternalRow> scored = classic.queryExecution().toRdd().toJavaRDD()
            .mapPartitions(new BlockScorer(kernelClass, features, kept, keptTypes, blockRows)).rdd();
        return classic.sparkSession().internalCreateDataFrame(scored, DataTypes.createStructType(outFields), false);
    }

    @Override
    public Iterator<InternalRow> call(Iterator<InternalRow> input) throws Exception {
        ClassLoader loader = Thread.currentThread().getContextClassLoader();
        MethodHandle kernel = MethodHandles.publicLookup().findStatic(
            Class.forName(kernelClass, true, loader), "scoreBlock",
            MethodType.methodType(void.class, float[].class, int.class, double[].class));
        return new Blocks(input, kernel);
    }

    private final class Blocks implements Iterator<InternalRow> {
        private final Iterator<InternalRow> input;
        private final MethodHandle kernel;
        private final int d = features.length;
        private final Object[][] keptValues = new Object[blockRows][];
        private final boolean[] missing = new boolean[blockRows];
        private final float[] x = new float[blockRows * d];
        private final double[] out = new double[blockRows];
        private final float[] one = new float[d];
        private final double[] oneOut = new double[1];
        private int size;
        private int next;

        Blocks(Iterator<InternalRow> input, MethodHandle kernel) {
            this.input = input;
            this.kernel = kernel;
        }

        @Override
        public boolean hasNext() {
            return next < size || fill();
        }

        @Override
        public InternalRow next() {
            if (!hasNext()) throw new NoSuchElementException();
            Object[] values = keptValues[next];
            values[kept.length] = missing[next] ? null : out[next];
            keptValues[next++] = null;
            return new GenericInternalRow(values);
        }

        private boolean fill() {
            size = 0;
            next = 0;
            while (size < blockRows && input.hasNext()) {
                // The scan reuses its row object: copy what outlives this call (the kept columns).
                InternalRow row = input.next();
                Object[] values = new Object[kept.length + 1];
                for (int k = 0; k < kept.length; k++) {
                    values[k] = row.isNullAt(kept[k]) ? null : InternalRow.copyValue(row.get(kept[k], keptTypes[k]));
                }
                boolean isNull = false;
                for (int j = 0; j < d; j++) {
                    int c = features[j];
                    if (row.isNullAt(c)) {
                        isNull = true;
                        x[size * d + j] = 0f;
                    } else {
                        x[size * d + j] = row.getFloat(c);
                    }
                }
                keptValues[size] = values;
                missing[size++] = isNull;
            }
            if (size == 0) return false;
            try {
                kernel.invokeExact(x, size, out);
            } catch (Throwable blockError) {
                // One bad row must not fail the task: score the block's rows one by one, and leave a
                // null score (quarantined as score_failed by the job) where the kernel still fails.
                for (int r = 0; r < size; r++) {
                    System.arraycopy(x, r * d, one, 0, d);
                    try {
                        kernel.invokeExact(one, 1, oneOut);
                        out[r] = oneOut[0];
                    } catch (Throwable rowError) {
                        LOG.warn("{} failed on a row: {}", kernelClass, rowError.toString());
                        missing[r] = true;
                    }
                }
            }
            return true;
        }
    }
}
"""

_JAVA_KERNEL = """package photoscore.spark;

import java.io.InputStream;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/** m2cgen-java kernel of bundle {tag}: its generated {generated}.scoreBlock, loaded by a private
 *  class loader from the score.jar carried in this jar. */
public final class {cls} {{
    private static final MethodHandle SCORE_BLOCK = load();

    private {cls}() {{}}

    private static MethodHandle load() {{
        try (InputStream in = {cls}.class.getResourceAsStream("{resource}")) {{
            if (in == null) throw new IllegalStateException("{resource} missing from the kernel jar");
            Path jar = Files.createTempFile("photoscore-{tag}-", ".jar");
            jar.toFile().deleteOnExit();
            Files.copy(in, jar, StandardCopyOption.REPLACE_EXISTING);
            URLClassLoader loader = new URLClassLoader(new URL[] {{ jar.toUri().toURL() }},
                ClassLoader.getPlatformClassLoader());
            Class<?> c = Class.forName("{generated}", true, loader);
            return MethodHandles.publicLookup().findStatic(c, "scoreBlock",
                MethodType.methodType(void.class, float[].class, int.class, double[].class));
        }} catch (Exception e) {{
            throw new IllegalStateException("cannot load the generated scorer of bundle {tag}", e);
        }}
    }}

    public static void scoreBlock(float[] x, int n, double[] out) throws Throwable {{
        SCORE_BLOCK.invokeExact(x, n, out);
    }}
}}
"""

_C_KERNEL = """package photoscore.spark;

import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;

/** m2cgen-c kernel of bundle {tag}: the generated C's score_batch through JNI ({library} in this jar). */
public final class {cls} {{
    static {{
        try (InputStream in = {cls}.class.getResourceAsStream("{library}")) {{
            if (in == null) throw new IllegalStateException("{library} missing from the kernel jar");
            Path lib = Files.createTempFile("photoscore-{tag}-", ".so");
            lib.toFile().deleteOnExit();
            Files.copy(in, lib, StandardCopyOption.REPLACE_EXISTING);
            System.load(lib.toString());
        }} catch (java.io.IOException e) {{
            throw new IllegalStateException("cannot unpack the C scorer of bundle {tag}", e);
        }}
    }}

    private {cls}() {{}}

    private static native void scoreBatch(float[] x, int n, int d, double[] out);

    public static void scoreBlock(float[] x, int n, double[] out) {{
        if (x.length < n * {n_features} || out.length < n) throw new IllegalArgumentException("block arrays too short");
        scoreBatch(x, n, {n_features}, out);
    }}
}}
"""

# JNI entry point over the C ABI `score_batch`; C or C++ (CatBoost's export), one source for both.
_JNI_SHIM = """#include <jni.h>
#ifdef __cplusplus
extern "C" {{
#define PS_ENV(f) env->f(
#else
#define PS_ENV(f) (*env)->f(env,
#endif
void score_batch(const float *x, long n, long d, double *out);

JNIEXPORT void JNICALL {symbol}(JNIEnv *env, jclass cls, jfloatArray x, jint n, jint d, jdoubleArray out) {{
    (void)cls;
    /* Critical sections pin the arrays without copying; score_batch neither blocks nor calls back. */
    float *xp = (float *)PS_ENV(GetPrimitiveArrayCritical) x, NULL);
    double *op = (double *)PS_ENV(GetPrimitiveArrayCritical) out, NULL);
    if (xp != NULL && op != NULL) score_batch(xp, (long)n, (long)d, op);
    if (op != NULL) PS_ENV(ReleasePrimitiveArrayCritical) out, op, 0);
    if (xp != NULL) PS_ENV(ReleasePrimitiveArrayCritical) x, xp, JNI_ABORT);
}}
#ifdef __cplusplus
}}
#endif
"""


def pyspark_jars_dir() -> Path:
    """The Spark jars BlockScorer compiles against ($SPARK_HOME/jars wins, else the pyspark wheel's)."""
    home = os.environ.get("SPARK_HOME")
    if home and (Path(home) / "jars").is_dir():
        return Path(home) / "jars"
    import pyspark

    return Path(pyspark.__file__).resolve().parent / "jars"


def _java_home() -> Path:
    """The JDK whose `javac` builds the jars (its include/ has jni.h)."""
    from udfs.scorers.m2cgen_java import java_tool

    return Path(java_tool("javac")).resolve().parent.parent


def _compile_jar(out: Path, sources: dict[str, str], classpath: str | None,
                 resources: dict[str, Path], what: str) -> None:
    """javac `sources` ({class simple name: text}, package photoscore.spark) into jar `out`, atomically."""
    from udfs.scorers.m2cgen_java import java_tool

    pkg = PACKAGE.replace(".", "/")
    with tempfile.TemporaryDirectory(prefix="photoscore-jvm-", dir=out.parent) as tmp:
        src_dir, classes = Path(tmp) / "src" / pkg, Path(tmp) / "classes"
        src_dir.mkdir(parents=True)
        classes.mkdir()
        files = []
        for name, text in sources.items():
            files.append(src_dir / f"{name}.java")
            files[-1].write_text(text)
        cmd = [java_tool("javac"), "--release", "17", "-d", str(classes),
               *(["-cp", classpath] if classpath else []), *map(str, files)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise PhotoscoreError(f"compiling {what} failed:\n{proc.stderr[-3000:]}")
        staged = Path(tmp) / "out.jar"
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(classes.rglob("*.class")):
                zf.write(path, path.relative_to(classes).as_posix())
            for name, path in resources.items():
                zf.write(path, f"{pkg}/{name}")
        os.replace(staged, out)


def build_block_scorer_jar(jar_dir: Path | str) -> Path:
    """The BlockScorer jar (compiled against the Spark jars once per source version)."""
    jar_dir = Path(jar_dir)
    jar_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(_BLOCK_SCORER.encode()).hexdigest()[:12]
    jar = jar_dir / f"photoscore-block-scorer-{digest}.jar"
    if not jar.is_file():
        _compile_jar(jar, {"BlockScorer": _BLOCK_SCORER}, f"{pyspark_jars_dir()}/*", {}, "the Spark block scorer")
    return jar


def _bundle_tag(bundle_dir: Path) -> str:
    """Unique per bundle content (its checksum listing): names the kernel class and its jar."""
    return hashlib.sha256((bundle_dir / "checksums.json").read_bytes()).hexdigest()[:16]


def _build_c_library(bundle_dir: Path, symbol: str, out: Path) -> None:
    """Compile the bundle's generated C (or C++) with the JNI shim into the shared library `out`."""
    from codegen.c_backend import c_toolchain

    source, compile_prefix = c_toolchain(bundle_dir)
    include = _java_home() / "include"
    if not (include / "jni.h").is_file():
        raise PhotoscoreError(f"{include}/jni.h not found: m2cgen-c on Spark needs a full JDK (set JAVA_HOME)")
    with tempfile.TemporaryDirectory(prefix="photoscore-jni-", dir=out.parent) as tmp:
        shim = Path(tmp) / f"jni{source.suffix}"  # the shim is compiled in the generated code's language
        shim.write_text(_JNI_SHIM.format(symbol=symbol))
        staged = Path(tmp) / out.name
        cmd = [*compile_prefix, "-shared", "-fPIC", f"-I{include}", f"-I{include / 'linux'}",
               "-o", str(staged), str(shim), str(source), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise PhotoscoreError(f"building the JNI scorer for {bundle_dir} failed:\n{proc.stderr[-3000:]}")
        os.replace(staged, out)


def build_kernel_jar(bundle_dir: Path | str, export_format: str, jar_dir: Path | str,
                     n_features: int) -> tuple[Path, str]:
    """Build (once) the kernel jar of `export_format` for the bundle; returns (jar, kernel class)."""
    from codegen.java_backend import ENTRY_CLASS

    bundle_dir, jar_dir = Path(bundle_dir), Path(jar_dir)
    if export_format not in JVM_FORMATS:
        raise PhotoscoreError(f"{export_format!r} has no JVM kernel; JVM formats: {', '.join(JVM_FORMATS)}")
    jar_dir.mkdir(parents=True, exist_ok=True)
    tag = _bundle_tag(bundle_dir)
    if export_format == "m2cgen-java":
        cls = f"JavaKernel_{tag}"
        jar = jar_dir / f"{cls}.jar"
        if not jar.is_file():
            score_jar = bundle_dir / "score.jar"
            if not score_jar.is_file():
                raise PhotoscoreError(f"{score_jar} is missing: the bundle has no m2cgen-java export")
            resource = f"score-{tag}.jar"
            source = _JAVA_KERNEL.format(cls=cls, tag=tag, resource=resource, generated=ENTRY_CLASS)
            _compile_jar(jar, {cls: source}, None, {resource: score_jar}, f"the m2cgen-java kernel of {bundle_dir}")
    else:
        cls = f"CKernel_{tag}"
        jar = jar_dir / f"{cls}.jar"
        if not jar.is_file():
            library = f"libscore-jni-{tag}.so"
            # JNI mangles `_` in a class name as `_1`.
            symbol = f"Java_{PACKAGE.replace('.', '_')}_{cls.replace('_', '_1')}_scoreBatch"
            with tempfile.TemporaryDirectory(prefix="photoscore-jni-", dir=jar_dir) as tmp:
                lib = Path(tmp) / library
                _build_c_library(bundle_dir, symbol, lib)
                source = _C_KERNEL.format(cls=cls, tag=tag, library=library, n_features=n_features)
                _compile_jar(jar, {cls: source}, None, {library: lib}, f"the m2cgen-c kernel of {bundle_dir}")
    return jar, f"{PACKAGE}.{cls}"


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


__all__ = ["JVM_FORMATS", "build_block_scorer_jar", "build_kernel_jar", "pyspark_jars_dir", "score_rows_jvm"]
