"""photoscore_rescore: when `champion` changes (the lifecycle DAG's Asset event), score the whole
archive with the new champion from stored features (no photo is decoded), then reconcile."""
from __future__ import annotations

from datetime import datetime

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Asset, Param

from jobs.orchestration import (JOBS_DIR, SCORES_PREFIX_ARGS, backfill_prefix, champion_asset_uri, dag_settings,
                                default_args, reconcile_task, tables_asset_uri)
from jobs.spark_session import submit_conf

settings = dag_settings()
CHAMPION = Asset(name="photoscore_champion", uri=champion_asset_uri(settings))
SCORES = Asset(name="photoscore_scores", uri=tables_asset_uri(settings, "scores"))

with DAG(
    dag_id="photoscore_rescore",
    description="Rescore the archive from stored features with the new champion",
    schedule=[CHAMPION],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(settings),
    user_defined_macros={"backfill_prefix": backfill_prefix},
    params={
        "tables": Param(settings.resolve(settings.storage.tables), type="string", minLength=1,
                        description="the table root"),
        "model": Param(f"models:/{settings.mlflow.model_name}@champion", type="string",
                       pattern=r"^models:/[^/@]+(@[^/@]+|/[0-9]+)$", description="the model that scores"),
        "format": Param(settings.scoring.format, type="string", minLength=1,
                        description="the export that scores"),
    },
    tags=["photoscore"],
) as dag:
    scores = SparkSubmitOperator(
        task_id="backfill_scores", application=str(JOBS_DIR / "backfill_scores.py"),
        name="photoscore-rescore", conn_id=settings.airflow.spark_conn_id, conf=submit_conf(settings.spark),
        application_args=["--model", "{{ params.model }}", "--format", "{{ params.format }}",
                          "--tables", "{{ params.tables }}", *SCORES_PREFIX_ARGS],
    )
    scores >> reconcile_task(settings, outlets=[SCORES], no_decodes=True)
