"""The photoscore DAGs on a real Airflow: DagBag, `airflow dags test` end to end (real Spark
`local[2]`, real MLflow store), and one run through the real scheduler."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from jobs.airflow_supervisor import (COMPONENTS, DAGS_DIR, airflow_down, airflow_env, airflow_status,
                                     airflow_up, dags_test, run_airflow)
from jobs.config import load_settings
from jobs.reconcile import read_reports
from jobs.supervise import read_pid, wait_until
from models.lifecycle import alias_version

pytestmark = pytest.mark.integration

TESTS = Path(__file__).resolve().parent
MODEL = "photo_quality"
DAG_IDS = {"photoscore_backfill", "photoscore_model_lifecycle", "photoscore_monitor", "photoscore_rescore",
           "photoscore_stream_watch"}


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory, monkeypatch_module):
    """A PHOTOSCORE_HOME for this module's Airflow (its env is what `photoscore airflow` builds).

    Nothing runs on a schedule here (the test triggers what it runs), and the small corpus has as
    many broken files as a third of its photos, so the quarantine threshold is raised."""
    home = tmp_path_factory.mktemp("airflow_home")
    env = {"PHOTOSCORE_HOME": str(home), "PHOTOSCORE_AIRFLOW_BACKFILL_SCHEDULE": "",
           "PHOTOSCORE_AIRFLOW_STREAM_WATCH_SCHEDULE": "", "PHOTOSCORE_AIRFLOW_MAX_QUARANTINE_SHARE": "0.5",
           "PHOTOSCORE_AIRFLOW_TASK_RETRIES": "0", "PHOTOSCORE_SPARK_MASTER": "local[2]"}
    # An ambient MLFLOW_TRACKING_URI (a developer's shell) would win over this home's registry in
    # every task (the ecosystem variable outranks config).
    for key in [k for k in os.environ if k.startswith("PHOTOSCORE_") or k == "MLFLOW_TRACKING_URI"]:
        monkeypatch_module.delenv(key)
    for key, value in env.items():
        monkeypatch_module.setenv(key, value)
    return home


@pytest.fixture(scope="module")
def monkeypatch_module():
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


@pytest.fixture(scope="module")
def training_data(corpus_dir, corpus_features, airflow_home) -> dict[str, str]:
    out = airflow_home / "training"
    out.mkdir()
    corpus_features.to_parquet(out / "features.parquet")
    shutil.copy2(corpus_dir / "labels.parquet", out / "labels.parquet")
    return {"features": str(out / "features.parquet"), "labels": str(out / "labels.parquet")}


@pytest.fixture(scope="module")
def photos(corpus_dir, corpus_labels, airflow_home) -> list[str]:
    """Two inputs: a folder of corpus photos (with a duplicate) and the corpus's broken files."""
    out = airflow_home / "photos"
    out.mkdir()
    for path in sorted(corpus_labels["photo_id"])[:12]:
        shutil.copy2(path, out / Path(path).name)
    shutil.copy2(sorted(out.iterdir())[0], out / "copy_of_first.jpg")
    return [str(out), str(corpus_dir / "broken")]


