"""Supervision of the PyFlink scoring job (jobs/stream_score.py): start, stop, status.

`photoscore stream`, the demo, the benches and the tests call these. By default the job runs in Flink's local mini-cluster as a supervised process (pid file and log
under PHOTOSCORE_HOME/stream); with `flink.jobmanager` set (HOST:PORT of a Flink session cluster's
REST endpoint) it is submitted there with `flink run` instead. Either way it resumes from the
newest retained checkpoint under `flink.checkpoint_dir`.
"""
from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping

from jobs.broker import fetch_wait_ms
from udfs.errors import PhotoscoreError
from udfs.settings import Settings

REPO = Path(__file__).resolve().parents[1]
JOB_SCRIPT = REPO / "jobs" / "stream_score.py"

DESIRED = "desired"


def stream_dir(settings: Settings) -> Path:
    """Where the job's pid file, log and job config live."""
    return settings.home / "stream"


def job_settings_path(settings: Settings) -> Path:
    """The settings the running (or last started) job was given."""
    return stream_dir(settings) / "job-settings.json"


def desired_state(settings: Settings) -> str | None:
    """"running" after `start`, "stopped" after `stop`, None when never started under this home."""
    path = stream_dir(settings) / DESIRED
    return path.read_text().strip() if path.is_file() else None


def flink_python(settings: Settings) -> Path:
    """The `.venv-flink` interpreter the job and its Python workers run in."""
    path = Path(settings.flink.python or REPO / ".venv-flink" / "bin" / "python")
    if not path.exists():
        raise PhotoscoreError(f"the Flink environment's Python {path} does not exist; create it with "
                              "`uv sync --extra flink` into .venv-flink or set flink.python")
    return path


