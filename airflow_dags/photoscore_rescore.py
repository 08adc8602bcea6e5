"""photoscore_rescore: when `champion` changes (the lifecycle DAG's Asset event), score the whole
archive from stored features (no photo is decoded) per the model's rollout plan in the registry -
the new champion serves every content outside a canary, the versions outside the plan (the old
champion) keep their rows as shadow only - then reconcile (docs/spark.md "Scoring per the rollout
plan")."""
from __future__ import annotations

from airflow.sdk import DAG, Asset, Param

from jobs.orchestration import (champion_asset_uri, dag_arguments, dag_settings, reconcile_task, score_backfill,
                                scoring_params, tables_asset_uri)

settings = dag_settings()
CHAMPION = Asset(name="photoscore_champion", uri=champion_asset_uri(settings))
SCORES = Asset(name="photoscore_scores", uri=tables_asset_uri(settings, "scores"))
# The registered model alone: its plan names the versions that score (champion, challenger).
PARAMS = {**scoring_params(settings, "champion"),
          "model": Param(f"models:/{settings.mlflow.model_name}", type="string", pattern=r"^models:/[^/@]+$",
                         description="the registered model, scored per its rollout plan")}

with DAG(
    dag_id="photoscore_rescore",
    params=PARAMS,
    **dag_arguments(settings, "Rescore the archive from stored features per the registry's rollout plan", [CHAMPION]),
) as dag:
    score_backfill(settings, "photoscore-rescore", plan=True) >> reconcile_task(settings, outlets=[SCORES],
                                                                                no_decodes=True)
