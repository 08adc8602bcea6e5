"""photoscore_monitor end to end with `airflow dags test`: over tables the Spark backfills wrote,
the corpus photos as they are pass; the same photos darkened by a fixed gamma fail the run naming
the drifted features; the second alarm in a row (monitor.alarms_before_retrain = 2 here) updates the
retrain-request Asset the lifecycle DAG runs on."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from _spark_fixtures import home_config
from jobs.airflow_supervisor import airflow_home, dags_test
from jobs.backfill_features import run_feature_backfill
from jobs.backfill_scores import run_score_backfill
from jobs.config import load_settings
from jobs.demo_monitor import gamma_darkened
from jobs.orchestration import retrain_asset_uri

pytestmark = pytest.mark.integration
MODEL = "models:/photo_quality@champion"
DAG_ID = "photoscore_monitor"


@pytest.fixture(scope="module")
def monitor_home(tmp_path_factory, spark_model_home):
    """A PHOTOSCORE_HOME of its own (Airflow, monitor reports) over the registry of
    spark_model_home (photo_quality@champion, trained on the corpus)."""
    home = tmp_path_factory.mktemp("airflow_monitor_home")
    patch = pytest.MonkeyPatch()
    # An ambient MLFLOW_TRACKING_URI (a developer's shell) outranks config: this home's registry must win.
    for key in [k for k in os.environ if k.startswith("PHOTOSCORE_") or k == "MLFLOW_TRACKING_URI"]:
        patch.delenv(key)
    for key, value in {"PHOTOSCORE_HOME": str(home), "PHOTOSCORE_AIRFLOW_TASK_RETRIES": "0",
                       "PHOTOSCORE_MLFLOW_TRACKING_URI": home_config(spark_model_home).tracking_uri,
                       "PHOTOSCORE_MONITOR_MIN_ROWS": "30", "PHOTOSCORE_MONITOR_ALARMS_BEFORE_RETRAIN": "2"}.items():
        patch.setenv(key, value)
    yield home
    patch.undo()


@pytest.fixture(scope="module")
def tables(spark, monitor_home, corpus_labels) -> dict[str, str]:
    """{"since", "clean", "dark"}: feature and score tables of the corpus photos as they are and
    darkened, written by the Spark backfills after `since`."""
    since = datetime.now(timezone.utc).isoformat()
    photos = monitor_home / "photos"
    settings = load_settings().updated(storage={"photo_roots": [str(photos)]})
    out = {"since": since}
    for kind in ("clean", "dark"):
        (photos / kind).mkdir(parents=True)
        for photo in corpus_labels["photo_id"]:
            target = photos / kind / Path(photo).name
            if kind == "clean":
                shutil.copy2(photo, target)
            else:
                target.write_bytes(gamma_darkened(photo))
        out[kind] = str(monitor_home / f"tables_{kind}")
        run_feature_backfill(spark, settings, str(photos / kind), out[kind])
        run_score_backfill(spark, settings, MODEL, "onnx", out[kind])
    return out


def _retrain_events(settings) -> list[dict]:
    with sqlite3.connect(airflow_home(settings) / "airflow.db") as db:
        rows = db.execute("SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ?",
                          (retrain_asset_uri(settings),)).fetchall()
    return [json.loads(extra) if isinstance(extra, str) else extra for (extra,) in rows]


def test_quiet_tables_pass_and_repeated_alarms_fail_then_request_a_retrain(monitor_home, tables, capfd):
    """`airflow dags test` streams the task logs to this process's output (captured by capfd)."""
    settings = load_settings()
    quiet = dags_test(settings, DAG_ID, {"tables": tables["clean"], "since": tables["since"]}, timeout_s=900)
    assert quiet.state == "success", quiet.states
    assert quiet.states == {"monitor": "success", "request_retrain": "skipped"}
    out = capfd.readouterr().out
    assert f"{MODEL} (version 1, feature version" in out and "QUIET over" in out  # the monitor's summary

    first = dags_test(settings, DAG_ID, {"tables": tables["dark"], "since": tables["since"]}, timeout_s=900)
    assert first.state == "failed" and first.states == {"monitor": "failed", "request_retrain": "skipped"}, first.states
    log = capfd.readouterr().out
    assert f"drift alarm on {MODEL}: feature " in log and "mean_luma" in log, log[-3000:]
    assert "ALARM mean_luma" in log and "report: " in log  # the monitor's summary, with the report's path
    assert "1 alarmed monitor run(s) of photo_quality in a row" in log
    assert _retrain_events(settings) == []

    second = dags_test(settings, DAG_ID, {"tables": tables["dark"], "since": tables["since"]}, timeout_s=900)
    assert second.state == "failed", second.states  # the alarm still fails the run ...
    assert second.states == {"monitor": "failed", "request_retrain": "success"}  # ... and a retrain is requested
    assert _retrain_events(settings) == [{"model": "photo_quality", "alarmed_runs": 2}]
