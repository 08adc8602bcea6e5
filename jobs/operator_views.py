"""The views an operator looks at, in one list: `photoscore ui [--airflow] [--status] [--stop]`.

- the MLflow UI over the registry (versions, aliases, parity reports). A remote tracking server is
  its own UI. Locally the stream's registry server (jobs/stream_supervisor.py) is MLflow's full
  server, UI included: while it runs it is the one shown; otherwise `ui` starts `mlflow server` on
  127.0.0.1:`monitor.ui_mlflow_port` (0: a free port chosen once and kept in `<home>/ui/ports.json`);
- the Airflow UI (jobs/airflow_supervisor.py): shown when running, started only with `--airflow`
  (four processes and a minute or more of start-up on a small machine: too much to pay unasked);
- the running stream's Flink web dashboard and metrics endpoint, from `stream_status`;
- the newest monitor report (`<home>/<monitor.out>/**/report.html`, by modification time).

What `ui` started is recorded in `<home>/ui/state.json`; `stop_views` stops exactly that, never a
server someone else started (the stream's registry server, an Airflow brought up with
`photoscore airflow up`).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from jobs import airflow_supervisor
from jobs.monitor import monitor_root
from jobs.registry_server import running_server_url, server_files, start_registry_server
from jobs.stream_supervisor import stream_dir, stream_status
from jobs.supervise import kept_ports, read_json, stop_process, write_json
from udfs.errors import PhotoscoreError
from udfs.settings import Settings

MLFLOW = "MLflow UI"
AIRFLOW = "Airflow UI"
FLINK = "Flink dashboard"
METRICS = "stream metrics"
REPORT = "monitor report"
UI_MLFLOW = "mlflow"  # the name of the MLflow server `ui` starts (its pid, URL and log files)


@dataclass(frozen=True)
class View:
    """One view: what it is, where (a URL, a file, or "" when there is none) and its state."""

    name: str
    where: str
    state: str


def ui_dir(settings: Settings) -> Path:
    """Where `ui` keeps its state file, kept ports and the files of the servers it starts."""
    return settings.home / "ui"


def _state_path(settings: Settings) -> Path:
    return ui_dir(settings) / "state.json"


def started_by_ui(settings: Settings) -> list[str]:
    """The views whose servers `ui` started and that `stop_views` will stop."""
    return list((read_json(_state_path(settings)) or {}).get("started", []))


def _record_started(settings: Settings, names: list[str]) -> None:
    ui_dir(settings).mkdir(parents=True, exist_ok=True)
    write_json(_state_path(settings), {"started": sorted(set(names))})


def mlflow_view(settings: Settings, start: bool) -> View:
    """The MLflow UI: a remote tracking server, else a running local server (the one `ui` started,
    else the stream's), else one started now when `start`."""
    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://")):
        return View(MLFLOW, uri, "remote tracking server")
    own_url = running_server_url(ui_dir(settings), UI_MLFLOW)
    if own_url:
        return View(MLFLOW, own_url, "running")
    stream_url = running_server_url(stream_dir(settings), "registry")
    if stream_url:
        return View(MLFLOW, stream_url, "running (the stream's registry server)")
    if not uri.startswith("sqlite:"):
        return View(MLFLOW, "", f"no UI for tracking URI {uri}")
    if not start:
        return View(MLFLOW, "", "not running")
    ui_dir(settings).mkdir(parents=True, exist_ok=True)
    port = kept_ports(ui_dir(settings) / "ports.json", [UI_MLFLOW], running=False,
                      fixed={UI_MLFLOW: settings.monitor.ui_mlflow_port})[UI_MLFLOW]
    url = start_registry_server(uri, ui_dir(settings), UI_MLFLOW, port)
    _record_started(settings, [*started_by_ui(settings), UI_MLFLOW])
    return View(MLFLOW, url, "started")


def airflow_view(settings: Settings, start: bool) -> View:
    """The Airflow UI with its login when it runs; started (with every part) when `start`."""
    if not airflow_supervisor.airflow_home(settings).is_dir() and not start:
        return View(AIRFLOW, "", "not running (photoscore ui --airflow starts it)")
    status = airflow_supervisor.airflow_status(settings)
    parts_up = [name for name in airflow_supervisor.COMPONENTS if status[name]]
    state = "running"
    if not status["running"]:
        if not start:
            return View(AIRFLOW, status["url"], "not running (photoscore ui --airflow starts it)")
        status = airflow_supervisor.airflow_up(settings)
        state = "started"
        if not parts_up:  # a half-up Airflow someone else started stays theirs to stop
            _record_started(settings, [*started_by_ui(settings), "airflow"])
    return View(AIRFLOW, status["url"], f"{state}, login {status['user']} / {status['password']}")


def stream_views(settings: Settings) -> list[View]:
    """The stream's Flink dashboard and metrics endpoint (each "not running" when it has none)."""
    try:
        status = stream_status(settings)
    except PhotoscoreError as exc:  # a session cluster that does not answer
        return [View(FLINK, "", f"unknown: {exc}"), View(METRICS, "", "unknown")]
    views = []
    for name, key in ((FLINK, "dashboard_url"), (METRICS, "metrics_url")):
        url = status.get(key) if status.get("running") else None  # a stopped job's URLs are stale
        state = "running" if url else ("not exposed by the job" if status.get("running") else "not running")
        views.append(View(name, url or "", state))
    return views


def newest_report(settings: Settings) -> Path | None:
    """The newest `report.html` under `monitor.out` (a local directory), by modification time."""
    root = monitor_root(settings)
    if not root.is_dir():
        return None
    return max(root.glob("**/report.html"), key=lambda p: p.stat().st_mtime, default=None)


def report_view(settings: Settings) -> View:
    report = newest_report(settings)
    if report is None:
        return View(REPORT, "", "none yet (photoscore monitor writes one)")
    written = datetime.fromtimestamp(report.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return View(REPORT, str(report), f"written {written}")


def collect_views(settings: Settings, start: bool = True, start_airflow: bool = False) -> list[View]:
    """Every view, starting the MLflow UI when `start` and Airflow when `start_airflow`."""
    return [mlflow_view(settings, start), airflow_view(settings, start_airflow), *stream_views(settings),
            report_view(settings)]


def stop_views(settings: Settings) -> list[str]:
    """Stop what `ui` started (and nothing else); returns the views stopped."""
    stopped = []
    for name in started_by_ui(settings):
        if name == UI_MLFLOW:
            pid_path, url_path, _ = server_files(ui_dir(settings), UI_MLFLOW)
            if stop_process(pid_path):
                stopped.append(MLFLOW)
            url_path.unlink(missing_ok=True)
        elif name == "airflow" and airflow_supervisor.airflow_down(settings):
            stopped.append(AIRFLOW)
    _record_started(settings, [])
    return stopped


def view_lines(views: list[View]) -> list[str]:
    """The views as aligned lines: name, where, state."""
    width = max(len(view.name) for view in views)
    where = max(len(view.where or "-") for view in views)
    return [f"{view.name:<{width}}  {view.where or '-':<{where}}  {view.state}" for view in views]
