"""Spark function wrappers over the pure `udfs/` functions: the mapInPandas functions of the feature
backfill, the Arrow scoring UDF of the Python exports, and the JVM-native scoring UDF for the
`m2cgen-java` export.

Nothing here decides a feature or a score: hashing and extraction are `udfs.features`, scoring is
a `udfs.scorers` scorer over the float32 matrix `udfs.scoring.score_frame` builds, so Spark, Flink
and the local CLI give the same rows. These functions only move Arrow/pandas batches in and out
and load things once per worker.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pandas as pd

from udfs.decode import DecodeLimits, PhotoRejected
from udfs.errors import PhotoscoreError
from udfs.features import FEATURE_NAMES, FEATURE_VERSION, FeatureRow, content_sha256, extract_features
from udfs.photo_io import local_path, read_photo_bytes
from udfs.quarantine import now_ms

# --- feature backfill -----------------------------------------------------------------------------

HASH_SCHEMA = ("photo_id string, uri string, content_sha256 string, file_bytes long, "
               "stage string, reason_code string, detail string")

EXTRACT_SCHEMA = ("content_sha256 string, photo_id string, uri string, ok boolean, format string, "
                  "dhash long, " + ", ".join(f"{n} float" for n in FEATURE_NAMES)
                  + ", stage string, reason_code string, detail string, seen_at_ms long")


def hash_partitions(max_file_bytes: int) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """mapInPandas function: (photo_id, uri) -> HASH_SCHEMA rows; reads each photo once, decodes none.

    Read failures keep a null hash and the reason, so every input row comes out exactly once.
    """

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            out = {k: [] for k in ("photo_id", "uri", "content_sha256", "file_bytes", "stage",
                                   "reason_code", "detail")}
            for photo_id, uri in zip(batch["photo_id"], batch["uri"]):
                if photo_id is None or pd.isna(photo_id):
                    # Directory inputs: local files are known by their path, like `photoscore features`.
                    photo_id = local_path(uri) or uri
                digest = size = stage = reason = detail = None
                try:
                    data = read_photo_bytes(uri, max_file_bytes)
                    digest, size = content_sha256(data), len(data)
                except PhotoRejected as exc:
                    stage, reason, detail = exc.stage, exc.reason_code, exc.detail
                for key, value in zip(out, (photo_id, uri, digest, size, stage, reason, detail)):
                    out[key].append(value)
            yield pd.DataFrame(out).astype({"file_bytes": "Int64"})

    return run


def extract_partitions(limits: DecodeLimits, decodes=None) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """mapInPandas function: one row per distinct content (content_sha256, photo_id, uri) ->
    EXTRACT_SCHEMA rows (features when `ok`, the quarantine reason otherwise).

    Bytes are read here, on the executor, one photo at a time: a batch never holds more than one
    photo's bytes. `decodes` (a Spark accumulator) counts every decode attempted, so tests and logs
    can prove that work that should be skipped was skipped.
    """

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rows = []
            for digest, photo_id, uri in zip(batch["content_sha256"], batch["photo_id"], batch["uri"]):
                rows.append(_extract_one(digest, photo_id, uri, limits))
            if decodes is not None:
                decodes.add(len(rows))
            frame = pd.DataFrame(rows, columns=_EXTRACT_COLUMNS)
            yield frame.astype({"dhash": "Int64", "seen_at_ms": "int64", "ok": "bool",
                                **{n: "float32" for n in FEATURE_NAMES}})

    return run


_EXTRACT_COLUMNS = ["content_sha256", "photo_id", "uri", "ok", "format", "dhash", *FEATURE_NAMES,
                    "stage", "reason_code", "detail", "seen_at_ms"]
_NO_FEATURES = [None] * len(FEATURE_NAMES)


def _extract_one(digest: str, photo_id: str, uri: str, limits: DecodeLimits) -> list:
    try:
        data = read_photo_bytes(uri, limits.max_file_bytes)
    except PhotoRejected as exc:
        return [digest, photo_id, uri, False, None, None, *_NO_FEATURES, exc.stage, exc.reason_code,
                exc.detail, now_ms()]
    if content_sha256(data) != digest:
        # The file changed between the hash pass and now: its new content is not what the run
        # planned for; the next run picks the new content up.
        return [digest, photo_id, uri, False, None, None, *_NO_FEATURES, "read", "unreadable_uri",
                f"{uri}: content changed during the backfill", now_ms()]
    result = extract_features(data, photo_id, uri, limits)
    if isinstance(result, FeatureRow):
        return [digest, photo_id, uri, True, result.format, result.dhash, *result.values.tolist(),
                None, None, None, now_ms()]
    return [digest, photo_id, uri, False, None, None, *_NO_FEATURES, result.stage, result.reason_code,
            result.detail, result.seen_at_ms]


# --- scoring: pandas paths ------------------------------------------------------------------------

_SCORERS: dict[tuple[str, str], object] = {}


def bundle_on_worker(bundle_name: str, driver_path: str) -> Path:
    """The bundle directory on this worker: the archive Spark shipped with `addArchive` (unpacked
    under SparkFiles), else the driver's path (a shared filesystem, or local mode)."""
    try:
        from pyspark import SparkFiles

        shipped = Path(SparkFiles.get(bundle_name))
        if (shipped / "checksums.json").is_file():
            return shipped
    except Exception:  # noqa: BLE001 - SparkFiles is unavailable outside a task; fall back
        pass
    return Path(driver_path)


