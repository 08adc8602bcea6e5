"""What the Airflow DAGs rely on, as pure functions: run naming, reconcile, the lifecycle's
decisions, the embedded Airflow's environment, the stream watch's rules."""
from __future__ import annotations

import json
import math
import stat

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.airflow_supervisor import REPO, admin_password, airflow_env, spark_connection
from jobs.config import load_settings
from jobs.orchestration import backfill_prefix, drift_alarm_reason, latest_attempts, run_prefix
from jobs.reconcile import reconcile
from jobs.spark_tables import new_run_id, run_id_arg
from jobs.stream_watch import watch_stream
from models.lifecycle import Measured, beats_champion, pick_best


def test_run_names_are_safe_and_the_last_attempt_of_each_step_wins():
    prefix = run_prefix("manual__2026-12-01T04:31:19.522482+00:00")
    assert prefix == "af-manual-2026-12-01T04-31-19-522482-00-00"
    assert run_id_arg(backfill_prefix("scheduled__2026-12-01T00:00:00+00:00", "features-0"))
    first = new_run_id(backfill_prefix("r", "features-0"))
    reports = [{"run_id": "af-r-features-0-20261201T040000Z-aaaaaaaa"},   # failed attempt 1
               {"run_id": "af-r-features-0-20261201T040500Z-bbbbbbbb"},   # retry: the one that counts
               {"run_id": "af-r-features-1-20261201T040100Z-cccccccc"},
               {"run_id": "af-r-scores-20261201T040700Z-dddddddd"}]
    assert [r["run_id"][-8:] for r in latest_attempts(reports)] == ["bbbbbbbb", "cccccccc", "dddddddd"]
    assert first.startswith("af-r-features-0-")
    with pytest.raises(Exception, match="run id prefix"):
        run_id_arg("../escape")


def _commit(tables, table: str, run_id: str, rows: int, model: tuple[str, int] | None = None) -> None:
    part = tables / table
    if model:
        part = part / f"model_name={model[0]}" / f"model_version={model[1]}"
    part = part / f"run_id={run_id}"
    part.mkdir(parents=True)
    pq.write_table(pa.table({"x": list(range(rows))}), part / "part-0.parquet")


def _feature_report(run_id: str, featured: int, bad: int, known: int = 0) -> dict:
    return {"job": "features", "run_id": run_id, "inputs": featured + bad + known, "featured": featured,
            "quarantined": bad, "known": known, "decoded": featured + bad,
            "outcomes": {"featured": featured, "known": known, "read_failed": 1 if bad else 0,
                         "known_bad": 0, "failed": bad - (1 if bad else 0)},
            "quarantine_reasons": {"not_an_image": max(0, bad - 1), "unreadable_uri": 1 if bad else 0},
            "written": {"features": featured, "photos": featured, "quarantine": bad}}


def test_reconcile_checks_counts_committed_rows_and_the_quarantine_share(tmp_path):
    run = "af-x-features-0-20261201T040000Z-aaaaaaaa"
    for table, rows in (("features", 8), ("photos", 8), ("quarantine", 2)):
        _commit(tmp_path, table, run, rows)
    scores = {"job": "scores", "run_id": "af-x-scores-20261201T040100Z-bbbbbbbb", "model_name": "m",
              "model_version": 3, "export_format": "native", "rows": 8, "scored": 8, "known": 0,
              "quarantined": 0, "decoded": 0, "written": {"scores": 8, "quarantine": 0}}
    _commit(tmp_path, "scores", scores["run_id"], 8, ("m", 3))
    report = _feature_report(run, featured=8, bad=2)
    verdict = reconcile(str(tmp_path), [report, scores], max_quarantine_share=0.25)
    assert verdict.ok, verdict.problems
    assert any("new inputs: 10, quarantined 2" in line for line in verdict.lines)
    # A surge of broken files fails it, naming the top reasons.
    verdict = reconcile(str(tmp_path), [report, scores], max_quarantine_share=0.1)
    assert not verdict.ok and "2 of 10 new inputs quarantined" in verdict.problems[0]
    assert "not_an_image x1" in verdict.problems[0] and "unreadable_uri x1" in verdict.problems[0]
    # Counts that do not add up, and rows the job says it wrote that are not all committed.
    broken = {**report, "inputs": 11, "written": {**report["written"], "features": 9}}
    problems = reconcile(str(tmp_path), [broken], 1.0).problems
    assert any("inputs 11 != featured 8" in p for p in problems)
    assert any("wrote 9 features rows but 8 are committed" in p for p in problems)


def _measured(version: int, auc: float, pr_auc: float = 0.5, brier: float = 0.2) -> Measured:
    return Measured(version, "test", auc, pr_auc, brier, 0.05, 100)


