"""Spark function wrappers over the pure `udfs/` functions: the mapInPandas functions of the feature
backfill and the Arrow scoring UDF of the Python exports (the JVM-native scoring of the generated
code is udfs/spark_jvm.py).

Nothing here decides a feature or a score: hashing and extraction are `udfs.features`, scoring is
a `udfs.formats` scorer over the float32 matrix `udfs.scoring.score_frame` builds, so Spark, Flink
and the local CLI give the same rows. These functions only move Arrow/pandas batches in and out
and load things once per worker.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import pyarrow as pa

from udfs.decode import DecodeLimits, PhotoRejected
from udfs.features import (FEATURE_SETS, FEATURE_VERSION, FEATURE_VERSIONS, FeatureRow, content_sha256,
                           extract_features, feature_set)
from udfs.photo_io import PhotoReader, local_path
from udfs.quarantine import now_ms
from udfs.rollout import RolloutPlan, arm, assignments
from udfs.schemas import FEATURE_KEYS, PHOTOS, QUARANTINE, SCORE, feature_table_schema, frame, pick

# --- feature backfill -----------------------------------------------------------------------------

# The features table's row: every feature version's columns in one layout (udfs/schemas.py), each
# row filling those of its own version, keyed by (content_sha256, feature_version).
FEATURE_TABLE = feature_table_schema(FEATURE_SETS[v].names for v in FEATURE_VERSIONS)
# Its feature columns (every version's), in order.
TABLE_FEATURE_NAMES: tuple[str, ...] = tuple(FEATURE_TABLE.names[len(FEATURE_KEYS):])
# The two passes' rows, composed of the tables' fields (udfs/schemas.py): a photo read (or why not),
# and a content decoded (its features when `ok`, why not otherwise).
HASH_ROWS = pa.schema([*pick(PHOTOS, "photo_id", "uri", "content_sha256", "file_bytes"),
                       *pick(QUARANTINE, "stage", "reason_code", "detail")])
EXTRACT_ROWS = pa.schema([*pick(FEATURE_TABLE, "content_sha256", "photo_id"), PHOTOS.field("uri"),
                          pa.field("ok", pa.bool_()), *pick(FEATURE_TABLE, "format", "dhash", *TABLE_FEATURE_NAMES),
                          *pick(QUARANTINE, "stage", "reason_code", "detail", "seen_at_ms")])
# Their Spark schemas, the mapInPandas return types.
def spark_schema(schema: pa.Schema):
    """The Spark StructType of a layout of udfs/schemas.py, by pyspark's own Arrow type mapping."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


HASH_SCHEMA = spark_schema(HASH_ROWS)
EXTRACT_SCHEMA = spark_schema(EXTRACT_ROWS)


def hash_partitions(reader: PhotoReader, max_file_bytes: int
                    ) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """mapInPandas function: (photo_id, uri) -> HASH_SCHEMA rows; reads each photo once, decodes none.

    Read failures keep a null hash and the reason, so every input row comes out exactly once; a
    TransientReadError (a store unreachable after the reader's retries) fails the task instead.
    """

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            out = {k: [] for k in HASH_ROWS.names}
            for photo_id, uri in zip(batch["photo_id"], batch["uri"]):
                if photo_id is None or pd.isna(photo_id):
                    # Directory inputs: local files are known by their path, like `photoscore features`.
                    photo_id = local_path(uri) or uri
                digest = size = stage = reason = detail = None
                try:
                    data = reader.read(uri, max_file_bytes)
                    digest, size = content_sha256(data), len(data)
                except PhotoRejected as exc:
                    stage, reason, detail = exc.stage, exc.reason_code, exc.detail
                for key, value in zip(out, (photo_id, uri, digest, size, stage, reason, detail)):
                    out[key].append(value)
            yield frame(HASH_ROWS, out, nullable=["file_bytes"])

    return run


def extract_partitions(limits: DecodeLimits, reader: PhotoReader, decodes=None, rows_done=None,
                       version: int = FEATURE_VERSION
                       ) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """mapInPandas function: rows (content_sha256, photo_id, uri) of contents to decode ->
    EXTRACT_SCHEMA rows (features of feature version `version`, the newest by default, when `ok`,
    in that version's columns, the others null; the quarantine reason otherwise), one per content.

    All rows of a content must be in one partition and adjacent (repartition and sort within
    partitions by content_sha256): the first row of each content is decoded, the rest are
    duplicates of it and skipped, so no shuffle is needed to deduplicate first.

    Bytes are read here, on the executor, one photo at a time: a batch never holds more than one
    photo's bytes. `decodes` (a Spark accumulator) counts every decode attempted, so tests and logs
    can prove that work that should be skipped was skipped; `rows_done` counts input rows
    consumed, for progress.
    """

    positions = [TABLE_FEATURE_NAMES.index(n) for n in feature_set(version).names]

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        previous = None
        for batch in batches:
            rows = []
            for digest, photo_id, uri in zip(batch["content_sha256"], batch["photo_id"], batch["uri"]):
                if digest != previous:
                    rows.append(_extract_one(digest, photo_id, uri, limits, reader, version, positions))
                    previous = digest
            if decodes is not None:
                decodes.add(len(rows))
            if rows_done is not None:
                rows_done.add(len(batch))
            yield frame(EXTRACT_ROWS, rows, nullable=["dhash"])

    return run


