"""What the DAGs in airflow_dags/ share: photoscore's settings at parse time, the task defaults,
run ids that name each task attempt's backfill run, and the Assets the DAGs exchange.

Kept light on purpose: a DAG file imports this at parse time (pydantic and YAML, nothing that
loads Spark, MLflow or OpenCV); the tasks import the heavy parts when they run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from jobs.config import load_settings
from udfs.settings import Settings

REPO = Path(__file__).resolve().parents[1]
JOBS_DIR = REPO / "jobs"


def dag_settings() -> Settings:
    """photoscore's settings as the dag-processor and the tasks see them (PHOTOSCORE_* env)."""
    return load_settings()


def default_args(settings: Settings) -> dict:
    """Every task: retries with exponential backoff and an execution timeout, from config."""
    return {
        "owner": "photoscore",
        "retries": settings.airflow.task_retries,
        "retry_delay": timedelta(seconds=20),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(seconds=settings.airflow.task_timeout_s),
    }


def schedule(expression: str) -> str | None:
    """A cron/preset from config; "" means on demand only."""
    return expression or None


def run_prefix(dag_run_id: str) -> str:
    """The prefix of every backfill run id one DAG run starts (a safe directory name)."""
    return "af-" + re.sub(r"[^A-Za-z0-9]+", "-", dag_run_id).strip("-")


def backfill_prefix(dag_run_id: str, step: str) -> str:
    """The `--run-prefix` of one backfill step of a DAG run (each attempt adds time + random)."""
    return f"{run_prefix(dag_run_id)}-{step}"


def latest_attempts(reports: list[dict]) -> list[dict]:
    """One report per step: the last attempt's (a retry is a new run, never a rewrite)."""
    latest: dict[str, dict] = {}
    for report in reports:
        step = report["run_id"].rsplit("-", 2)[0]  # drop new_run_id's time and random parts
        if step not in latest or report["run_id"] > latest[step]["run_id"]:
            latest[step] = report
    return sorted(latest.values(), key=lambda report: report["run_id"])


def tables_asset_uri(settings: Settings, table: str) -> str:
    """The Asset URI of one table under `storage.tables` (file:// for a local root)."""
    root = settings.resolve(settings.storage.tables)
    return f"{root.rstrip('/')}/{table}" if "://" in root else Path(root, table).as_uri()


def champion_asset_uri(settings: Settings) -> str:
    """The Asset the lifecycle DAG updates when `champion` moves; the rescore DAG runs on it."""
    return f"photoscore://models/{settings.mlflow.model_name}/champion"


def retrain_asset_uri(settings: Settings) -> str:
    """The Asset photoscore_monitor updates after `monitor.alarms_before_retrain` alarmed runs in a
    row; the lifecycle DAG runs on it as on new labels."""
    return f"photoscore://models/{settings.mlflow.model_name}/retrain-request"


def time_or_assets(expression: str, assets: list):
    """A schedule of a cron/preset from config OR any event of `assets`; "" means the assets alone."""
    if not expression:
        return assets
    from airflow.sdk import AssetAny, AssetOrTimeSchedule, CronTriggerTimetable

    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(expression, timezone="UTC"), assets=AssetAny(*assets))


def drift_alarm_reason(model_uri: str, alarms: list[dict]) -> str:
    """A failed monitor task's one-line reason: what alarmed, by kind (the drifted features by name)."""
    by_kind: dict[str, list[str]] = {}
    for alarm in alarms:
        by_kind.setdefault(alarm["kind"], []).append(alarm["name"])
    parts = [kind if names == [kind] else f"{kind} {', '.join(names)}" for kind, names in by_kind.items()]
    return f"drift alarm on {model_uri}: " + "; ".join(parts)


def labels_asset_uri(settings: Settings) -> str:
    """The Asset whose events start the lifecycle DAG: new labels for the configured model."""
    labels = settings.airflow.lifecycle_labels
    if labels:
        resolved = settings.resolve(labels)
        return resolved if "://" in resolved else Path(resolved).as_uri()
    return f"photoscore://labels/{settings.mlflow.model_name}"


# spark-submit arguments naming a step's runs (rendered by Airflow: `backfill_prefix` is a user
# macro of the DAGs that submit backfills).
SCORES_PREFIX_ARGS = ["--run-prefix", "{{ backfill_prefix(run_id, 'scores') }}"]


