"""photoscore_backfill: feature backfill of the photo roots -> score backfill with the champion ->
reconcile -> the feature and score tables' Assets.

Each backfill is the spark-submit job a person runs (`photoscore backfill features|scores`), submitted
with Airflow's SparkSubmitOperator over the Spark connection `photoscore airflow up` builds from
photoscore's `spark` section. A rerun with nothing new decodes nothing.
"""
from __future__ import annotations

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Asset, Param, task

from jobs.orchestration import (JOBS_DIR, backfill_prefix, dag_arguments, dag_settings, reconcile_task,
                                schedule, score_backfill, scoring_params, tables_asset_uri)
from jobs.spark_session import submit_conf

settings = dag_settings()
FEATURES = Asset(name="photoscore_features", uri=tables_asset_uri(settings, "features"))
SCORES = Asset(name="photoscore_scores", uri=tables_asset_uri(settings, "scores"))

with DAG(
    dag_id="photoscore_backfill",
    params={
        "input": Param(settings.storage.photo_roots, type="array", items={"type": "string"},
                       description="photo directories or manifests (.parquet/.csv/.txt) to backfill"),
        **scoring_params(settings, settings.mlflow.alias),
    },
    **dag_arguments(settings, "Backfill features and champion scores of the configured photo roots, "
                    "then reconcile", schedule(settings.airflow.backfill_schedule)),
) as dag:

    @task
    def feature_inputs(params=None, run_id=None) -> list[list[str]]:
        """One spark-submit argument list per input; none configured skips the run."""
        from airflow.sdk.exceptions import AirflowSkipException

        if not params["input"]:
            raise AirflowSkipException("no photo roots configured (storage.photo_roots or the `input` "
                                       "param): nothing to backfill")
        # --model: the features computed are of the version the model that scores next was trained on.
        return [["--input", source, "--tables", params["tables"], "--model", params["model"],
                 "--run-prefix", backfill_prefix(run_id, f"features-{index}")]
                for index, source in enumerate(params["input"])]

    features = SparkSubmitOperator.partial(
        task_id="backfill_features", application=str(JOBS_DIR / "backfill_features.py"),
        name="photoscore-backfill-features", conn_id=settings.airflow.spark_conn_id,
        conf=submit_conf(settings.spark), max_active_tis_per_dag=1,
    ).expand(application_args=feature_inputs())

    scores = score_backfill(settings, "photoscore-backfill-scores")

    reconcile = reconcile_task(settings, outlets=[FEATURES, SCORES])

    features >> scores >> reconcile
