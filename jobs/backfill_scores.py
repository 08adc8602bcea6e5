"""Scoring backfill: the stored feature table -> the score table of one model version, in one export
format, without reading or decoding a single photo. Entry point for
`spark-submit jobs/backfill_scores.py --model models:/NAME@ALIAS --format FORMAT --tables ROOT [--force]`
and `photoscore backfill scores`.

Formats (udfs/formats/): those with a JVM kernel (the generated C and Java) score inside the
executors' JVM, rows never in Python: a Java mapPartitions hands blocks of rows' float32 features
to the generated code (the C through JNI, the Java directly; udfs/spark_jvm.py). The others score
in a scalar-iterator Arrow UDF over the feature columns only (the scorer `photoscore score` runs,
on the same float32 matrix), with the bundle shipped by `SparkContext.addArchive` and loaded once
per Python worker. Failed rows become quarantine rows in SQL, the same for every format.

Only feature rows of the feature version the model was trained on are scored (its bundle's
feature_schema.json); a table holding only other versions is refused, naming the command that
computes the missing one.

Idempotent per score identity (content_sha256, model_name, model_version): identities already in
the score table are skipped unless `--force`, which rescores them all and replaces the model
version's partition atomically (jobs/spark_tables.py). Every row is `served`; `--plan` scores a
registered model's versions per its rollout plan instead (jobs/score_plan.py, docs/spark.md).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass
from functools import reduce
from pathlib import Path

from jobs.config import load_settings_or_exit
from jobs import model_args
from udfs.settings import Settings
from jobs.spark_tables import (Commit, TableStore, conform, file_layout, new_run_id, run_id_arg, table_schema,
                               write_counted)
from udfs.errors import PhotoscoreError

log = logging.getLogger("photoscore.backfill.scores")

@dataclass(frozen=True)
class ScoreBackfillResult:
    """rows = scored + known + quarantined, over the feature rows of the model's feature version."""

    run_id: str
    model_name: str
    model_version: int
    export_format: str
    rows: int
    scored: int
    known: int
    quarantined: int

    def line(self) -> str:
        return f"rows={self.rows} scored={self.scored} known={self.known} quarantined={self.quarantined}"


def score_partition_path(store: TableStore, model_name: str, model_version: int) -> str:
    """The score table's partition of one model version."""
    return f"{store.table('scores')}/model_name={model_name}/model_version={model_version}"


def _finite_all(names):
    from pyspark.sql import functions as F

    checks = [F.col(n).isNotNull() & ~F.isnan(n) & (F.abs(F.col(n)) != float("inf")) for n in names]
    return reduce(lambda a, b: a & b, checks)


def bundle_archive(bundle_dir: Path, out_dir: Path, model_name: str) -> Path:
    """A zip of the bundle (built once, atomically) for `SparkContext.addArchive`."""
    import os
    import shutil
    import tempfile

    archive = out_dir / f"{model_name}-{bundle_dir.name}.zip"
    if not archive.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
            built = shutil.make_archive(str(Path(tmp) / "bundle"), "zip", root_dir=bundle_dir)
            os.replace(built, archive)
    return archive


def _shipped(spark) -> set[str]:
    """Names of the archives already added to this SparkContext."""
    listed = spark.sparkContext._jsc.sc().listArchives()
    return {str(uri).rsplit("/", 1)[-1] for uri in spark.sparkContext._jvm.scala.jdk.javaapi.CollectionConverters.asJava(listed)}