def test_the_best_candidate_and_the_margin_over_the_champion():
    assert pick_best([_measured(3, 0.81), _measured(4, 0.86), _measured(5, math.nan)]).version == 4
    assert pick_best([_measured(3, 0.86, pr_auc=0.7), _measured(4, 0.86, pr_auc=0.6)]).version == 3
    assert beats_champion(_measured(4, 0.80), None, 0.01)[0]                       # no champion yet
    won, reason = beats_champion(_measured(4, 0.86), _measured(1, 0.84), 0.01)
    assert won and "beats champion v1 by +0.0200" in reason
    won, reason = beats_champion(_measured(4, 0.845), _measured(1, 0.84), 0.01)
    assert not won and "no alias moved" in reason
    assert not beats_champion(_measured(4, math.nan), _measured(1, 0.84), 0.0)[0]
    with pytest.raises(Exception, match="no new version"):
        pick_best([])


def test_embedded_airflow_listens_on_loopback_and_keeps_secrets_in_its_home(tmp_path):
    settings = load_settings([f"home={tmp_path}", "spark.master=local[3]", "airflow.port=18123"], env={})
    env = airflow_env(settings, base={"PATH": "/usr/bin"})
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1" and env["AIRFLOW__API__PORT"] == "18123"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18123/execution/"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'airflow' / 'airflow.db'}"
    assert env["PHOTOSCORE_HOME"] == str(tmp_path)
    # Tasks import this checkout's photoscore, after what the caller put first (fault injection).
    assert env["PYTHONPATH"] == str(REPO)
    assert airflow_env(settings, base={"PYTHONPATH": "/faults"})["PYTHONPATH"] == f"/faults:{REPO}"
    conn = json.loads(env["AIRFLOW_CONN_PHOTOSCORE_SPARK"])
    assert conn == json.loads(spark_connection(settings)) and conn["host"] == "local[3]"
    secrets_dir = tmp_path / "airflow" / "secrets"
    password = admin_password(settings)
    assert password == admin_password(settings) and len(password) >= 12  # generated once, kept
    for path in secrets_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == airflow_env(settings)["AIRFLOW__API_AUTH__JWT_SECRET"]


def test_stream_watch_leaves_alone_a_job_never_started_or_stopped_on_purpose(tmp_path):
    settings = load_settings([f"home={tmp_path}"], env={})
    health = watch_stream(settings, 600, 1000)
    assert health.ok and not health.restarted and "never started" in health.lines[0]
    (tmp_path / "stream").mkdir()
    (tmp_path / "stream" / "desired").write_text("stopped\n")
    health = watch_stream(settings, 600, 1000)
    assert health.ok and "stopped on purpose" in health.lines[0]


def test_rollout_stages_score_per_plan_and_name_their_runs_and_actor():
    from jobs.orchestration import ROLLOUT_STAGES, dag_actor, plan_scores_args
    from models.lifecycle import stage_summary

    assert [(s.name, s.shadow_percent, s.canary_percent) for s in ROLLOUT_STAGES] == [
        ("shadow", 100.0, 0.0), ("canary_5", 100.0, 5.0), ("canary_50", 100.0, 50.0)]
    model, prefix = plan_scores_args("canary_5")
    assert model == ["--model", "models:/{{ params.name }}", "--plan"]
    assert prefix == ["--run-prefix", "{{ backfill_prefix(run_id, 'scores-canary_5') }}"]
    assert run_id_arg(backfill_prefix("manual__2026-12-01", "scores-canary_5"))
    assert dag_actor("photoscore_model_lifecycle", "manual__1") == "airflow:photoscore_model_lifecycle/manual__1"
    figures = {"champion": 1, "challenger": 2, "pairs": 300, "mean_abs_delta": 0.002, "rank_correlation": 0.99,
               "flip_share": 0.0, "psi": 0.01, "challenger_error_rate": 0.0, "passed": False,
               "failures": ["PSI 0.4 > 0.25"]}
    line = stage_summary("canary_5", figures)
    assert line.startswith("canary_5: challenger v2 vs champion v1: pairs=300") and line.endswith("FAIL: PSI 0.4 > 0.25")


def test_a_drift_alarm_names_what_drifted_by_kind():
    alarms = [{"kind": "feature", "name": "mean_luma", "message": "mean_luma: PSI 1.2"},
              {"kind": "feature", "name": "luma_p50", "message": "luma_p50: PSI 0.9"},
              {"kind": "missing", "name": "sharpness", "message": "sharpness: 9% missing"},
              {"kind": "quarantine", "name": "quarantine", "message": "quarantine: 20%"}]
    assert drift_alarm_reason("models:/m@champion", alarms) == (
        "drift alarm on models:/m@champion: feature mean_luma, luma_p50; missing sharpness; quarantine")
