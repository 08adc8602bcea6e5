"""A real Airflow on the embedded default: `photoscore airflow up|down|status|test`.

Airflow's own processes (scheduler, dag-processor, triggerer, api-server) run as supervised
processes under `<home>/airflow`: SQLite metadata, LocalExecutor with one slot per core, the DAG
folder pointed at `airflow_dags/`, every listener on 127.0.0.1. Two of Airflow's listeners bind all
interfaces whatever the config says (the worker log server and the triggerer's, both `host=""` in
`airflow.utils.serve_logs`): they only serve logs to remote workers, and LocalExecutor's logs are
local files the API server reads itself, so both are switched off (`--skip-serve-logs`).

The processes get their settings from the environment built here (`airflow_env`): Airflow's own
`AIRFLOW__*` variables plus the Spark connection the backfill DAG submits with, built from
photoscore's `spark` section (`AIRFLOW_CONN_<ID>`), and PHOTOSCORE_HOME so every task reads the
same photoscore config as the person who ran `airflow up`.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from jobs.supervise import free_port, http_ok, pid_alive, read_pid, start_process, stop_process, wait_until
from udfs.errors import PhotoscoreError
from udfs.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DAGS_DIR = REPO / "airflow_dags"
ADMIN = "admin"
# name -> the `airflow` subcommand's arguments (the api-server's host/port come from the env).
COMPONENTS = {
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
    "api-server": ["api-server", "--workers", "1"],
}


def airflow_home(settings: Settings) -> Path:
    """Where the embedded Airflow keeps its metadata DB, logs, pid files and generated secrets."""
    return settings.home / "airflow"


def airflow_bin() -> Path:
    """The `airflow` command of this environment (its parts start `airflow` subprocesses too)."""
    return Path(sys.executable).parent / "airflow"


def _secret(home: Path, name: str) -> str:
    """A random secret generated once per Airflow home (mode 600), never in the repo."""
    path = home / "secrets" / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def api_port(settings: Settings) -> int:
    """`airflow.port`, or a free port chosen once and kept (so the UI's address stays the same)."""
    if settings.airflow.port:
        return settings.airflow.port
    path = airflow_home(settings) / "port"
    if path.is_file():
        return int(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    path.write_text(str(port))
    return port


def spark_connection(settings: Settings) -> str:
    """The Spark connection as Airflow's JSON form, from photoscore's `spark` section."""
    extra = {"spark-binary": "spark-submit"}
    if settings.spark.deploy_mode:
        extra["deploy-mode"] = settings.spark.deploy_mode
    return json.dumps({"conn_type": "spark", "host": settings.spark.master, "extra": extra})


def airflow_env(settings: Settings, base: dict | None = None) -> dict[str, str]:
    """The environment of every Airflow process (and of `airflow dags test`)."""
    home = airflow_home(settings)
    port = api_port(settings)
    env = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    env.update({
        "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",  # airflow and spark-submit of this env
        # The DAGs and tasks import photoscore from this checkout (the one whose DAG folder Airflow
        # reads), not from the checkout the environment's editable install points at (another git
        # worktree); appended, so a caller's PYTHONPATH (a test's fault injection) still comes first.
        "PYTHONPATH": os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)])),
        "PHOTOSCORE_HOME": str(settings.home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(settings.airflow.parallelism or os.cpu_count() or 1),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        # Tasks reach the API server here; a moved port without it fails them with "connection refused".
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "secrets" / "passwords.json"),
        # One secret for every process: tokens the scheduler signs are checked by the API server.
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret(home, "jwt"),
        "AIRFLOW__API__SECRET_KEY": _secret(home, "api"),
        f"AIRFLOW_CONN_{settings.airflow.spark_conn_id.upper()}": spark_connection(settings),
        "SPARK_LOCAL_IP": env.get("SPARK_LOCAL_IP", "127.0.0.1"),
        "PYSPARK_PYTHON": env.get("PYSPARK_PYTHON", sys.executable),
    })
    return env


def admin_password(settings: Settings) -> str:
    """The generated admin password (written before the API server starts, kept in the home)."""
    path = airflow_home(settings) / "secrets" / "passwords.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(json.dumps({ADMIN: secrets.token_urlsafe(12)}))
        path.chmod(0o600)
    return json.loads(path.read_text())[ADMIN]


def _pid_path(settings: Settings, name: str) -> Path:
    return airflow_home(settings) / "run" / f"{name}.pid"