def test_dagbag_has_every_dag_with_no_error_or_warning_and_parses_fast(airflow_home):
    settings = load_settings()
    out = subprocess.run([sys.executable, str(TESTS / "_dagbag_probe.py"), str(DAGS_DIR)],
                         env=airflow_env(settings), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    bag = json.loads(out.stdout.strip().splitlines()[-1])
    assert bag["errors"] == {} and bag["warnings"] == []
    assert set(bag["dags"]) == DAG_IDS
    assert set(bag["parse_cpu_s"]) == {f"{dag_id}.py" for dag_id in DAG_IDS}
    for name, seconds in bag["parse_cpu_s"].items():
        assert seconds < 1.0, (name, seconds)  # nothing heavy at the top of a DAG file
    backfill = bag["dags"]["photoscore_backfill"]
    assert set(backfill["params"]) == {"input", "tables", "model", "format"}
    assert backfill["tasks"]["backfill_features"]["type"] == "SparkSubmitOperator"
    assert backfill["tasks"]["backfill_scores"]["upstream"] == ["backfill_features"]
    assert backfill["tasks"]["reconcile"]["upstream"] == ["backfill_scores"]
    lifecycle = bag["dags"]["photoscore_model_lifecycle"]
    assert {"features", "labels", "name", "model_types", "approve"} <= set(lifecycle["params"])
    assert lifecycle["params"]["model_types"]["items"]["enum"] == ["xgboost", "lightgbm", "catboost", "logreg"]
    assert lifecycle["tasks"]["promote_champion"]["upstream"] == ["approval", "approved_by_param", "set_challenger"]
    assert lifecycle["tasks"]["set_challenger"]["upstream"] == ["challenger_won", "compare"]
    # The staged rollout: shadow -> canary 5 % -> canary 50 %, each set -> score (--plan) -> compare.
    assert {"tables", "format", "stage_wait_s"} <= set(lifecycle["params"])
    tasks = lifecycle["tasks"]
    assert tasks["rollout_route"]["upstream"] == ["set_challenger"]
    assert tasks["set_shadow"]["upstream"] == ["rollout_route", "set_challenger"]
    for before, stage in (("compare_shadow", "canary_5"), ("compare_canary_5", "canary_50")):
        assert tasks[f"set_{stage}"]["upstream"] == [before, "set_challenger"]
    for stage in ("shadow", "canary_5", "canary_50"):
        assert tasks[f"score_{stage}"]["type"] == "SparkSubmitOperator"
        assert tasks[f"score_{stage}"]["upstream"] == [f"set_{stage}"]
        assert tasks[f"compare_{stage}"]["upstream"] == [f"score_{stage}"] and tasks[f"compare_{stage}"]["retries"] == 0
    assert tasks["approval_route"]["upstream"] == ["compare_canary_50", "no_rollout"]
    assert tasks["no_rollout"]["upstream"] == ["rollout_route"]
    assert tasks["stop_rollout"]["upstream"] == sorted(f"{step}_{stage}" for stage in ("shadow", "canary_5", "canary_50")
                                                       for step in ("set", "score", "compare"))
    assert bag["dags"]["photoscore_rescore"]["tasks"]["reconcile"]["upstream"] == ["backfill_scores"]
    # The monitor: on its schedule or after the scores Asset; its retrain requests start the lifecycle.
    monitor = bag["dags"]["photoscore_monitor"]
    assert (monitor["timetable"], monitor["cron"], monitor["on_any_of"]) == ("AssetOrTimeSchedule", "0 0 * * *",
                                                                            ["photoscore_scores"])
    assert set(monitor["params"]) == {"tables", "model", "since"} and monitor["tasks"]["monitor"]["retries"] == 0
    retrain = monitor["tasks"]["request_retrain"]
    assert retrain["upstream"] == ["monitor"] and retrain["teardown"]  # the monitor task decides the run's state
    assert lifecycle["on_any_of"] == ["photoscore_labels", "photoscore_retrain_request"]
    for dag in bag["dags"].values():
        for task_id, task in dag["tasks"].items():
            assert task["backoff"], (task_id, "retries back off exponentially")
            if task["type"] != "ApprovalOperator":  # a person's answer waits on its response timeout
                assert task["timeout_s"] == settings.airflow.task_timeout_s, task_id


def _aliases(settings) -> dict[str, int | None]:
    return {alias: alias_version(settings, MODEL, alias) for alias in ("champion", "challenger")}


def test_lifecycle_registers_gates_compares_and_promotes(airflow_home, training_data):
    settings = load_settings()
    first = dags_test(settings, "photoscore_model_lifecycle",
                      {**training_data, "model_types": ["xgboost", "logreg"], "approve": True}, timeout_s=900)
    assert first.state == "success", first.states
    assert first.states["train[0]"] == first.states["train[1]"] == "success"
    assert first.states["approval"] == "skipped" and first.states["promote_champion"] == "success", first.states
    aliases = _aliases(settings)
    assert aliases["champion"] == aliases["challenger"] in (1, 2)  # no champion before: the best took both
    # A new version that cannot beat the champion by the margin: the run ends, no alias moves.
    second = dags_test(settings, "photoscore_model_lifecycle",
                       {**training_data, "model_types": ["logreg"], "margin": 1.0, "approve": True}, timeout_s=900)
    assert second.state == "success", second.states
    assert second.states["challenger_won"] == "success" and second.states["set_challenger"] == "skipped"
    assert second.states["promote_champion"] == "skipped"
    assert _aliases(settings) == aliases


def test_lifecycle_version_failing_its_gate_fails_the_run_and_moves_no_alias(airflow_home, training_data,
                                                                           monkeypatch):
    settings = load_settings()
    before = _aliases(settings)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS / "airflow_faults"), str(TESTS), str(TESTS.parent)]))
    outcome = dags_test(settings, "photoscore_model_lifecycle",
                        {**training_data, "model_types": ["xgboost"], "approve": True}, timeout_s=900)
    assert outcome.state == "failed" and outcome.states["train[0]"] == "failed", outcome.states
    assert outcome.states["promote_champion"] in ("upstream_failed", "skipped")
    assert _aliases(settings) == before