def cached_scorer(bundle_dir: Path, export_format: str):
    """Load one export once per Python worker process (workers are reused across tasks)."""
    from udfs.scorers import load_scorer

    key = (str(bundle_dir), export_format)
    if key not in _SCORERS:
        _SCORERS[key] = load_scorer(bundle_dir, export_format)
    return _SCORERS[key]


def score_arrays(bundle_name: str, driver_bundle: str, export_format: str
                 ) -> Callable[[Iterator["pa.Array"]], Iterator["pa.Array"]]:
    """Scalar-iterator Arrow UDF body: batches of one `array<float>` column (each row the model's
    features in schema order, no nulls) -> one float64 `pyarrow.Array` of scores per batch.

    Only the features cross into Python; identity columns stay in the JVM. One list column, not N
    float columns, because Spark's Arrow writer moved it 17% faster (measured, 20 features) and it
    reaches numpy as one zero-copy (n, N) float32 matrix: the matrix `score_frame` (and so
    `photoscore score`) gives the scorer. A row the scorer fails on (raises, or returns a
    non-finite value) yields null and its error goes to the executor log: the job's SQL
    quarantines it as `score_failed`, and the batch, task and job carry on.
    """

    def run(batches: Iterator["pa.Array"]) -> Iterator["pa.Array"]:
        import logging

        import numpy as np
        import pyarrow as pa

        from udfs.scoring import score_isolating_failures

        scorer = cached_scorer(bundle_on_worker(bundle_name, driver_bundle), export_format)
        log = logging.getLogger("photoscore.spark.score")
        for rows in batches:
            X = rows.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(rows), -1)
            scores, errors = score_isolating_failures(scorer, X)
            failed = np.array([e is not None for e in errors], dtype=bool)
            for error in sorted({e for e in errors if e is not None}):
                log.warning("%s scorer failed on a row: %s", export_format, error)
            yield pa.array(scores, type=pa.float64(), mask=failed)

    return run


# --- scoring: JVM-native UDF ----------------------------------------------------------------------

JAVA_PACKAGE = "photoscore.spark"
GENERATED_CLASS = "photoscore.generated.Score"
MAX_JAVA_UDF_ARGS = 22  # Spark's UDF0..UDF22 interfaces

_ADAPTER = """package {package};

import java.io.InputStream;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import org.apache.spark.sql.api.java.UDF{n};

/** Spark UDF of {n} doubles over the m2cgen-generated {generated} of one model version
 *  (bundle {tag}). Taking N doubles, not a Seq, avoids boxing through Scala collections; the
 *  generated jar is loaded by a private class loader, so two versions' identically named
 *  classes never meet in one JVM. */
public final class {cls} implements UDF{n}<{types}> {{
    private static final MethodHandle SCORE = load();

    private static MethodHandle load() {{
        try (InputStream in = {cls}.class.getResourceAsStream("{resource}")) {{
            if (in == null) throw new IllegalStateException("{resource} missing from the UDF jar");
            Path jar = Files.createTempFile("photoscore-{tag}-", ".jar");
            jar.toFile().deleteOnExit();
            Files.copy(in, jar, StandardCopyOption.REPLACE_EXISTING);
            URLClassLoader loader = new URLClassLoader(new URL[] {{ jar.toUri().toURL() }},
                ClassLoader.getPlatformClassLoader());
            Class<?> c = Class.forName("{generated}", true, loader);
            return MethodHandles.publicLookup().findStatic(c, "score",
                MethodType.methodType(double.class, double[].class));
        }} catch (Exception e) {{
            throw new IllegalStateException("cannot load the generated scorer of bundle {tag}", e);
        }}
    }}

    @Override
    public Double call({params}) throws Exception {{
        if ({null_check}) return null;
        try {{
            return (double) SCORE.invokeExact(new double[] {{ {args} }});
        }} catch (RuntimeException | Error e) {{
            throw e;
        }} catch (Throwable t) {{
            throw new Exception(t);
        }}
    }}
}}
"""


def pyspark_jars_dir() -> Path:
    """The Spark jars the adapter compiles against ($SPARK_HOME/jars wins, else the pyspark wheel's)."""
    home = os.environ.get("SPARK_HOME")
    if home and (Path(home) / "jars").is_dir():
        return Path(home) / "jars"
    import pyspark

    return Path(pyspark.__file__).resolve().parent / "jars"


