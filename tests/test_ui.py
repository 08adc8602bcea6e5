"""`photoscore ui`: the operator's views in one list; it starts the MLflow UI and stops only what
it started."""
from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from jobs.cli import main as cli_main
from jobs.config import load_settings
from jobs.operator_views import (FLINK, METRICS, MLFLOW, REPORT, UI_MLFLOW, View, collect_views, newest_report,
                                 started_by_ui, stream_views, ui_dir, view_lines)
from jobs.registry_server import server_files, start_registry_server
from jobs.stream_supervisor import REST_PORT, job_settings_path, stream_dir
from jobs.supervise import http_ok, read_pid, stop_process


@pytest.fixture
def ui_home(tmp_path, monkeypatch):
    """A PHOTOSCORE_HOME of its own for the CLI (and no ambient registry)."""
    for key in [k for k in os.environ if k.startswith("PHOTOSCORE_") or k == "MLFLOW_TRACKING_URI"]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PHOTOSCORE_HOME", str(tmp_path))
    return tmp_path


def _views(capsys, *args: str) -> dict[str, tuple[str, str]]:
    """Run `photoscore ui ARGS`; its lines as {name: (where, state)}."""
    assert cli_main(["ui", *args]) == 0
    rows = [re.split(r"\s{2,}", line, maxsplit=2) for line in capsys.readouterr().out.splitlines()]
    return {name: (where, state) for name, where, state in rows}


def test_status_starts_nothing_and_names_what_is_not_running(ui_home, capsys):
    views = _views(capsys, "--status")
    assert views[MLFLOW] == ("-", "not running")
    assert views["Airflow UI"][1].startswith("not running")
    assert views["Flink dashboard"] == ("-", "not running") and views["stream metrics"] == ("-", "not running")
    assert views[REPORT][0] == "-"
    assert not (ui_home / "ui").exists() and not (ui_home / "airflow").exists()


def test_a_stopped_stream_jobs_dashboard_and_metrics_are_not_shown(ui_home):
    settings = load_settings()
    job = settings.updated(flink={"conf": {REST_PORT: "18081"}}, monitor={"metrics_port": 19249})
    stream_dir(settings).mkdir(parents=True)
    job_settings_path(settings).write_text(job.model_dump_json())  # as a job started, then stopped, left it
    views = {v.name: v for v in stream_views(settings)}
    assert (views[FLINK].where, views[FLINK].state) == ("", "not running")
    assert (views[METRICS].where, views[METRICS].state) == ("", "not running")


def test_newest_report_is_the_latest_written_anywhere_under_monitor_out(ui_home):
    settings = load_settings()
    assert newest_report(settings) is None
    reports = [ui_home / "monitor" / model / "v1" / stamp / "report.html"
               for model, stamp in (("a", "t2"), ("b", "t1"), ("a", "t1"))]
    for age, report in enumerate(reports):
        report.parent.mkdir(parents=True)
        report.write_text("<html></html>")
        os.utime(report, (time.time() - 100 * age, time.time() - 100 * age))
    assert newest_report(settings) == reports[0]
    view = next(v for v in collect_views(settings, start=False) if v.name == REPORT)
    assert view.where == str(reports[0]) and view.state.startswith("written ")


def test_view_lines_align_and_mark_a_missing_address():
    lines = view_lines([View("MLflow UI", "http://127.0.0.1:5000", "running"), View("report", "", "none yet")])
    assert lines == ["MLflow UI  http://127.0.0.1:5000  running", "report     -                      none yet"]


def _listens_on_loopback_only(pid: int) -> bool:
    proc = psutil.Process(pid)
    listening = [c.laddr.ip for p in (proc, *proc.children(recursive=True))
                 for c in p.net_connections() if c.status == psutil.CONN_LISTEN]
    return bool(listening) and all(ip in ("127.0.0.1", "::1") for ip in listening)


def _run_with_a_parity_report(tracking_uri: str, artifacts: Path) -> str:
    """A run in the registry's store with an `evaluation.json` artifact, as `photoscore train` logs."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)  # not mlflow.set_tracking_uri: it exports the URI
    experiment = client.create_experiment("photoscore", artifact_location=artifacts.as_uri())
    run_id = client.create_run(experiment).info.run_id
    client.log_dict(run_id, {"parity": {"verdict": "passed"}}, "evaluation.json")
    return run_id


@pytest.mark.integration
def test_ui_starts_the_mlflow_ui_and_stop_stops_only_what_it_started(ui_home, capsys):
    settings = load_settings()
    own_pid_file = server_files(ui_dir(settings), UI_MLFLOW)[0]
    stream_pid_file = stream_dir(settings) / "registry.pid"
    run_id = _run_with_a_parity_report(settings.tracking_uri, ui_home / "artifacts")
    try:
        url, state = _views(capsys)[MLFLOW]
        assert state == "started" and url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=30) as resp:
            assert resp.status == 200 and b"<html" in resp.read().lower()
        # The page the UI shows a run's artifact with reads it through the server.
        with urllib.request.urlopen(f"{url}/get-artifact?path=evaluation.json&run_uuid={run_id}", timeout=30) as resp:
            assert json.loads(resp.read()) == {"parity": {"verdict": "passed"}}
        assert _listens_on_loopback_only(read_pid(own_pid_file))
        assert started_by_ui(settings) == [UI_MLFLOW]
        assert _views(capsys, "--status")[MLFLOW] == (url, "running")  # the same server, not a twin

        # A server `ui` did not start: the stream's registry server.
        stream_url = start_registry_server(settings.tracking_uri, stream_dir(settings), "registry")
        assert cli_main(["ui", "--stop"]) == 0
        assert capsys.readouterr().out.strip() == f"stopped: {MLFLOW}"
        assert read_pid(own_pid_file) is None and not http_ok(f"{url}/health")
        assert http_ok(f"{stream_url}/health")

        # With the stream's server up, `ui` shows it and starts nothing; `--stop` leaves it running.
        assert _views(capsys)[MLFLOW] == (stream_url, "running (the stream's registry server)")
        assert started_by_ui(settings) == []
        assert cli_main(["ui", "--stop"]) == 0
        assert "nothing" in capsys.readouterr().out
        assert http_ok(f"{stream_url}/health")
    finally:
        stop_process(own_pid_file)
        stop_process(stream_pid_file)