def run_airflow(settings: Settings, args: list[str], timeout_s: float | None = None,
                capture: bool = True) -> subprocess.CompletedProcess:
    """`airflow ARGS` in the embedded Airflow's environment."""
    return subprocess.run([str(airflow_bin()), *args], env=airflow_env(settings), cwd=airflow_home(settings),
                          capture_output=capture, text=True, timeout=timeout_s)


def migrate(settings: Settings) -> None:
    """Create or upgrade the metadata DB (idempotent)."""
    airflow_home(settings).mkdir(parents=True, exist_ok=True)
    out = run_airflow(settings, ["db", "migrate"], timeout_s=600)
    if out.returncode != 0:
        raise PhotoscoreError(f"`airflow db migrate` failed (exit {out.returncode}):\n{out.stderr[-2000:]}")


def airflow_up(settings: Settings, wait_s: float = 240.0) -> dict:
    """Start what is not running; wait until the API server answers. Returns the status."""
    home = airflow_home(settings)
    migrate(settings)
    admin_password(settings)
    env = airflow_env(settings)
    for name, args in COMPONENTS.items():
        pid_path = _pid_path(settings, name)
        if not pid_alive(read_pid(pid_path)):
            pid_path.parent.mkdir(parents=True, exist_ok=True)
            start_process([airflow_bin(), *args], home / "logs" / f"{name}.log", pid_path, env=env, cwd=home)
    def dead() -> list[str]:
        gone = [name for name in COMPONENTS if not pid_alive(read_pid(_pid_path(settings, name)))]
        if gone:
            raise PhotoscoreError(f"Airflow's {', '.join(gone)} exited; see {home / 'logs'}")
        return gone

    wait_until(lambda: _healthy(settings), wait_s, 1.0, what="Airflow's API server", on_poll=dead,
               hint=f"see {home / 'logs' / 'api-server.log'}")
    return airflow_status(settings)


def _healthy(settings: Settings) -> bool:
    return http_ok(f"http://127.0.0.1:{api_port(settings)}/api/v2/monitor/health")


def airflow_down(settings: Settings) -> list[str]:
    """Stop every running part (each with its children); returns the names stopped."""
    stopped = []
    for name in reversed(COMPONENTS):
        if stop_process(_pid_path(settings, name), grace_s=20):
            stopped.append(name)
    return stopped


def airflow_status(settings: Settings) -> dict:
    """{"running": all parts alive and the API healthy, "url", "user", "password", each part's pid}."""
    port = api_port(settings)
    status: dict = {}
    for name in COMPONENTS:
        pid = read_pid(_pid_path(settings, name))
        status[name] = pid if pid_alive(pid) else None
    status["running"] = all(status[name] for name in COMPONENTS) and _healthy(settings)
    status["url"] = f"http://127.0.0.1:{port}"
    status["user"] = ADMIN
    status["password"] = admin_password(settings)
    status["home"] = str(airflow_home(settings))
    return status


@dataclass
class DagTestOutcome:
    """The run `airflow dags test` made: its id, final state and each task's state."""

    run_id: str
    state: str
    states: dict[str, str]


def _json_out(settings: Settings, args: list[str]) -> list[dict]:
    out = run_airflow(settings, [*args, "--output", "json"], timeout_s=300)
    if out.returncode != 0:
        raise PhotoscoreError(f"`airflow {' '.join(args)}` failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    text = out.stdout.strip()
    return json.loads(text[text.index("["):]) if "[" in text else []


def dags_test(settings: Settings, dag_id: str, conf: dict | None = None,
              timeout_s: float | None = None) -> DagTestOutcome:
    """`airflow dags test DAG_ID` end to end in this environment (no scheduler needed; its log
    streams to this process's output), then the run's state and its tasks' states."""
    migrate(settings)
    args = ["dags", "test", dag_id]
    if conf:
        args += ["--conf", json.dumps(conf)]
    run_airflow(settings, args, timeout_s=timeout_s, capture=False)
    runs = _json_out(settings, ["dags", "list-runs", dag_id])
    if not runs:
        raise PhotoscoreError(f"`airflow dags test {dag_id}` made no run; see its output above")
    newest = max(runs, key=lambda r: r.get("start_date") or "")
    tasks = _json_out(settings, ["tasks", "states-for-dag-run", dag_id, newest["run_id"]])
    states = {}
    for row in tasks:
        index = row.get("map_index")
        name = row["task_id"] + (f"[{index}]" if index not in (None, -1, "-1", "") else "")
        states[name] = row.get("state") or "none"
    return DagTestOutcome(newest["run_id"], newest["state"], states)
