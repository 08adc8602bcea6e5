"""The score backfill per a registered model's rollout plan (`backfill scores --plan`): one pass
over the stored features scores every content by the champion and the contents of the shadow and
canary arms by the challenger, each row with its role, and leaves the score table's served view
(`scores_served`) holding exactly one row per (content, model): the version the plan serves it.

A content's arm comes from `udfs.rollout.assignments` itself, called in a pandas UDF on
`content_sha256` (udfs/spark_udfs.rollout_arms), so the batch and the stream cannot disagree.

The run commits atomically (jobs/spark_tables.py): the partition of each version of the plan is
replaced by exactly the rows the plan gives it (rows it already had are rewritten with their new
role from their stored score, not scored again), and every other version of the model that still
has rows saying `served` (or no role: files from before roles) is rewritten as `shadow`. So a plan
change (a larger canary, a promotion, a rollback) followed by a `--plan` run moves the served rows
with it, and no version outside the plan can ever be read as served.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from jobs.backfill_scores import (ScoreBackfillResult, features_of, resolve_model, score_partition_path,
                                  score_version, stage_quarantine)
from jobs.spark_tables import Commit, TableStore, conform, file_layout, new_run_id, write_counted
from udfs.errors import PhotoscoreError
from udfs.settings import Settings


@dataclass(frozen=True)
class PlanBackfillResult:
    """A `--plan` run: the plan it followed, contents per arm, each plan version's counts (rows =
    scored + known + quarantined), and the rows of other versions rewritten as shadow."""

    run_id: str
    model_name: str
    plan: str
    arms: dict[str, int]
    versions: tuple[ScoreBackfillResult, ...]
    demoted: dict[int, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """One line per version, the demoted rows, then the totals (the job's last line)."""
        out = [f"plan {self.plan}", "arms " + " ".join(f"{k}={v}" for k, v in sorted(self.arms.items()))]
        out += [f"version={r.model_version} {r.line()}" for r in self.versions]
        out += [f"version={v} demoted_to_shadow={n}" for v, n in sorted(self.demoted.items())]
        totals = {k: sum(getattr(r, k) for r in self.versions) for k in ("rows", "scored", "known", "quarantined")}
        return out + [" ".join(f"{k}={v}" for k, v in totals.items())]


def plan_model_name(model_uri: str | None, settings: Settings) -> str:
    """The registered model a `--plan` run follows: `models:/NAME` (the plan names the versions),
    default `mlflow.model_name`."""
    if model_uri is None:
        return settings.mlflow.model_name
    name = model_uri.removeprefix("models:/")
    if not model_uri.startswith("models:/") or not name or any(c in name for c in "/@"):
        raise PhotoscoreError(f"--model {model_uri}: a --plan run scores the versions the registry's plan names; "
                              f"give the registered model alone, models:/NAME")
    return name


def with_arms(spark, frame, plan):
    """`frame` plus `_arm`, a struct (udfs/spark_udfs.ARMS) of each content's arm and the versions
    serving and shadow-scoring it, from `udfs.rollout.assignments`."""
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    from udfs.spark_udfs import ARMS, rollout_arms, spark_schema

    arms = pandas_udf(rollout_arms(plan), spark_schema(ARMS))
    return frame.withColumn("_arm", arms(F.col("content_sha256")))


def roles_of(frame, version: int):
    """The rows of `frame` (with `_arm`) that `version` scores, with their `role`."""
    from pyspark.sql import functions as F

    role = (F.when(F.col("_arm.served_version") == version, F.lit("served"))
            .when(F.col("_arm.shadow_version") == version, F.lit("shadow")))
    return frame.withColumn("role", role).where(F.col("role").isNotNull())


def demote_others(spark, store: TableStore, name: str, keep: tuple[int, ...], commit: Commit) -> dict[int, int]:
    """Stage, for every version of `name` outside `keep` that has a row saying served (or no
    role), its partition rewritten with every row `shadow`; returns {version: rows rewritten}."""
    from pyspark.sql import functions as F

    scores = store.read("scores").where(F.col("model_name") == name)
    served = F.col("role").isNull() | (F.col("role") == "served")
    stale = sorted(int(r[0]) for r in scores.where(served & ~F.col("model_version").isin(list(keep)))
                   .select("model_version").distinct().collect())
    demoted = {}
    for version in stale:
        staged = store.staging(commit.run_id, f"v{version}-demoted")
        rows = conform(scores.where(F.col("model_version") == version), file_layout("scores"), role=F.lit("shadow"))
        demoted[version] = write_counted(rows, staged)["rows"]
        partition = score_partition_path(store, name, version)
        target = f"{partition}/run_id={commit.run_id}"
        commit.moves.append((staged, target))
        commit.replaces.append((partition, target))
    return demoted


def run_plan_backfill(spark, settings: Settings, model_name: str, export_format: str, tables: str,
                      force: bool = False, run_id: str | None = None) -> PlanBackfillResult:
    """Score the stored features per `model_name`'s rollout plan in the registry and commit the
    served/shadow rows of every version of the model atomically (module docstring)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from models.rollouts import read_plan
    from udfs.formats import get_format

    export_format = get_format(export_format).id
    plan = read_plan(settings, model_name)
    if plan.champion is None:
        raise PhotoscoreError(f"{model_name!r} has no champion, so its plan serves nothing: promote one first "
                              f"(photoscore promote --name {model_name} --version N --alias champion)")
    models = [resolve_model(settings, f"models:/{model_name}/{v}", export_format) for v in plan.versions]
    store = TableStore(spark, tables)
    store.recover()
    commit = Commit(run_id or new_run_id())
    # The stored features are read once: kept (with each content's arm) while every version scores.
    stored = with_arms(spark, store.read("features"), plan).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        results, written, failed = [], {}, []
        for model in models:
            features = roles_of(features_of(stored, model, tables), model.version)
            result, n_scores, quarantine_rows = score_version(
                spark, settings, store, model, features, export_format, commit, force=force,
                roles=features.select("content_sha256", "role"))
            results.append(result)
            written[model.version] = n_scores
            failed.append(quarantine_rows)
        n_quarantine = stage_quarantine(store, commit, failed)
        arms = {r["arm"]: int(r["n"]) for r in stored.dropDuplicates(["content_sha256"])
                .groupBy(F.col("_arm.arm").alias("arm")).agg(F.count(F.lit(1)).alias("n")).collect()}
    finally:
        stored.unpersist()
    demoted = demote_others(spark, store, model_name, plan.versions, commit)
    store.commit(commit)
    result = PlanBackfillResult(commit.run_id, model_name, plan.describe(), arms, tuple(results), demoted)
    store.write_report(commit.run_id, {
        "job": "scores_plan", "run_id": commit.run_id, "model_name": model_name, "plan": result.plan,
        "arms": arms, "decoded": 0, "demoted": {str(v): n for v, n in demoted.items()},
        "versions": [{**asdict(r), "written": {"scores": written[r.model_version]}} for r in results],
        "written": {"quarantine": n_quarantine}})
    return result