_NO_FEATURES = [None] * len(TABLE_FEATURE_NAMES)


def _extract_one(digest: str, photo_id: str, uri: str, limits: DecodeLimits, reader: PhotoReader,
                 version: int, positions: list[int]) -> list:
    """One EXTRACT_ROWS row (a list in its order) for the content `digest`: its features of
    `version` at `positions` of TABLE_FEATURE_NAMES."""
    try:
        data = reader.read(uri, limits.max_file_bytes)
    except PhotoRejected as exc:
        return [digest, photo_id, uri, False, None, None, *_NO_FEATURES, exc.stage, exc.reason_code,
                exc.detail, now_ms()]
    if content_sha256(data) != digest:
        # The file changed between the hash pass and now: its new content is not what the run
        # planned for; the next run picks the new content up.
        return [digest, photo_id, uri, False, None, None, *_NO_FEATURES, "read", "unreadable_uri",
                f"{uri}: content changed during the backfill", now_ms()]
    result = extract_features(data, photo_id, uri, limits, version)
    if isinstance(result, FeatureRow):
        values = list(_NO_FEATURES)
        for position, value in zip(positions, result.values.tolist()):
            values[position] = value
        return [digest, photo_id, uri, True, result.format, result.dhash, *values, None, None, None, now_ms()]
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


def cached_scorer(bundle_dir: Path, export_format: str, threads: int = 1):
    """Load one export once per Python worker process (workers are reused across tasks)."""
    from udfs.formats import load_scorer

    key = (str(bundle_dir), export_format, threads)
    if key not in _SCORERS:
        _SCORERS[key] = load_scorer(bundle_dir, export_format, threads=threads)
    return _SCORERS[key]


def score_arrays(bundle_name: str, driver_bundle: str, export_format: str, threads: int = 1
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

        from udfs.scoring import score_isolating_failures

        scorer = cached_scorer(bundle_on_worker(bundle_name, driver_bundle), export_format, threads)
        log = logging.getLogger("photoscore.spark.score")
        for rows in batches:
            X = rows.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(rows), -1)
            scores, errors = score_isolating_failures(scorer, X)
            failed = np.array([e is not None for e in errors], dtype=bool)
            for error in sorted({e for e in errors if e is not None}):
                log.warning("%s scorer failed on a row: %s", export_format, error)
            yield pa.array(scores, type=SCORE.field("score").type, mask=failed)

    return run


# --- rollouts -------------------------------------------------------------------------------------

# A content's place in a rollout plan: its arm and the versions that serve and shadow-score it.
ARMS = pa.schema([("arm", pa.string()), ("served_version", pa.int64()), ("shadow_version", pa.int64())])


def rollout_arms(plan: RolloutPlan) -> Callable[[pd.Series], pd.DataFrame]:
    """pandas UDF body (struct result, ARMS): content_sha256 -> its arm and the versions serving
    and shadow-scoring it, by `udfs.rollout.arm` and `assignments` themselves, so a content gets
    the arm in the Spark backfill that the Flink stream gives it (no second hash to drift)."""

    def run(contents: pd.Series) -> pd.DataFrame:
        rows = []
        for content in contents:
            given = {a.role: a.version for a in assignments(content, plan)}
            rows.append([arm(content, plan), given.get("served"), given.get("shadow")])
        return frame(ARMS, rows, nullable=["served_version", "shadow_version"])

    return run


def python_udfs_in_plan(df) -> list[str]:
    """Python-executing operators in a DataFrame's physical plan (empty: rows never leave the JVM)."""
    plan = df._jdf.queryExecution().executedPlan().toString()
    markers = ("ArrowEvalPython", "BatchEvalPython", "MapInPandas", "MapInArrow", "FlatMapGroupsInPandas",
               "PythonUDF", "PythonMapInArrow")
    return [m for m in markers if m in plan]


__all__ = [
    "HASH_SCHEMA", "EXTRACT_SCHEMA", "FEATURE_TABLE", "TABLE_FEATURE_NAMES", "hash_partitions",
    "extract_partitions", "score_arrays", "ARMS", "rollout_arms", "bundle_on_worker", "cached_scorer", "python_udfs_in_plan",
]