def java_udf_class(bundle_dir: Path) -> str:
    """Class name of the adapter for this bundle: unique per bundle content (its checksum listing)."""
    digest = hashlib.sha256((Path(bundle_dir) / "checksums.json").read_bytes()).hexdigest()[:16]
    return f"{JAVA_PACKAGE}.ScoreUdf_{digest}"


def build_java_udf_jar(bundle_dir: Path | str, out_dir: Path | str, n_features: int) -> tuple[Path, str]:
    """Compile the UDF adapter for the bundle's `score.jar` into `out_dir`; returns (jar, class name).

    The jar holds the adapter and, as a resource, the bundle's generated `score.jar`: one file to
    pass with `--jars` (or `spark.jars`, or `ADD JAR`). Built once per bundle, atomically.
    """
    from udfs.scorers.m2cgen_java import java_tool

    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    score_jar = bundle_dir / "score.jar"
    if not score_jar.is_file():
        raise PhotoscoreError(f"{score_jar} is missing: the bundle has no m2cgen-java export")
    if not 0 < n_features <= MAX_JAVA_UDF_ARGS:
        raise PhotoscoreError(
            f"the m2cgen-java Spark UDF takes at most {MAX_JAVA_UDF_ARGS} features (Spark's UDF0..UDF22); "
            f"this model has {n_features}: use --format native, onnx or m2cgen-c")
    qualified = java_udf_class(bundle_dir)
    cls = qualified.rsplit(".", 1)[1]
    tag = cls.split("_", 1)[1]
    jar = out_dir / f"{cls}.jar"
    if jar.is_file():
        return jar, qualified
    out_dir.mkdir(parents=True, exist_ok=True)
    resource = f"score-{tag}.jar"
    source = _ADAPTER.format(
        package=JAVA_PACKAGE, cls=cls, n=n_features, tag=tag, resource=resource, generated=GENERATED_CLASS,
        types=", ".join(["Double"] * (n_features + 1)),
        params=", ".join(f"Double f{j}" for j in range(n_features)),
        null_check=" || ".join(f"f{j} == null" for j in range(n_features)),
        args=", ".join(f"f{j}" for j in range(n_features)))
    with tempfile.TemporaryDirectory(prefix="photoscore-udf-", dir=out_dir) as tmp:
        src_dir, classes = Path(tmp) / "src", Path(tmp) / "classes"
        (src_dir / JAVA_PACKAGE.replace(".", "/")).mkdir(parents=True)
        (classes / JAVA_PACKAGE.replace(".", "/")).mkdir(parents=True)
        java_file = src_dir / JAVA_PACKAGE.replace(".", "/") / f"{cls}.java"
        java_file.write_text(source)
        cmd = [java_tool("javac"), "--release", "17", "-cp", f"{pyspark_jars_dir()}/*", "-d", str(classes),
               str(java_file)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise PhotoscoreError(f"compiling the Spark UDF adapter for {bundle_dir} failed:\n{proc.stderr[-3000:]}")
        staged = Path(tmp) / "udf.jar"
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(classes.rglob("*.class")):
                zf.write(path, path.relative_to(classes).as_posix())
            zf.write(score_jar, f"{JAVA_PACKAGE.replace('.', '/')}/{resource}")
        os.replace(staged, jar)
    return jar, qualified


def register_java_scorer(spark, bundle_dir: Path | str, jar_dir: Path | str, feature_names: Sequence[str]) -> str:
    """Build (once) and register the bundle's JVM scoring UDF; returns the SQL function name.

    `ADD JAR` puts the jar on the driver's session class loader and ships it to every executor, so
    the same call works on `local[*]` and on a cluster; a jar already given with `--jars` is
    simply found on the class path.
    """
    from pyspark.sql.types import DoubleType

    jar, qualified = build_java_udf_jar(bundle_dir, jar_dir, len(feature_names))
    spark.sql(f"ADD JAR '{jar}'")
    name = "photoscore_" + qualified.rsplit("_", 1)[1]
    spark.udf.registerJavaFunction(name, qualified, DoubleType())
    return name


def python_udfs_in_plan(df) -> list[str]:
    """Python-executing operators in a DataFrame's physical plan (empty: rows never leave the JVM)."""
    plan = df._jdf.queryExecution().executedPlan().toString()
    markers = ("ArrowEvalPython", "BatchEvalPython", "MapInPandas", "MapInArrow", "FlatMapGroupsInPandas",
               "PythonUDF", "PythonMapInArrow")
    return [m for m in markers if m in plan]


__all__ = [
    "HASH_SCHEMA", "EXTRACT_SCHEMA", "FEATURE_VERSION", "hash_partitions",
    "extract_partitions", "score_arrays", "bundle_on_worker", "cached_scorer", "build_java_udf_jar",
    "register_java_scorer", "java_udf_class", "python_udfs_in_plan", "pyspark_jars_dir",
]
