"""photoscore_backfill: feature backfill of the photo roots -> score backfill with the champion ->
reconcile -> the feature and score tables' Assets.

Each backfill is the spark-submit job a person runs (`photoscore backfill features|scores`), submitted
with Airflow's SparkSubmitOperator over the Spark connection `photoscore airflow up` builds from
photoscore's `spark` section. A rerun with nothing new decodes nothing.
"""
from __future__ import annotations

from datetime import datetime

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Asset, Param, task

from jobs.orchestration import (JOBS_DIR, SCORES_PREFIX_ARGS, backfill_prefix, dag_settings, default_args,
                                reconcile_task, schedule, tables_asset_uri)
from jobs.spark_session import submit_conf

settings = dag_settings()
FEATURES = Asset(name="photoscore_features", uri=tables_asset_uri(settings, "features"))
SCORES = Asset(name="photoscore_scores", uri=tables_asset_uri(settings, "scores"))

with DAG(
    dag_id="photoscore_backfill",
    description="Backfill features and champion scores of the configured photo roots, then reconcile",
    schedule=schedule(settings.airflow.backfill_schedule),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(settings),
    user_defined_macros={"backfill_prefix": backfill_prefix},
    params={
        "input": Param(settings.storage.photo_roots, type="array", items={"type": "string"},
                       description="photo directories or manifests (.parquet/.csv/.txt) to backfill"),
        "tables": Param(settings.resolve(settings.storage.tables), type="string", minLength=1,
                        description="the table root"),
        "model": Param(f"models:/{settings.mlflow.model_name}@{settings.mlflow.alias}", type="string",
                       pattern=r"^models:/[^/@]+(@[^/@]+|/[0-9]+)$", description="the model that scores"),
        "format": Param(settings.scoring.format, type="string", minLength=1,
                        description="the export that scores"),
    },
    tags=["photoscore"],
) as dag:

    @task
    def feature_inputs(params=None, run_id=None) -> list[list[str]]:
        """One spark-submit argument list per input; none configured skips the run."""
        from airflow.sdk.exceptions import AirflowSkipException

        if not params["input"]:
            raise AirflowSkipException("no photo roots configured (storage.photo_roots or the `input` "
                                       "param): nothing to backfill")
        return [["--input", source, "--tables", params["tables"],
                 "--run-prefix", backfill_prefix(run_id, f"features-{index}")]
                for index, source in enumerate(params["input"])]

    features = SparkSubmitOperator.partial(
        task_id="backfill_features", application=str(JOBS_DIR / "backfill_features.py"),
        name="photoscore-backfill-features", conn_id=settings.airflow.spark_conn_id,
        conf=submit_conf(settings.spark), max_active_tis_per_dag=1,
    ).expand(application_args=feature_inputs())

    scores = SparkSubmitOperator(
        task_id="backfill_scores", application=str(JOBS_DIR / "backfill_scores.py"),
        name="photoscore-backfill-scores", conn_id=settings.airflow.spark_conn_id,
        conf=submit_conf(settings.spark),
        application_args=["--model", "{{ params.model }}", "--format", "{{ params.format }}",
                          "--tables", "{{ params.tables }}", *SCORES_PREFIX_ARGS],
    )

    reconcile = reconcile_task(settings, outlets=[FEATURES, SCORES])

    features >> scores >> reconcile
