"""photoscore_rescore: when `champion` changes (the lifecycle DAG's Asset event), score the whole
archive with the new champion from stored features (no photo is decoded), then reconcile."""
from __future__ import annotations

from airflow.sdk import DAG, Asset

from jobs.orchestration import (champion_asset_uri, dag_arguments, dag_settings, reconcile_task, score_backfill,
                                scoring_params, tables_asset_uri)

settings = dag_settings()
CHAMPION = Asset(name="photoscore_champion", uri=champion_asset_uri(settings))
SCORES = Asset(name="photoscore_scores", uri=tables_asset_uri(settings, "scores"))

with DAG(
    dag_id="photoscore_rescore",
    params=scoring_params(settings, "champion"),
    **dag_arguments(settings, "Rescore the archive from stored features with the new champion", [CHAMPION]),
) as dag:
    score_backfill(settings, "photoscore-rescore") >> reconcile_task(settings, outlets=[SCORES], no_decodes=True)
