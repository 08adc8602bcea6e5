"""photoscore_stream_watch: every few minutes, the stream job's state, newest checkpoint age and
consumer lag; a dead job meant to run is restarted from its newest checkpoint, and the run fails (so
it alerts) when the job was down, its checkpoint is stale or its lag is over the threshold."""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, task

from jobs.orchestration import dag_settings, default_args, schedule

settings = dag_settings()

with DAG(
    dag_id="photoscore_stream_watch",
    description="Watch the stream job; restart it from its newest checkpoint when it died",
    schedule=schedule(settings.airflow.stream_watch_schedule),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={**default_args(settings), "retries": 0},  # the next run is the retry
    params={
        "max_checkpoint_age_s": Param(settings.airflow.max_checkpoint_age_s, type="integer", minimum=1,
                                      description="fail when the newest checkpoint is older (s)"),
        "max_consumer_lag": Param(settings.airflow.max_consumer_lag, type="integer", minimum=0,
                                  description="fail when the job is further behind photos.uploaded"),
    },
    tags=["photoscore"],
) as dag:

    @task
    def watch(params=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from jobs.stream_watch import watch_stream

        health = watch_stream(dag_settings(), params["max_checkpoint_age_s"], params["max_consumer_lag"])
        for line in health.lines + health.problems:
            print(line)
        if not health.ok:
            raise AirflowFailException("; ".join(health.problems))
        return {"restarted": health.restarted, "lines": health.lines}

    watch()
