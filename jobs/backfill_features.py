"""Feature backfill: photos (a directory, or a manifest of URIs) -> the features, photos and
quarantine tables. Entry point for `spark-submit jobs/backfill_features.py --input ... --tables ...`
and `photoscore backfill features`.

Work done per run, in two passes so no content is decoded twice:
1. hash pass: read each input's bytes on an executor, keep (photo_id, uri, content_sha256, size)
   or its read failure. Reading is cheap next to decoding.
2. decode pass: only contents that have neither features nor a quarantined decode for this feature
   version, one row per distinct content (duplicates within the run decode once), through
   `udfs.features.extract_features` inside mapInPandas; bytes are read again inside the UDF, one
   photo at a time, so a batch never carries 30 MB blobs through Arrow.
Every input ends in exactly one of featured / quarantined / known, and the run commits atomically
(jobs/spark_tables.py).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
import time
from dataclasses import dataclass

from jobs.config import Config, decode_limits, load_config
from jobs.progress import Progress
from jobs.spark_tables import (FEATURES_DDL, PHOTOS_DDL, QUARANTINE_DDL, Commit, TableStore, new_run_id)
from udfs.errors import PhotoscoreError
from udfs.features import FEATURE_COLUMNS, FEATURE_VERSION

log = logging.getLogger("photoscore.backfill.features")

MANIFEST_SUFFIXES = (".parquet", ".csv", ".txt", ".lst")


@dataclass(frozen=True)
class FeatureBackfillResult:
    """Per-input outcome counts (inputs = featured + quarantined + known) and the decode count."""

    run_id: str
    inputs: int
    featured: int
    quarantined: int
    known: int
    decoded: int

    def line(self) -> str:
        return (f"inputs={self.inputs} featured={self.featured} quarantined={self.quarantined} "
                f"known={self.known}")


def input_frame(spark, store: TableStore, source: str, glob: str | None, kind: str = "auto"):
    """(photo_id, uri) rows for a directory (binaryFile listing, content not read here) or a
    manifest (parquet/csv with a `uri` column and optional `photo_id`, or text: one URI a line)."""
    from pyspark.sql import functions as F

    if kind == "auto":
        kind = "manifest" if source.lower().endswith(MANIFEST_SUFFIXES) else "dir"
    if not store.exists(source):
        raise PhotoscoreError(f"input {source} does not exist; pass a photo directory or a manifest of URIs")
    if kind == "dir":
        listing = (spark.read.format("binaryFile").option("recursiveFileLookup", "true")
                   .option("pathGlobFilter", glob or "*").load(source))
        # The file index's listing, not a scan: a scan silently drops zero-byte files, which are
        # inputs too (quarantined as empty_file). Directory listing happens on the driver either
        # way; a manifest is the shape for billions of photos.
        uris = sorted(listing.inputFiles())
        slices = max(spark.sparkContext.defaultParallelism, len(uris) // 10_000 + 1)
        frame = spark.createDataFrame(spark.sparkContext.parallelize([(u,) for u in uris], slices), "uri string")
        # photo_id from the URI on the executor (local paths as plain paths, like `photoscore features`).
        return frame.select(F.lit(None).cast("string").alias("photo_id"), "uri")
    lower = source.lower()
    if lower.endswith(".parquet"):
        frame = spark.read.parquet(source)
    elif lower.endswith(".csv"):
        frame = spark.read.option("header", "true").csv(source)
    else:
        frame = spark.read.text(source).select(F.trim("value").alias("uri")).where(F.col("uri") != "")
    if "uri" not in frame.columns:
        raise PhotoscoreError(f"manifest {source} has no `uri` column (columns: {', '.join(frame.columns)})")
    photo_id = F.col("photo_id").cast("string") if "photo_id" in frame.columns else F.lit(None).cast("string")
    return frame.select(photo_id.alias("photo_id"), F.col("uri").cast("string").alias("uri"))


def _progress_thread(accumulator, total: int, stop: threading.Event) -> threading.Thread:
    """Driver-side progress (photos/s, ETA) from the decode accumulator, updated as tasks finish."""

    def watch() -> None:
        with Progress(total, "photos", "decode", log_every_s=10.0) as progress:
            while not stop.wait(2.0):
                progress.update(accumulator.value - progress.done)
            progress.update(accumulator.value - progress.done)

    thread = threading.Thread(target=watch, name="decode-progress", daemon=True)
    thread.start()
    return thread


def run_feature_backfill(spark, config: Config, source: str, tables: str, glob: str | None = None,
                         kind: str = "auto", run_id: str | None = None) -> FeatureBackfillResult:
    """Backfill features of `source` into the tables at `tables`; returns the reconciled counts."""
    from pyspark.sql import functions as F

    from udfs.spark_udfs import EXTRACT_SCHEMA, HASH_SCHEMA, extract_partitions, hash_partitions

    from jobs.spark_session import set_arrow_batch_rows

    limits = decode_limits(config)
    set_arrow_batch_rows(spark, config, "spark.features_batch_rows", 64)
    store = TableStore(spark, tables)
    store.recover()
    run_id = run_id or new_run_id()
    parallelism = spark.sparkContext.defaultParallelism

    # 1. hash pass, materialised in staging: every later step reads the same snapshot of inputs.
    inputs = input_frame(spark, store, source, glob, kind)
    inputs = inputs.repartition(max(inputs.rdd.getNumPartitions(), parallelism * 4))
    hashed_path = store.staging(run_id, "hashed")
    inputs.mapInPandas(hash_partitions(limits.max_file_bytes), HASH_SCHEMA).write.parquet(hashed_path)
    hashed = spark.read.parquet(hashed_path)

    features = store.read("features", FEATURES_DDL).where(F.col("feature_version") == FEATURE_VERSION)
    photos = store.read("photos", PHOTOS_DDL)
    quarantine = store.read("quarantine", QUARANTINE_DDL)
    known_keys = features.select("content_sha256").distinct().withColumn("_known", F.lit(True))
    # Contents whose decode already failed for this version: deterministic, never retried.
    bad = (quarantine.where((F.col("feature_version") == FEATURE_VERSION) & F.col("content_sha256").isNotNull()
                            & F.col("stage").isin("parse", "decode", "features"))
           .groupBy("content_sha256")
           .agg(F.min(F.struct("stage", "reason_code", "detail")).alias("_bad")))

    classified = (hashed.join(known_keys, "content_sha256", "left").join(bad, "content_sha256", "left"))
    to_decode = (classified.where(F.col("content_sha256").isNotNull() & F.col("_known").isNull()
                                  & F.col("_bad").isNull())
                 .groupBy("content_sha256")
                 .agg(F.min(F.struct("uri", "photo_id")).alias("rep"))
                 .select("content_sha256", F.col("rep.photo_id").alias("photo_id"), F.col("rep.uri").alias("uri")))
    n_decode = to_decode.count()
    log.info("run %s: %d distinct new contents to decode", run_id, n_decode)

    # 2. decode pass over distinct unknown contents only.
    decodes = spark.sparkContext.accumulator(0)
    extracted_path = store.staging(run_id, "extracted")
    if n_decode:
        stop = threading.Event()
        watcher = _progress_thread(decodes, n_decode, stop)
        try:
            (to_decode.repartition(max(parallelism * 2, math.ceil(n_decode / 200)), "content_sha256")
             .mapInPandas(extract_partitions(limits, decodes), EXTRACT_SCHEMA)
             .write.parquet(extracted_path))
        finally:
            stop.set()
            watcher.join()
        extracted = spark.read.parquet(extracted_path)
    else:
        extracted = spark.createDataFrame([], EXTRACT_SCHEMA)

    status = (classified.join(extracted.select("content_sha256", F.col("ok").alias("_ok"),
                                               F.struct("stage", "reason_code", "detail").alias("_failed")),
                              "content_sha256", "left")
              .withColumn("outcome", F.when(F.col("content_sha256").isNull(), "read_failed")
                          .when(F.col("_known"), "known")
                          .when(F.col("_bad").isNotNull(), "known_bad")
                          .when(F.col("_ok"), "featured")
                          .otherwise("failed")))
    status_path = store.staging(run_id, "status")
    status.write.parquet(status_path)
    status = spark.read.parquet(status_path)
    counts = {r["outcome"]: r["count"] for r in status.groupBy("outcome").count().collect()}

    # 3. staged table rows.
    commit = Commit(run_id)
    now = F.lit(int(time.time() * 1000)).cast("long")
    feature_rows = extracted.where("ok").select(
        *[F.col(c) for c in FEATURE_COLUMNS if c != "feature_version"],
        F.lit(FEATURE_VERSION).cast("int").alias("feature_version")).select(*FEATURE_COLUMNS)
    reason = (F.when(F.col("outcome") == "read_failed", F.struct("stage", "reason_code", "detail"))
              .when(F.col("outcome") == "known_bad", F.col("_bad")).otherwise(F.col("_failed")))
    quarantine_rows = (status.where(F.col("outcome").isin("read_failed", "known_bad", "failed"))
                       .withColumn("_r", reason)
                       .select(F.col("uri").alias("source_ref"), F.coalesce("photo_id", "uri").alias("photo_id"),
                               F.col("_r.stage").alias("stage"), F.col("_r.reason_code").alias("reason_code"),
                               F.col("_r.detail").alias("detail"), now.alias("seen_at_ms"), "content_sha256",
                               F.lit(FEATURE_VERSION).cast("int").alias("feature_version"))
                       # idempotent: one row per (input, reason), whichever run saw it first
                       .join(quarantine.select("source_ref", "reason_code"), ["source_ref", "reason_code"], "left_anti")
                       .dropDuplicates(["source_ref", "reason_code"]))
    photo_rows = (status.where(F.col("content_sha256").isNotNull())
                  .select("photo_id", "uri", "content_sha256", "file_bytes", now.alias("seen_at_ms"))
                  .join(photos.select("photo_id", "content_sha256"), ["photo_id", "content_sha256"], "left_anti")
                  .dropDuplicates(["photo_id", "content_sha256"]))
    for name, rows in (("features", feature_rows), ("quarantine", quarantine_rows), ("photos", photo_rows)):
        staged = store.staging(run_id, f"out_{name}")
        rows.coalesce(max(1, parallelism)).write.parquet(staged)
        if store.staged_rows(staged):
            commit.moves.append((staged, f"{store.table(name)}/run_id={run_id}"))
    store.commit(commit)

    result = FeatureBackfillResult(
        run_id=run_id, inputs=sum(counts.values()), featured=counts.get("featured", 0),
        quarantined=counts.get("read_failed", 0) + counts.get("known_bad", 0) + counts.get("failed", 0),
        known=counts.get("known", 0), decoded=int(decodes.value))
    if result.inputs != result.featured + result.quarantined + result.known:
        raise PhotoscoreError(f"counts do not reconcile: {result}")
    return result


def build_parser() -> argparse.ArgumentParser:
    """Flags shared by spark-submit and `photoscore backfill features`."""
    parser = argparse.ArgumentParser(prog="backfill_features.py", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, metavar="PATH|MANIFEST",
                        help="photo directory (read recursively) or manifest (.parquet/.csv with a `uri` "
                             "column and optional `photo_id`, or .txt one URI a line)")
    parser.add_argument("--tables", default=None, metavar="ROOT",
                        help="table root (default: config storage.tables)")
    parser.add_argument("--glob", default=None, help="file-name filter for directories, e.g. '*.jpg'")
    parser.add_argument("--input-kind", choices=("auto", "dir", "manifest"), default="auto",
                        help="auto: a .parquet/.csv/.txt/.lst path is a manifest, anything else a directory")


def main(argv: list[str] | None = None) -> int:
    """spark-submit entry point: prints the decode count, then the final counts line."""
    from jobs.spark_session import get_session

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    config = load_config(args.overrides)
    tables = args.tables or config.path("storage.tables")
    spark = get_session(config, "photoscore-backfill-features")
    try:
        result = run_feature_backfill(spark, config, args.input, tables, args.glob, args.input_kind)
    except PhotoscoreError as exc:
        print(f"backfill features: {exc}", file=sys.stderr)
        return 1
    finally:
        spark.stop()
    print(f"run={result.run_id} decoded={result.decoded}")
    print(result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