def scores_of(spark, settings: Settings, todo, bundle_dir: Path, names, export_format: str, model_name: str):
    """`todo` (feature rows) -> (photo_id, content_sha256, score): the one place the formats
    differ. Score null (or non-finite) where the scorer failed on that row.

    Formats with a JVM kernel: blocks of `spark.jvm_block_rows` rows through the generated kernel
    in the executors' JVM (unless the format's switch, `spark.c_in_jvm: false` for the C, sends it
    to a Python worker, e.g. where the driver has no JDK headers to build the JNI library). The
    others: a scalar-iterator Arrow UDF over one array of the N float32 features (identity columns
    stay in the JVM), the bundle shipped with `addArchive` and loaded once per Python worker.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.functions import ArrowUDFType, arrow_udf

    from jobs.spark_session import set_arrow_batch_rows
    from udfs.formats import get_format
    from udfs.spark_jvm import score_rows_jvm
    from udfs.spark_udfs import score_arrays

    fmt = get_format(export_format)
    in_jvm = fmt.jvm_kernel is not None and (fmt.jvm_switch is None or getattr(settings.spark, fmt.jvm_switch))
    if in_jvm:
        rows = todo.select("photo_id", "content_sha256", *[F.col(n).cast("float") for n in names])
        return score_rows_jvm(spark, rows, bundle_dir, names, export_format, settings.home / "spark" / "udf-jars",
                              settings.spark.jvm_block_rows)
    set_arrow_batch_rows(spark, settings.spark.scoring_batch_rows)
    # Ship the bundle to every executor as an archive Spark unpacks there (SparkFiles); a path
    # already added in this session is not added again.
    archive = bundle_archive(bundle_dir, settings.home / "spark" / "bundles", model_name)
    if archive.name not in _shipped(spark):
        spark.sparkContext.addArchive(str(archive))
    udf = arrow_udf(score_arrays(archive.name, str(bundle_dir), export_format, settings.scoring.threads),
                    table_schema("scores")["score"].dataType, ArrowUDFType.SCALAR_ITER)
    return todo.select("photo_id", "content_sha256",
                       udf(F.array(*[F.col(n).cast("float") for n in names])).alias("score"))


def score_frame_spark(spark, settings: Settings, todo, bundle_dir: Path, names, export_format: str,
                      model_name: str):
    """Score `todo` (feature rows, all finite) -> rows (ok, photo_id, content_sha256, score,
    scored_at_ms, stage, reason_code, detail); failed rows get the quarantine columns in SQL."""
    from pyspark.sql import functions as F

    from udfs.quarantine import now_ms

    score = F.col("score")
    ok = score.isNotNull() & ~F.isnan(score) & (F.abs(score) != float("inf"))
    detail = (F.when(score.isNull(), F.lit("the scorer failed on this row (its error is in the executor log)"))
              .otherwise(F.concat(F.lit("the scorer returned "), score.cast("string"))))
    return (scores_of(spark, settings, todo, bundle_dir, names, export_format, model_name)
            .select(ok.alias("ok"), "photo_id", "content_sha256", "score",
                    F.lit(now_ms()).cast("long").alias("scored_at_ms"),
                    F.when(~ok, F.lit("score")).alias("stage"),
                    F.when(~ok, F.lit("score_failed")).alias("reason_code"),
                    F.when(~ok, detail).alias("detail")))


def missing_version_message(name: str, version: int, needed: int, tables: str, stored: list[int]) -> str:
    """Why a model cannot be scored from the tables: no feature row of the version it was trained
    on, only of `stored` (a model scores features of its own version only), and the command that
    computes them."""
    held = f"feature version{'s' if len(stored) > 1 else ''} {', '.join(map(str, stored))}"
    return (f"model {name}/{version} was trained on feature version {needed}, but {tables} holds only {held}; "
            f"compute version {needed} first: photoscore backfill features --input PHOTOS --tables {tables} "
            f"--feature-version {needed}")


@dataclass(frozen=True)
class ScoringModel:
    """One resolved model version: its bundle and the feature version (and columns) it scores."""

    name: str
    version: int
    bundle_dir: Path
    feature_version: int
    names: tuple[str, ...]

    @property
    def prefix(self) -> str:
        """The quarantine `source_ref` prefix of this version's failed rows."""
        return f"models:/{self.name}/{self.version}#"


def resolve_model(settings: Settings, model_uri: str, export_format: str) -> ScoringModel:
    """The model a URI names, its export gated on the driver (a version whose parity verdict for
    `export_format` is not passed is refused before any work)."""
    from models.registry import resolve_bundle
    from udfs.bundle import read_feature_schema
    from udfs.formats import gated

    name, version, bundle_dir = resolve_bundle(model_uri, settings)
    gated(bundle_dir, export_format)
    schema = read_feature_schema(bundle_dir)
    return ScoringModel(name, int(version), bundle_dir, schema.feature_version, tuple(schema.names))


def features_of(stored, model: ScoringModel, tables: str):
    """The stored feature rows of the model's feature version; refused (naming the command that
    computes them) when the table holds only other versions. An empty table scores nothing."""
    from pyspark.sql import functions as F

    features = stored.where(F.col("feature_version") == model.feature_version)
    if not features.take(1):
        others = sorted(r[0] for r in stored.select("feature_version").distinct().collect())
        if others:
            raise PhotoscoreError(missing_version_message(model.name, model.version, model.feature_version,
                                                          tables, others))
    return features


# The score row columns a rewritten known row keeps from its stored row (all but its identity and role).
_KEPT = ("photo_id", "export_format", "score", "feature_version", "scored_at_ms", "source", "from_cache")