def flink_bin(settings: Settings) -> Path:
    """The `flink` CLI shipped in the apache-flink wheel of the Flink environment."""
    out = subprocess.run([str(flink_python(settings)), "-c", "import pyflink,os;print(os.path.dirname(pyflink.__file__))"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip()) / "bin" / "flink"


def checkpoint_root(settings: Settings) -> Path:
    """The local directory `flink.checkpoint_dir` names (a remote one is the cluster's business)."""
    root = settings.resolve(settings.flink.checkpoint_dir)
    if "://" in root and not root.startswith("file://"):
        raise PhotoscoreError(f"flink.checkpoint_dir {root}: only local paths are managed by this command")
    return Path(root[len("file://"):] if root.startswith("file://") else root)


def latest_checkpoint(settings: Settings) -> Path | None:
    """The newest completed checkpoint (a `chk-N` directory holding `_metadata`) of any run."""
    root = checkpoint_root(settings)
    if not root.is_dir():
        return None
    found = [p.parent for p in root.glob("*/chk-*/_metadata")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def registry_url_for_job(settings: Settings) -> str:
    """A tracking URI the Flink workers can reach.

    A remote URI is passed through. A SQLite store is passed through when the Flink environment can
    open it (SQLAlchemy + Alembic, as the flink extra installs). Otherwise (a `flink.python` without
    them) a local MLflow server over the same store is started, supervised like the broker (pid + log
    under home/stream), and its URL is returned. On a cluster set a tracking server's URI instead:
    TaskManagers never share the CLI's files.
    """
    uri = settings.tracking_uri
    if uri.startswith(("http://", "https://", "databricks")):
        return uri
    probe = subprocess.run([str(flink_python(settings)), "-c", "import sqlalchemy, alembic"], capture_output=True)
    if probe.returncode == 0 and uri.startswith("sqlite:"):
        return uri  # the Flink environment can open the SQL store itself (single machine)
    from jobs.registry_server import start_registry_server

    return start_registry_server(uri, stream_dir(settings), "registry")


# The mini-cluster's REST endpoint (the Flink web UI's API): on 127.0.0.1, at a port picked at
# start unless flink.conf names one, so `stream status` can give its URL.
REST_PORT = "rest.port"


def job_settings(settings: Settings, bootstrap: str, tracking_uri: str) -> Settings:
    """The settings the job runs with: these, with every "find it locally" value resolved (the
    broker's address, a registry URL the workers reach, the Flink Python, the checkpoint URI, the
    source's fetch wait, a free metrics port for `monitor.metrics_port` 0, the local cluster's REST
    port), so workers on other machines need nothing but this object."""
    from jobs.supervise import free_port

    conf = dict(settings.flink.conf)
    if not settings.flink.jobmanager:  # a session cluster's REST address is flink.jobmanager
        conf = {"rest.bind-address": "127.0.0.1", "rest.address": "127.0.0.1", REST_PORT: str(free_port()), **conf}
    return settings.updated(
        kafka={"bootstrap": bootstrap},
        mlflow={"tracking_uri": tracking_uri},
        flink={"python": str(flink_python(settings)),
               "checkpoint_dir": checkpoint_root(settings).as_uri(),
               "fetch_max_wait_ms": fetch_wait_ms(settings, settings.flink.fetch_max_wait_ms),
               "conf": conf},
        monitor={"metrics_port": settings.monitor.metrics_port or free_port()},
    )


def job_environment(python: str, base: Mapping[str, str]) -> dict[str, str]:
    """The environment the job's process starts with: `base`, with `python`'s directory first on
    PATH and PYTHONPATH set to this checkout's root (REPO).

    The Flink environment installs photoscore in editable mode pointing at one checkout; without
    PYTHONPATH a job started from another checkout (a git worktree) would import that one's `udfs`
    and `jobs`. PYTHONPATH entries precede the editable finder, and the Python workers the JVM
    starts inherit the variable, so the job and its workers run the code of the checkout that
    started them. The caller's own PYTHONPATH is dropped: it may name the CLI environment's
    packages, built for another Python.
    """
    env = dict(base)
    # The Python worker is started by the JVM; make sure neither picks another environment's python.
    env["PATH"] = f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    return env


def _rest(jobmanager: str, path: str, method: str = "GET") -> dict:
    req = urllib.request.Request(f"http://{jobmanager}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise PhotoscoreError(f"the Flink cluster at {jobmanager} does not answer ({exc}); check flink.jobmanager") from None
    return json.loads(body) if body else {}


def start_stream(settings: Settings, restore: bool = True, wait_s: float = 120.0) -> dict:
    """Start the job (mini-cluster process, or `flink run` on the configured session cluster) on
    `settings.mlflow.model_name`@`settings.mlflow.alias` with `settings.scoring.format`.

    Returns {"mode", "pid" | "job_id", "log", "restore"}. Idempotent for the mini-cluster.
    """
    from jobs.broker import bootstrap_servers
    from jobs.kafka_admin import kafka_metadata
    from jobs.supervise import pid_alive, read_pid, start_process

    d = stream_dir(settings)
    d.mkdir(parents=True, exist_ok=True)
    pid_path, log_path = d / "job.pid", d / "job.log"
    if pid_alive(read_pid(pid_path)):
        return {"mode": "local", "pid": read_pid(pid_path), "log": str(log_path), "already_running": True}
    bootstrap = bootstrap_servers(settings)
    kafka_metadata(bootstrap)  # fail now, clearly, rather than in a restart loop
    job = job_settings(settings, bootstrap, registry_url_for_job(settings))
    cfg_path = job_settings_path(settings)
    cfg_path.write_text(job.model_dump_json(indent=2))
    (d / DESIRED).write_text("running\n")  # the watch restarts a job meant to run that died
    checkpoint = latest_checkpoint(settings) if restore else None
    restore_args = ["--restore", checkpoint.as_uri()] if checkpoint else []
    jobmanager = settings.flink.jobmanager
    if jobmanager:
        py = job.flink.python
        argv = [str(flink_bin(settings)), "run", "-d", "-m", jobmanager, "-py", str(JOB_SCRIPT),
                "-pyexec", py, "-pyclientexec", py]
        if checkpoint:
            argv[2:2] = ["-s", checkpoint.as_uri()]
        argv += ["--settings-json", str(cfg_path)]
        env = dict(job_environment(py, os.environ), PYFLINK_CLIENT_EXECUTABLE=py)
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=wait_s)
        with open(log_path, "a") as fh:
            fh.write(out.stdout + out.stderr)
        job_id = next((w for line in out.stdout.splitlines() if "JobID" in line for w in line.split()
                       if len(w) == 32 and all(c in "0123456789abcdef" for c in w)), None)
        if out.returncode != 0 or not job_id:
            raise PhotoscoreError(f"`flink run` against {jobmanager} failed (exit {out.returncode}); see {log_path}")
        (d / "job.id").write_text(f"{jobmanager} {job_id}\n")
        return {"mode": "session", "job_id": job_id, "jobmanager": jobmanager, "log": str(log_path),
                "restore": str(checkpoint) if checkpoint else None}
    env = job_environment(job.flink.python, os.environ)
    env["FLINK_LOG_DIR"] = str(d)  # the mini-cluster's own log next to job.log, not inside the wheel
    jvm_args = settings.flink.jvm_args.strip()
    if jvm_args:
        env["JVM_ARGS"] = f"{env.get('JVM_ARGS', '')} {jvm_args}".strip()
    pid = start_process([job.flink.python, str(JOB_SCRIPT), "--settings-json", str(cfg_path), *restore_args],
                        log_path, pid_path, env=env, cwd=d)
    return {"mode": "local", "pid": pid, "log": str(log_path), "restore": str(checkpoint) if checkpoint else None}


def stop_stream(settings: Settings, stop_registry: bool = True) -> bool:
    """Stop the job (and the local registry server it used). Checkpoints are kept for the next start."""
    from jobs.supervise import stop_process

    d = stream_dir(settings)
    if d.is_dir():
        (d / DESIRED).write_text("stopped\n")
    stopped = False
    id_path = d / "job.id"
    if id_path.is_file():
        jobmanager, job_id = id_path.read_text().split()
        try:
            _rest(jobmanager, f"/jobs/{job_id}?mode=cancel", method="PATCH")
            stopped = True
        except PhotoscoreError:
            pass
        id_path.unlink(missing_ok=True)
    stopped = stop_process(d / "job.pid", grace_s=15) or stopped
    if stop_registry:
        stop_process(d / "registry.pid")
        (d / "registry.url").unlink(missing_ok=True)
    return stopped


def job_urls(settings: Settings) -> dict:
    """{"metrics_url", "dashboard_url"} of the job last started under this home (None each when
    unknown: never started, metrics off, or a session cluster, whose reporter and web UI its own
    configuration sets)."""
    path = job_settings_path(settings)
    if not path.is_file() or (stream_dir(settings) / "job.id").is_file():
        return {"metrics_url": None, "dashboard_url": None}
    job = Settings.model_validate_json(path.read_text())
    rest = job.flink.conf.get(REST_PORT)
    return {"metrics_url": f"http://127.0.0.1:{job.monitor.metrics_port}/metrics" if job.monitor.metrics else None,
            "dashboard_url": f"http://127.0.0.1:{rest}" if rest else None}


def metrics_headline(metrics_url: str | None) -> dict:
    """The headline figures of the job's metrics page (udfs.stream_metrics.headline: uploads,
    scored, dead_lettered, p99_latency); {} when there is no page or it does not answer."""
    from udfs.stream_metrics import headline, parse_metrics

    if not metrics_url:
        return {}
    try:
        with urllib.request.urlopen(metrics_url, timeout=10) as resp:
            return headline(parse_metrics(resp.read().decode()))
    except OSError:
        return {}


def stream_status(settings: Settings) -> dict:
    """{"running": bool, "mode", "pid"/"job_id", "state", "checkpoint", "log", "metrics_url",
    "dashboard_url"}, and the metrics' headline figures while the local job runs."""
    from jobs.supervise import pid_alive, read_pid

    d = stream_dir(settings)
    status: dict = {"log": str(d / "job.log"), **job_urls(settings)}
    ckpt = latest_checkpoint(settings)
    status["checkpoint"] = str(ckpt) if ckpt else None
    id_path = d / "job.id"
    if id_path.is_file():
        jobmanager, job_id = id_path.read_text().split()
        job = _rest(jobmanager, f"/jobs/{job_id}")
        status.update(mode="session", job_id=job_id, state=job.get("state"),
                      running=job.get("state") in ("RUNNING", "CREATED", "RESTARTING", "INITIALIZING"))
        return status
    pid = read_pid(d / "job.pid")
    status.update(mode="local", pid=pid if pid_alive(pid) else None, running=pid_alive(pid))
    if status["running"]:
        status.update(metrics_headline(status["metrics_url"]))
    return status
