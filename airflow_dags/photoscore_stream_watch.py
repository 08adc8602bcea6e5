"""photoscore_stream_watch: every few minutes, the stream job's state, newest checkpoint age and
consumer lag; a dead job meant to run is restarted from its newest checkpoint, and the run fails (so
it alerts) when the job was down, its checkpoint is stale or its lag is over the threshold."""
from __future__ import annotations

from airflow.sdk import DAG, Param, task

from jobs.orchestration import dag_arguments, dag_settings, schedule

settings = dag_settings()

with DAG(
    dag_id="photoscore_stream_watch",
    **dag_arguments(settings, "Watch the stream job; restart it from its newest checkpoint when it died",
                    schedule(settings.airflow.stream_watch_schedule)),
    params={
        "max_checkpoint_age_s": Param(settings.airflow.max_checkpoint_age_s, type="integer", minimum=1,
                                      description="fail when the newest checkpoint is older (s)"),
        "max_consumer_lag": Param(settings.airflow.max_consumer_lag, type="integer", minimum=0,
                                  description="fail when the job is further behind photos.uploaded"),
    },
) as dag:

    @task(retries=0)  # the next scheduled run is the retry
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