def reconcile_task(settings: Settings, outlets: list, no_decodes: bool = False):
    """The task that reconciles this DAG run's backfills from their reports and, when they
    reconcile, updates `outlets`; it fails (no retry: the data will not change) naming the problems
    and the top quarantine reasons. `no_decodes`: a rescore must not have decoded any photo."""
    from airflow.sdk import task

    @task(task_id="reconcile", outlets=outlets, retries=0)
    def reconcile(params=None, run_id=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from jobs.reconcile import read_reports
        from jobs.reconcile import reconcile as check

        reports = latest_attempts(read_reports(params["tables"], run_prefix(run_id)))
        verdict = check(params["tables"], reports, dag_settings().airflow.max_quarantine_share)
        for line in verdict.lines:
            print(line)
        decoded = sum(report.get("decoded", 0) for report in reports)
        if not reports:
            verdict.problems.append(f"no backfill of this DAG run ({run_prefix(run_id)}*) reported to "
                                    f"{params['tables']}/_runs")
        if no_decodes and decoded:
            verdict.problems.append(f"a rescore from stored features decoded {decoded} photos")
        if not verdict.ok:
            raise AirflowFailException("backfill does not reconcile: " + "; ".join(verdict.problems))
        return {"runs": [report["run_id"] for report in reports], "decoded": decoded}

    return reconcile()


@dataclass(frozen=True)
class RolloutStage:
    """One step of the staged rollout a new challenger goes through before approval: the shares
    the registry's plan is set to, then a comparison with the champion that must pass."""

    name: str
    shadow_percent: float
    canary_percent: float

    def why(self, run: str) -> str:
        return f"lifecycle stage {self.name} ({run})"


# Shadow first (the challenger scores everything, serves nothing), then a small and a large canary.
# The shadow share stays 100 %, so every stage compares the challenger on every content.
ROLLOUT_STAGES = (RolloutStage("shadow", 100.0, 0.0), RolloutStage("canary_5", 100.0, 5.0),
                  RolloutStage("canary_50", 100.0, 50.0))


def dag_arguments(settings: Settings, description: str, schedule_on) -> dict:
    """What every photoscore DAG is declared with besides its id and params."""
    from datetime import datetime

    return {"description": description, "schedule": schedule_on, "start_date": datetime(2026, 1, 1),
            "catchup": False, "max_active_runs": 1, "default_args": default_args(settings),
            "tags": ["photoscore"], "user_defined_macros": {"backfill_prefix": backfill_prefix}}


def scoring_params(settings: Settings, alias: str) -> dict:
    """The params of a DAG that scores the archive: the table root, the model, the export."""
    from airflow.sdk import Param

    return {
        "tables": Param(settings.resolve(settings.storage.tables), type="string", minLength=1,
                        description="the table root"),
        "model": Param(f"models:/{settings.mlflow.model_name}@{alias}", type="string",
                       pattern=r"^models:/[^/@]+(@[^/@]+|/[0-9]+)$", description="the model that scores"),
        "format": Param(settings.scoring.format, type="string", minLength=1,
                        description="the export that scores"),
    }


def _scores_submit(settings: Settings, task_id: str, name: str, model_args: list[str], prefix_args: list[str]):
    """jobs/backfill_scores.py through spark-submit over the Spark connection, with the run's params."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    from jobs.spark_session import submit_conf

    return SparkSubmitOperator(
        task_id=task_id, application=str(JOBS_DIR / "backfill_scores.py"), name=name,
        conn_id=settings.airflow.spark_conn_id, conf=submit_conf(settings.spark),
        application_args=[*model_args, "--format", "{{ params.format }}", "--tables", "{{ params.tables }}",
                          *prefix_args],
    )


def score_backfill(settings: Settings, name: str, plan: bool = False):
    """The score backfill step: jobs/backfill_scores.py through spark-submit, with the run's params
    (`plan`: the model, models:/NAME, scored per its rollout plan in the registry)."""
    return _scores_submit(settings, "backfill_scores", name,
                          ["--model", "{{ params.model }}", *(["--plan"] if plan else [])], SCORES_PREFIX_ARGS)


def plan_scores_args(stage: str) -> tuple[list[str], list[str]]:
    """The model and run-prefix arguments of a rollout stage's score backfill: every version the
    registry's plan of `params.name` scores (`--plan`), its runs named after the stage."""
    return (["--model", "models:/{{ params.name }}", "--plan"],
            ["--run-prefix", "{{ backfill_prefix(run_id, 'scores-%s') }}" % stage])


def plan_score_backfill(settings: Settings, stage: str):
    """A rollout stage's score backfill (`photoscore backfill scores --model models:/N --plan`): the
    champion and the challenger score the archive's contents per the plan, from stored features."""
    model_args, prefix_args = plan_scores_args(stage)
    return _scores_submit(settings, f"score_{stage}", f"photoscore-rollout-{stage}", model_args, prefix_args)


def dag_actor(dag_id: str, run_id: str) -> str:
    """Who acts in the audit trail when a DAG run moves an alias or a rollout."""
    return f"airflow:{dag_id}/{run_id}"
