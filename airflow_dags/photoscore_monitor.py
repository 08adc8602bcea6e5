"""photoscore_monitor: drift of the newest tables against the champion's reference profile
(`photoscore monitor`, jobs/monitor.py), on `monitor.schedule` and after every event of the scores
Asset (each backfill, each rescore). An alarm fails the run, its reason naming what drifted (the
features by name) and the task log holding the monitor's full summary and the report's path. After
`monitor.alarms_before_retrain` alarmed runs in a row the retrain-request Asset is updated, and the
lifecycle DAG (scheduled on it as on new labels) trains a new version.
"""
from __future__ import annotations

from airflow.sdk import DAG, Asset, Param, task

from jobs.orchestration import (dag_arguments, dag_settings, drift_alarm_reason, retrain_asset_uri, scoring_params,
                                tables_asset_uri, time_or_assets)

settings = dag_settings()
SCORES = Asset(name="photoscore_scores", uri=tables_asset_uri(settings, "scores"))
RETRAIN = Asset(name="photoscore_retrain_request", uri=retrain_asset_uri(settings))
PARAMS = scoring_params(settings, "champion")

with DAG(
    dag_id="photoscore_monitor",
    params={
        "tables": PARAMS["tables"], "model": PARAMS["model"],
        "since": Param("", type="string",
                       description="the window's start: an ISO time or a span ago (30m, 1d); "
                                   f"empty: monitor.window ({settings.monitor.window})"),
    },
    **dag_arguments(settings, "Drift of the newest tables against the champion's reference profile; "
                    "a retrain request after repeated alarms", time_or_assets(settings.monitor.schedule, [SCORES])),
) as dag:

    @task(retries=0)  # an alarm is a verdict, not a transient error
    def monitor(params=None, ti=None) -> dict:
        """Run the monitor; fail on an alarm, naming what drifted."""
        from airflow.sdk.exceptions import AirflowFailException

        from jobs.monitor import run_monitor

        result = run_monitor(dag_settings(), params["model"], tables=params["tables"], since=params["since"] or None)
        for line in result.lines:
            print(line)
        ti.xcom_push(key="verdict", value=result.verdict)  # request_retrain reads it after a failure too
        if result.exit_code:
            raise AirflowFailException(drift_alarm_reason(params["model"], result.alarms))
        return {"verdict": result.verdict, "report": str(result.report_path)}

    # A teardown, so that it runs after an alarm (the monitor task failed) without deciding the run's
    # state: the monitor task stays the run's leaf, and an alarm fails the run.
    @task(outlets=[RETRAIN])
    def request_retrain(params=None, ti=None, outlet_events=None) -> dict:
        """Update the retrain-request Asset when the newest monitor runs alarmed often enough in a row."""
        from airflow.sdk.exceptions import AirflowSkipException

        from jobs.monitor import alarm_streak
        from models.registry import parse_model_uri

        if ti.xcom_pull(task_ids="monitor", key="verdict") != "alarm":
            raise AirflowSkipException("no alarm: no retrain request")
        settings_now = dag_settings()
        name = parse_model_uri(params["model"])[0]
        streak, needed = alarm_streak(settings_now, name), settings_now.monitor.alarms_before_retrain
        if streak < needed:
            raise AirflowSkipException(f"{streak} alarmed monitor run(s) of {name} in a row; "
                                       f"{needed} request a retrain (monitor.alarms_before_retrain)")
        print(f"{streak} alarmed monitor runs of {name} in a row: retrain requested")
        outlet_events[RETRAIN].extra = {"model": name, "alarmed_runs": streak}
        return {"model": name, "alarmed_runs": streak}

    monitor() >> request_retrain().as_teardown()