def score_version(spark, settings: Settings, store: TableStore, model: ScoringModel, features, export_format: str,
                  commit: Commit, *, force: bool = False, roles=None) -> tuple[ScoreBackfillResult, int, object]:
    """Stage one model version's scores of `features` (its feature version's rows) into `commit`;
    returns (counts, score rows staged, its new quarantine rows: a frame for `stage_quarantine`).

    `roles` None: every row is `served`, identities already in the version's partition are skipped
    (`known`) and only new rows are added (unless `force`: all rescored, the partition replaced).
    `roles` a frame (content_sha256, role): `features` are the contents the version scores per a
    rollout plan; the partition is replaced by exactly those contents' rows, each with its role,
    rows already scored rewritten from their stored score (`known`) instead of scored again.
    """
    from pyspark.sql import functions as F

    names = list(model.names)
    tag = "" if roles is None else f"v{model.version}-"
    partition = score_partition_path(store, model.name, model.version)
    if force:
        known = spark.createDataFrame([], "content_sha256 string, _known boolean")
    else:
        known = (store.read("scores").where((F.col("model_name") == model.name)
                                            & (F.col("model_version") == model.version))
                 .dropDuplicates(["content_sha256"])
                 .select("content_sha256", F.lit(True).alias("_known"), *[F.col(c).alias(f"_k_{c}") for c in _KEPT]))
        if roles is None:
            known = known.select("content_sha256", "_known")
    quarantine = store.read("quarantine")
    bad = (quarantine.where(F.col("source_ref").startswith(model.prefix)).select("content_sha256").distinct()
           .withColumn("_bad", F.lit(True)))
    if force:
        bad = bad.limit(0)
    status = (features.join(known, "content_sha256", "left").join(bad, "content_sha256", "left")
              .withColumn("_finite", _finite_all(names)))
    todo = status.where(F.col("_known").isNull() & F.col("_bad").isNull() & F.col("_finite"))

    scored_path = store.staging(commit.run_id, f"{tag}scored")
    outcome = write_counted(score_frame_spark(spark, settings, todo, model.bundle_dir, names, export_format, model.name),
                            scored_path, failed=F.count(F.when(~F.col("ok"), 1)))
    scored = spark.read.parquet(scored_path)

    totals = status.select(
        F.count(F.lit(1)).alias("rows"),
        F.count(F.when(F.col("_known"), 1)).alias("known"),
        F.count(F.when(F.col("_known").isNull() & F.col("_bad"), 1)).alias("known_bad"),
        F.count(F.when(F.col("_known").isNull() & F.col("_bad").isNull() & ~F.col("_finite"), 1))
        .alias("non_finite")).first()

    # model_name and model_version are the partition's directory names, not file columns.
    layout = file_layout("scores")
    new_rows = scored.where("ok")
    role = F.lit("served")
    if roles is not None:
        new_rows, role = new_rows.join(roles, "content_sha256"), F.col("role")
    score_rows = conform(new_rows, layout, export_format=F.lit(export_format), role=role,
                         feature_version=F.lit(model.feature_version), source=F.lit("batch"),
                         from_cache=F.lit(False))
    if roles is not None:
        carried = conform(status.where(F.col("_known")), layout, role=F.col("role"),
                          **{c: F.col(f"_k_{c}") for c in _KEPT})
        score_rows = score_rows.unionByName(carried)
    quarantine_files = file_layout("quarantine")
    source_ref = F.concat(F.lit(model.prefix), "content_sha256")
    non_finite = conform(
        status.where(F.col("_known").isNull() & F.col("_bad").isNull() & ~F.col("_finite")), quarantine_files,
        source_ref=source_ref, stage=F.lit("features"), reason_code=F.lit("non_finite_feature"),
        detail=F.lit("a stored feature is NaN or infinite"), seen_at_ms=F.lit(int(time.time() * 1000)))
    failed = conform(scored.where(~F.col("ok")), quarantine_files, source_ref=source_ref,
                     seen_at_ms=F.col("scored_at_ms"), feature_version=F.lit(model.feature_version))
    quarantine_rows = conform(
        non_finite.unionByName(failed)
        .join(quarantine.select("source_ref", "reason_code"), ["source_ref", "reason_code"], "left_anti"),
        quarantine_files)
    parallelism = spark.sparkContext.defaultParallelism
    staged_scores = store.staging(commit.run_id, f"{tag}out_scores")
    target = f"{partition}/run_id={commit.run_id}"
    n_scores = write_counted(score_rows.coalesce(max(1, parallelism)), staged_scores)["rows"]
    if n_scores:
        commit.moves.append((staged_scores, target))
    if force or roles is not None:
        # The partition is replaced: a plan run even when it keeps no row of the version.
        commit.replaces.append((partition, target))
    result = ScoreBackfillResult(
        run_id=commit.run_id, model_name=model.name, model_version=model.version, export_format=export_format,
        rows=int(totals["rows"]), scored=outcome["rows"] - outcome["failed"], known=int(totals["known"]),
        quarantined=int(totals["known_bad"]) + int(totals["non_finite"]) + outcome["failed"])
    if result.rows != result.scored + result.known + result.quarantined:
        raise PhotoscoreError(f"counts do not reconcile: {result}")
    return result, n_scores, quarantine_rows


