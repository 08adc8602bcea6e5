"""Feature backfill: photos (a directory, or a manifest of URIs) -> the features, photos and
quarantine tables. Entry point for `spark-submit jobs/backfill_features.py --input ... --tables ...`
and `photoscore backfill features`.

Work done per run, in two passes so no content is decoded twice:
1. hash pass: read each input's bytes on an executor, keep (photo_id, uri, content_sha256, size)
   or its read failure, classified against the tables (features known, decode failed before).
   Reading is cheap next to decoding.
2. decode pass: only contents that have neither features nor a quarantined decode for the run's
   feature version, once per distinct content (duplicates within the run decode once), through
   `udfs.features.extract_features` inside mapInPandas; bytes are read again inside the UDF, one
   photo at a time, so a batch never carries 30 MB blobs through Arrow.
Every input ends in exactly one of featured / quarantined / known, and the run commits atomically
(jobs/spark_tables.py).

A run computes one feature version (`run_version`): `--feature-version N`, else the version of the
model it is to serve (`--model`, else the configured champion: its bundle's feature_schema.json),
else `features.version`. Versions live side by side in the tables, so a content is decoded once
per version it is featured in.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from jobs.config import load_settings_or_exit
from udfs.settings import Settings
from jobs.progress import Progress
from jobs.spark_tables import (Commit, TableStore, conform, file_layout, new_run_id, run_id_arg,
                               write_counted)
from udfs.errors import PhotoscoreError

log = logging.getLogger("photoscore.backfill.features")

MANIFEST_SUFFIXES = (".parquet", ".csv", ".txt", ".lst")
# Where each input ends up in a run: featured / known count as such, the rest are quarantined.
OUTCOMES = ("featured", "known", "read_failed", "known_bad", "failed")
# Exit status of a run stopped by a photo store outage (sysexits.h "try again later").
EX_TEMPFAIL = 75


@dataclass(frozen=True)
class FeatureBackfillResult:
    """Per-input outcome counts (inputs = featured + quarantined + known) and the decode count."""

    run_id: str
    inputs: int
    featured: int
    quarantined: int
    known: int
    decoded: int
    feature_version: int

    def line(self) -> str:
        return (f"inputs={self.inputs} featured={self.featured} quarantined={self.quarantined} "
                f"known={self.known}")


def input_kind(source: str, kind: str = "auto") -> str:
    """"dir" or "manifest": `kind`, or by the name when "auto" (a .parquet/.csv/.txt/.lst is a manifest)."""
    if kind == "auto":
        return "manifest" if source.lower().endswith(MANIFEST_SUFFIXES) else "dir"
    return kind


def input_frame(spark, store: TableStore, source: str, glob: str | None, kind: str = "auto"):
    """(photo_id, uri) rows for a directory (binaryFile listing, content not read here) or a
    manifest (parquet/csv with a `uri` column and optional `photo_id`, or text: one URI a line)."""
    from pyspark.sql import functions as F

    kind = input_kind(source, kind)
    if not store.exists(source):
        raise PhotoscoreError(f"input {source} does not exist; pass a photo directory or a manifest of URIs")
    if kind == "dir":
        listing = (spark.read.format("binaryFile").option("recursiveFileLookup", "true")
                   .option("pathGlobFilter", glob or "*").load(source))
        # The file index's listing, not a scan: a scan silently drops zero-byte files, which are
        # inputs too (quarantined as empty_file). Directory listing happens on the driver either
        # way; a manifest is the shape for billions of photos.
        uris = sorted(listing.inputFiles())
        slices = len(uris) // 10_000 + 1
        frame = spark.createDataFrame(spark.sparkContext.parallelize([(u,) for u in uris], slices), "uri string")
        # Spread over the cores by a JVM shuffle: a Python RDD feeding the hash pass directly would
        # run a second Python worker per task. Never more slices than files: empty tasks cost too.
        frame = frame.repartition(max(1, min(spark.sparkContext.defaultParallelism * 4, len(uris)), slices))
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
    # A manifest file is often one split: spread its rows so the hash pass uses every core.
    slices = spark.sparkContext.defaultParallelism * 4
    if frame.rdd.getNumPartitions() < slices:
        frame = frame.repartition(slices)
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


def run_version(settings: Settings, feature_version: int | None = None, model_uri: str | None = None) -> int:
    """The feature version a run computes: `feature_version`; else that of `model_uri`'s bundle;
    else that of the configured champion (`mlflow.model_name`@`mlflow.alias`) when the registry
    has one; else `features.version`. A named model that cannot be resolved is an error."""
    from udfs.features import feature_set

    if feature_version is not None:
        return feature_set(feature_version).version
    if model_uri is not None:
        return model_feature_version(settings, model_uri)
    champion = f"models:/{settings.mlflow.model_name}@{settings.mlflow.alias}"
    try:
        version = model_feature_version(settings, champion)
    except PhotoscoreError as exc:
        version = settings.features.feature_version()
        log.info("no champion to serve (%s): computing features.version %d", exc, version)
        return version
    log.info("computing feature version %d, the one champion %s was trained on", version, champion)
    return version


def model_feature_version(settings: Settings, model_uri: str) -> int:
    """The feature version the model was trained on (its bundle's feature_schema.json)."""
    from models.registry import resolve_bundle
    from udfs.bundle import read_feature_schema
    from udfs.features import feature_set

    _, _, bundle_dir = resolve_bundle(model_uri, settings)
    return feature_set(read_feature_schema(bundle_dir).feature_version).version


def run_feature_backfill(spark, settings: Settings, source: str, tables: str, glob: str | None = None,
                         kind: str = "auto", run_id: str | None = None,
                         version: int | None = None) -> FeatureBackfillResult:
    """Backfill features of feature version `version` (default `features.version`) of `source`
    into the tables at `tables`; returns the reconciled counts."""
    from pyspark.sql import functions as F

    from udfs.spark_udfs import EXTRACT_SCHEMA, HASH_SCHEMA, extract_partitions, hash_partitions

    from jobs.spark_session import set_arrow_batch_rows
    from udfs.photo_io import photo_reader

    limits = settings.features.limits()
    version = settings.features.feature_version() if version is None else version
    # The operator's own --input directory is allowed for this run; a manifest's URIs must be under
    # storage.photo_roots (README "Trust model").
    reader = photo_reader(settings, [source] if input_kind(source, kind) == "dir" else [])
    set_arrow_batch_rows(spark, settings.spark.features_batch_rows)
    store = TableStore(spark, tables)
    store.recover()
    run_id = run_id or new_run_id()
    parallelism = spark.sparkContext.defaultParallelism

    features = store.read("features").where(F.col("feature_version") == version)
    photos = store.read("photos")
    quarantine = store.read("quarantine")
    known_keys = features.select("content_sha256").distinct().withColumn("_known", F.lit(True))
    # Contents whose decode already failed for this version: deterministic, never retried.
    bad = (quarantine.where((F.col("feature_version") == version) & F.col("content_sha256").isNotNull()
                            & F.col("stage").isin("parse", "decode", "features"))
           .groupBy("content_sha256")
           .agg(F.min(F.struct("stage", "reason_code", "detail")).alias("_bad")))
    new_content = F.col("content_sha256").isNotNull() & F.col("_known").isNull() & F.col("_bad").isNull()

    # 1. hash pass, classified against the tables and materialised in staging: every later step
    # reads the same snapshot of inputs, and the joins run once.
    inputs = input_frame(spark, store, source, glob, kind)
    classified_path = store.staging(run_id, "classified")
    n_new = write_counted(inputs.mapInPandas(hash_partitions(reader, limits.max_file_bytes), HASH_SCHEMA)
                          .join(known_keys, "content_sha256", "left").join(bad, "content_sha256", "left"),
                          classified_path, new=F.count(F.when(new_content, 1)))["new"]
    classified = spark.read.parquet(classified_path)
    log.info("run %s: %d inputs with contents not featured yet", run_id, n_new)

    # 2. decode pass over unknown contents only; all copies of a content meet in one partition,
    # sorted so the first (lowest uri, photo_id) is the one decoded.
    decodes = spark.sparkContext.accumulator(0)
    rows_done = spark.sparkContext.accumulator(0)
    extracted_path = store.staging(run_id, "extracted")
    if n_new:
        stop = threading.Event()
        watcher = _progress_thread(rows_done, n_new, stop)
        try:
            (classified.where(new_content).select("content_sha256", "photo_id", "uri")
             .repartition(min(max(parallelism * 2, math.ceil(n_new / 200)), n_new), "content_sha256")
             .sortWithinPartitions("content_sha256", "uri", "photo_id")
             .mapInPandas(extract_partitions(limits, reader, decodes, rows_done, version), EXTRACT_SCHEMA)
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

    # 3. staged table rows.
    commit = Commit(run_id)
    now = F.lit(int(time.time() * 1000)).cast("long")
    feature_rows = extracted.where("ok").withColumn("feature_version", F.lit(version))
    reason = (F.when(F.col("outcome") == "read_failed", F.struct("stage", "reason_code", "detail"))
              .when(F.col("outcome") == "known_bad", F.col("_bad")).otherwise(F.col("_failed")))
    quarantine_rows = (status.where(F.col("outcome").isin("read_failed", "known_bad", "failed"))
                       .withColumn("_r", reason)
                       .select(F.col("uri").alias("source_ref"), F.coalesce("photo_id", "uri").alias("photo_id"),
                               F.col("_r.stage").alias("stage"), F.col("_r.reason_code").alias("reason_code"),
                               F.col("_r.detail").alias("detail"), now.alias("seen_at_ms"), "content_sha256",
                               F.lit(version).alias("feature_version"))
                       # idempotent: one row per (input, reason), whichever run saw it first
                       .join(quarantine.select("source_ref", "reason_code"), ["source_ref", "reason_code"], "left_anti")
                       .dropDuplicates(["source_ref", "reason_code"]))
    photo_rows = (status.where(F.col("content_sha256").isNotNull())
                  .select("photo_id", "uri", "content_sha256", "file_bytes", now.alias("seen_at_ms"))
                  .join(photos.select("photo_id", "content_sha256"), ["photo_id", "content_sha256"], "left_anti")
                  .dropDuplicates(["photo_id", "content_sha256"]))
    # Each table's files hold exactly its layout's columns, in order, with its types.
    outputs = {name: conform(rows, file_layout(name))
               for name, rows in (("features", feature_rows), ("quarantine", quarantine_rows), ("photos", photo_rows))}
    staged = {name: store.staging(run_id, f"out_{name}") for name in outputs}
    # Independent small jobs over staged inputs: submitted together they share the cores instead
    # of each paying its scheduling latency in turn.
    with ThreadPoolExecutor(len(outputs) + 1) as pool:
        reason_counts = pool.submit(lambda: status.where(F.col("outcome").isin("read_failed", "known_bad", "failed"))
                                    .withColumn("_r", reason).groupBy("_r.reason_code").count().collect())
        totals = pool.submit(lambda: status.agg(
            F.count(F.lit(1)).alias("rows"),
            *[F.count(F.when(F.col("outcome") == outcome, 1)).alias(outcome) for outcome in OUTCOMES]).first())
        written = {name: pool.submit(write_counted, rows.coalesce(max(1, parallelism)), staged[name])
                   for name, rows in outputs.items()}
    for name, rows_written in written.items():
        if rows_written.result()["rows"]:
            commit.moves.append((staged[name], f"{store.table(name)}/run_id={run_id}"))
    counts = totals.result().asDict()
    reasons = {row["reason_code"]: row["count"] for row in reason_counts.result()}
    store.commit(commit)

    result = FeatureBackfillResult(
        run_id=run_id, inputs=counts["rows"], featured=counts["featured"],
        quarantined=counts["read_failed"] + counts["known_bad"] + counts["failed"],
        known=counts["known"], decoded=int(decodes.value), feature_version=version)
    if result.inputs != result.featured + result.quarantined + result.known:
        raise PhotoscoreError(f"counts do not reconcile: {result}")
    store.write_report(run_id, {
        "job": "features", **asdict(result), "outcomes": {k: counts[k] for k in OUTCOMES},
        "quarantine_reasons": reasons,
        "written": {name: rows_written.result()["rows"] for name, rows_written in written.items()}})
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
    parser.add_argument("--run-prefix", default=None, type=run_id_arg, metavar="PREFIX",
                        help="start the run's id with PREFIX- (then time and random, as always): an "
                             "orchestrator finds its runs' reports under TABLES/_runs by it")
    parser.add_argument("--input-kind", choices=("auto", "dir", "manifest"), default="auto",
                        help="auto: a .parquet/.csv/.txt/.lst path is a manifest, anything else a directory")
    parser.add_argument("--feature-version", type=int, default=None, metavar="N",
                        help="the feature version to compute (default: the one --model was trained on)")
    parser.add_argument("--model", default=None, metavar="MODEL_URI",
                        help="compute the feature version this model (models:/NAME@ALIAS or models:/NAME/N) "
                             "was trained on (default: config mlflow.model_name@mlflow.alias, or "
                             "features.version when the registry has no such model)")


def main(argv: list[str] | None = None) -> int:
    """spark-submit entry point: prints the decode count, then the final counts line."""
    from jobs.spark_session import get_session

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    settings = load_settings_or_exit("backfill features", args.overrides)
    tables = args.tables or settings.resolve(settings.storage.tables)
    try:
        version = run_version(settings, args.feature_version, args.model)
    except PhotoscoreError as exc:
        print(f"backfill features: {exc}", file=sys.stderr)
        return 1
    spark = get_session(settings.spark, "photoscore-backfill-features")
    try:
        result = run_feature_backfill(spark, settings, args.input, tables, args.glob, args.input_kind,
                                      new_run_id(args.run_prefix), version)
    except PhotoscoreError as exc:
        print(f"backfill features: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a task's exception reaches the driver as Spark's text
        cause = next((line.strip() for line in str(exc).splitlines() if "TransientReadError:" in line), None)
        if cause is None:
            raise
        print(f"backfill features: a photo store is unavailable ({cause}); nothing was committed or "
              "quarantined for it: run again when it is back", file=sys.stderr)
        return EX_TEMPFAIL
    finally:
        spark.stop()
    print(f"run={result.run_id} feature_version={version} decoded={result.decoded}")
    print(result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
