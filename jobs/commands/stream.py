"""`photoscore stream start|stop|status`: the PyFlink scoring job (jobs/stream_score.py).

By default the job runs in Flink's local mini-cluster as a supervised process (pid file and log
under PHOTOSCORE_HOME/stream); with `flink.jobmanager` set (HOST:PORT of a Flink session cluster's
REST endpoint) it is submitted there with `flink run` instead. Either way it resumes from the
newest retained checkpoint under `flink.checkpoint_dir`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from jobs.broker import fetch_wait_ms
from udfs.errors import PhotoscoreError

REPO = Path(__file__).resolve().parents[2]
JOB_SCRIPT = REPO / "jobs" / "stream_score.py"

# flink.* keys this command reads, with their defaults (conf/photoscore.yaml may set them).
DEFAULTS = {
    "flink.python": "",                      # interpreter of the flink env; '' = <repo>/.venv-flink/bin/python
    "flink.jobmanager": "",                  # HOST:PORT of a session cluster's REST API; '' = mini-cluster
    "flink.group_id": "photoscore-stream",
    "flink.fetch_max_wait_ms": "auto",       # the broker kind's wait (jobs.broker.fetch_wait_ms)
    "flink.model_poll_interval_ms": 2000,
    "flink.cache_ttl_ms": 86_400_000,
    "flink.python_bundle_size": 1,
    "flink.python_bundle_time_ms": 5,
    "flink.buffer_timeout_ms": 2,           # Flink's network flush interval (its default, 100 ms, adds per hop)
    "flink.ship_connector_jars": False,     # True for a cluster whose lib/ lacks the Kafka connector
    "flink.jvm_args": "-XX:TieredStopAtLevel=1",  # extra JVM options of the mini-cluster JVM
    "flink.python_worker_mode": "process",  # mini-cluster: process (one per subtask) | loopback (threads)
    "flink.gil_switch_interval_ms": 0.5,    # the Python workers' sys.setswitchinterval
}


def _get(config, key):
    return config.get(key, DEFAULTS[key]) if config.get(key) not in (None, "") else DEFAULTS[key]


def stream_dir(config) -> Path:
    return config.home / "stream"


def flink_python(config) -> Path:
    """The `.venv-flink` interpreter the job and its Python workers run in."""
    path = Path(_get(config, "flink.python") or REPO / ".venv-flink" / "bin" / "python")
    if not path.exists():
        raise PhotoscoreError(f"the Flink environment's Python {path} does not exist; create it with "
                              "`uv sync --extra flink` into .venv-flink or set flink.python")
    return path


def flink_bin(config) -> Path:
    """The `flink` CLI shipped in the apache-flink wheel of the Flink environment."""
    out = subprocess.run([str(flink_python(config)), "-c", "import pyflink,os;print(os.path.dirname(pyflink.__file__))"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip()) / "bin" / "flink"


def checkpoint_root(config) -> Path:
    root = config.path("flink.checkpoint_dir")
    if "://" in root and not root.startswith("file://"):
        raise PhotoscoreError(f"flink.checkpoint_dir {root}: only local paths are managed by this command")
    return Path(root[len("file://"):] if root.startswith("file://") else root)


def latest_checkpoint(config) -> Path | None:
    """The newest completed checkpoint (a `chk-N` directory holding `_metadata`) of any run."""
    root = checkpoint_root(config)
    if not root.is_dir():
        return None
    found = [p.parent for p in root.glob("*/chk-*/_metadata")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def registry_url_for_job(config) -> str:
    """A tracking URI the Flink workers can reach.

    A remote URI is passed through. A SQLite store is passed through when the Flink environment can
    open it (SQLAlchemy + Alembic, as the flink extra installs). Otherwise (a `flink.python` without
    them) a local MLflow server over the same store is started, supervised like the broker (pid + log
    under home/stream), and its URL is returned. On a cluster set a tracking server's URI instead:
    TaskManagers never share the CLI's files.
    """
    uri = config.tracking_uri
    if uri.startswith(("http://", "https://", "databricks")):
        return uri
    probe = subprocess.run([str(flink_python(config)), "-c", "import sqlalchemy, alembic"], capture_output=True)
    if probe.returncode == 0 and uri.startswith("sqlite:"):
        return uri  # the Flink environment can open the SQL store itself (single machine)
    from jobs.broker import free_port, pid_alive, port_open, read_pid, start_process

    d = stream_dir(config)
    d.mkdir(parents=True, exist_ok=True)
    pid_path, url_path = d / "registry.pid", d / "registry.url"
    if pid_alive(read_pid(pid_path)) and url_path.is_file():
        return url_path.read_text().strip()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    pid = start_process([mlflow_bin, "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
                         "--port", str(port), "--workers", "1"], d / "registry.log", pid_path)
    deadline = time.monotonic() + 90
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            raise PhotoscoreError(f"the MLflow registry server exited; see {d / 'registry.log'}")
        if port_open("127.0.0.1", port):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                url_path.write_text(url + "\n")
                return url
            except (urllib.error.URLError, OSError):
                pass
        time.sleep(0.3)
    raise PhotoscoreError(f"the MLflow registry server did not answer in 90 s; see {d / 'registry.log'}")


def job_config(config, bootstrap: str, tracking_uri: str, export_format: str | None = None) -> dict:
    """Everything the job needs, as one JSON-able dict (the workers may run on other machines)."""
    data = json.loads(json.dumps(config.data, default=str))
    data["home"] = str(config.home)
    data.setdefault("mlflow", {})["tracking_uri"] = tracking_uri
    root = checkpoint_root(config)
    return {
        "photoscore": data,
        "bootstrap": bootstrap,
        "topic_uploaded": config["kafka.topics.uploaded"],
        "topic_scores": config["kafka.topics.scores"],
        "topic_dlq": config["kafka.topics.dlq"],
        "group_id": _get(config, "flink.group_id"),
        "fetch_max_wait_ms": fetch_wait_ms(config, "flink.fetch_max_wait_ms"),
        "export_format": export_format or config.get("scoring.format", "native"),
        "model_poll_interval_ms": int(_get(config, "flink.model_poll_interval_ms")),
        "cache_ttl_ms": int(_get(config, "flink.cache_ttl_ms")),
        "bundle_size": int(_get(config, "flink.python_bundle_size")),
        "bundle_time_ms": int(_get(config, "flink.python_bundle_time_ms")),
        "buffer_timeout_ms": int(_get(config, "flink.buffer_timeout_ms")),
        "parallelism": int(config.get("flink.parallelism", 1)),
        "checkpoint_interval_ms": int(config.get("flink.checkpoint_interval_ms", 5000)),
        "checkpoint_dir": root.as_uri(),
        "python_executable": str(flink_python(config)),
        "ship_connector_jars": bool(_get(config, "flink.ship_connector_jars")),
        "python_worker_mode": str(_get(config, "flink.python_worker_mode")),
        "gil_switch_interval_ms": float(_get(config, "flink.gil_switch_interval_ms")),
        "flink_conf": {str(k): str(v) for k, v in (config.get("flink.conf") or {}).items()},
        "limits": {k: int(config[f"features.{k}"]) for k in ("max_pixels", "max_side", "min_side", "max_file_bytes")},
    }


def _rest(jobmanager: str, path: str, method: str = "GET") -> dict:
    req = urllib.request.Request(f"http://{jobmanager}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise PhotoscoreError(f"the Flink cluster at {jobmanager} does not answer ({exc}); check flink.jobmanager") from None
    return json.loads(body) if body else {}


def start_stream(config, export_format: str | None = None, restore: bool = True, wait_s: float = 120.0) -> dict:
    """Start the job (mini-cluster process, or `flink run` on the configured session cluster).

    Returns {"mode", "pid" | "job_id", "log", "restore"}. Idempotent for the mini-cluster.
    """
    from jobs.broker import bootstrap_servers, kafka_metadata, pid_alive, read_pid, start_process

    d = stream_dir(config)
    d.mkdir(parents=True, exist_ok=True)
    pid_path, log_path = d / "job.pid", d / "job.log"
    if pid_alive(read_pid(pid_path)):
        return {"mode": "local", "pid": read_pid(pid_path), "log": str(log_path), "already_running": True}
    bootstrap = bootstrap_servers(config)
    kafka_metadata(bootstrap)  # fail now, clearly, rather than in a restart loop
    cfg = job_config(config, bootstrap, registry_url_for_job(config), export_format)
    cfg_path = d / "job-config.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    checkpoint = latest_checkpoint(config) if restore else None
    restore_args = ["--restore", checkpoint.as_uri()] if checkpoint else []
    jobmanager = _get(config, "flink.jobmanager")
    if jobmanager:
        py = str(flink_python(config))
        argv = [str(flink_bin(config)), "run", "-d", "-m", jobmanager, "-py", str(JOB_SCRIPT),
                "-pyexec", py, "-pyclientexec", py]
        if checkpoint:
            argv[2:2] = ["-s", checkpoint.as_uri()]
        argv += ["--config-json", str(cfg_path)]
        env = dict(os.environ, PYFLINK_CLIENT_EXECUTABLE=py)
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
    env = dict(os.environ)
    # The Python worker is started by the JVM; make sure neither picks another environment's python.
    env["PATH"] = f"{Path(cfg['python_executable']).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    env["FLINK_LOG_DIR"] = str(d)  # the mini-cluster's own log next to job.log, not inside the wheel
    jvm_args = str(_get(config, "flink.jvm_args")).strip()
    if jvm_args:
        env["JVM_ARGS"] = f"{env.get('JVM_ARGS', '')} {jvm_args}".strip()
    pid = start_process([cfg["python_executable"], str(JOB_SCRIPT), "--config-json", str(cfg_path), *restore_args],
                        log_path, pid_path, env=env, cwd=d)
    return {"mode": "local", "pid": pid, "log": str(log_path), "restore": str(checkpoint) if checkpoint else None}


def stop_stream(config, stop_registry: bool = True) -> bool:
    """Stop the job (and the local registry server it used). Checkpoints are kept for the next start."""
    from jobs.broker import stop_process

    d = stream_dir(config)
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


def stream_status(config) -> dict:
    """{"running": bool, "mode", "pid"/"job_id", "state", "checkpoint", "log"}."""
    from jobs.broker import pid_alive, read_pid

    d = stream_dir(config)
    status: dict = {"log": str(d / "job.log")}
    ckpt = latest_checkpoint(config)
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
    return status


def register(subparsers) -> None:
    p = subparsers.add_parser("stream", help="start, stop or inspect the PyFlink scoring job",
                              description=__doc__)
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument("--format", dest="export_format", default=None,
                   help="export format to score with (default: config scoring.format)")
    p.add_argument("--fresh", action="store_true", help="start without restoring the newest checkpoint")
    p.set_defaults(handler=run)


def run(args, config) -> int:
    if args.action == "start":
        info = start_stream(config, export_format=args.export_format, restore=not args.fresh)
        for k, v in info.items():
            print(f"{k}={v}")
        return 0
    if args.action == "stop":
        print("stopped" if stop_stream(config) else "not running")
        return 0
    status = stream_status(config)
    for k, v in status.items():
        print(f"{k}={v}")
    return 0 if status.get("running") else 1