def stage_quarantine(store: TableStore, commit: Commit, frames) -> int:
    """Stage the quarantine rows of a run (one partition per run, whatever it scored) into
    `commit`; returns how many."""
    staged = store.staging(commit.run_id, "out_quarantine")
    n_quarantine = write_counted(reduce(lambda a, b: a.unionByName(b), frames).coalesce(1), staged)["rows"]
    if n_quarantine:
        commit.moves.append((staged, f"{store.table('quarantine')}/run_id={commit.run_id}"))
    return n_quarantine


def run_score_backfill(spark, settings: Settings, model_uri: str, export_format: str, tables: str,
                       force: bool = False, run_id: str | None = None) -> ScoreBackfillResult:
    """Score every stored feature row of the model's feature version not yet scored by it."""
    from udfs.formats import get_format

    export_format = get_format(export_format).id  # unknown ids fail before any work; aliases warn
    store = TableStore(spark, tables)
    store.recover()
    model = resolve_model(settings, model_uri, export_format)
    features = features_of(store.read("features"), model, tables)
    commit = Commit(run_id or new_run_id())
    result, n_scores, failed = score_version(spark, settings, store, model, features, export_format, commit,
                                             force=force)
    n_quarantine = stage_quarantine(store, commit, [failed])
    store.commit(commit)
    store.write_report(commit.run_id, {"job": "scores", **asdict(result), "decoded": 0,
                                       "written": {"scores": n_scores, "quarantine": n_quarantine}})
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by spark-submit and `photoscore backfill scores`."""
    model_args.add_model_arguments(parser)
    parser.add_argument("--tables", default=None, metavar="ROOT", help="table root (default: config storage.tables)")
    parser.add_argument("--run-prefix", default=None, type=run_id_arg, metavar="PREFIX",
                        help="start the run's id with PREFIX- (then time and random, as always): an "
                             "orchestrator finds its runs' reports under TABLES/_runs by it")
    parser.add_argument("--force", action="store_true",
                        help="rescore identities already scored, replacing the version's rows atomically")
    parser.add_argument("--plan", action="store_true",
                        help="score per the registry's rollout plan of --model models:/NAME (default: every "
                             "model of scoring.models, else mlflow.model_name): the champion every content, the "
                             "challenger its shadow and canary arms, each row served or shadow (docs/spark.md)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backfill_scores.py", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    return parser


def main(argv: list[str] | None = None) -> int:
    """spark-submit entry point: prints the run and model line, (with --plan: the plan, arms and each
    version's counts,) then the final counts line."""
    from jobs.spark_session import get_session

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    settings = load_settings_or_exit("backfill scores", args.overrides)
    tables = args.tables or settings.resolve(settings.storage.tables)
    spark = get_session(settings.spark, "photoscore-backfill-scores")
    try:
        export = model_args.export_format(args, settings)
        run_id = new_run_id(args.run_prefix)
        if args.plan:
            from jobs.score_plan import plan_model_name, run_plan_backfill

            # Without --model: every model of scoring.models, each per its own plan, in one session
            # (one run, and one commit, per model).
            names = ([plan_model_name(args.model, settings)] if args.model
                     else settings.scoring.model_names(settings.mlflow))
            out = []
            for i, name in enumerate(names):
                planned = run_plan_backfill(spark, settings, name, export, tables, args.force,
                                            run_id if i == 0 else new_run_id(args.run_prefix))
                out += [f"run={planned.run_id} model={planned.model_name} format={export}", *planned.lines()]
        else:
            result = run_score_backfill(spark, settings, model_args.model_uri(args, settings), export, tables,
                                        args.force, run_id)
            out = [f"run={result.run_id} model={result.model_name}/{result.model_version} "
                   f"format={result.export_format}", result.line()]
    except PhotoscoreError as exc:
        print(f"backfill scores: {exc}", file=sys.stderr)
        return 1
    finally:
        spark.stop()
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