def _airflow_processes(home: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            if (proc.info["environ"] or {}).get("AIRFLOW_HOME") == str(home / "airflow"):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_backfill_dag_then_the_real_scheduler(airflow_home, photos, training_data):
    settings = load_settings()
    tables = str(airflow_home / "tables")
    if _aliases(settings)["champion"] is None:
        pytest.skip("needs the champion the lifecycle test promotes")
    conf = {"input": photos, "tables": tables, "format": "native"}
    outcome = dags_test(settings, "photoscore_backfill", conf, timeout_s=1200)
    assert outcome.state == "success", outcome.states
    reports = read_reports(tables, "af-")
    features = [r for r in reports if r["job"] == "features"]
    contents = {hashlib.sha256(path.read_bytes()).hexdigest() for path in Path(photos[0]).iterdir()}
    assert sum(r["featured"] for r in features) == 13  # every photo file, byte-identical copies too,
    assert len(pd.read_parquet(Path(tables) / "features")) == len(contents) < 13  # decoded once each
    assert sum(r["quarantined"] for r in features) == len(list(Path(photos[1]).iterdir()))
    scored = pd.read_parquet(Path(tables) / "scores")
    assert scored["content_sha256"].nunique() == len(scored) == len(contents)

    # The real scheduler: up, trigger the same backfill, wait for it, down leaves nothing behind.
    try:
        status = airflow_up(settings)
        assert status["running"] and status["url"].startswith("http://127.0.0.1:")
        for name in COMPONENTS:
            for conn in psutil.Process(read_pid(airflow_home / "airflow" / "run" / f"{name}.pid")).net_connections():
                if conn.status == psutil.CONN_LISTEN:
                    assert conn.laddr.ip in ("127.0.0.1", "::1"), (name, conn.laddr)
        run_id = f"photoscore-test-{time.time_ns()}"
        trigger = run_airflow(settings, ["dags", "trigger", "photoscore_backfill", "--conf", json.dumps(conf),
                                         "--run-id", run_id], timeout_s=300)
        assert trigger.returncode == 0, trigger.stderr[-2000:]

        def finished():
            out = run_airflow(settings, ["dags", "list-runs", "photoscore_backfill", "--output", "json"], timeout_s=120)
            runs = json.loads(out.stdout[out.stdout.index("["):]) if "[" in out.stdout else []
            state = next((r["state"] for r in runs if r["run_id"] == run_id), None)
            return state if state in ("success", "failed") else None

        assert wait_until(finished, 900, 5, what=f"photoscore_backfill run {run_id}") == "success"
        again = [r for r in read_reports(tables, "af-") if r not in reports]
        assert again and all(r["decoded"] == 0 for r in again)  # nothing new: nothing decoded
        assert sum(r["known"] for r in again if r["job"] == "features") == 13
    finally:
        airflow_down(settings)
    assert not airflow_status(settings)["running"]
    wait_until(lambda: not _airflow_processes(airflow_home), 60, 1, what="Airflow's processes to exit")
