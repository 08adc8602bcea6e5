"""A local MLflow server over the registry's store, supervised like the broker: `mlflow server` on
127.0.0.1 with a pid file, a log and a URL file in a run directory.

Two callers start one: the stream job, when its Flink environment cannot open the SQLite store
itself (jobs/stream_supervisor.py), and `photoscore ui`, for the MLflow UI (jobs/operator_views.py).
The server is MLflow's own (its UI included), so a running one serves both.
"""
from __future__ import annotations

import sys
from pathlib import Path

from jobs.supervise import free_port, http_ok, read_pid, start_process, wait_until


def server_files(run_dir: Path, name: str) -> tuple[Path, Path, Path]:
    """(pid file, URL file, log) of the server called `name` under `run_dir`."""
    return run_dir / f"{name}.pid", run_dir / f"{name}.url", run_dir / f"{name}.log"


def running_server_url(run_dir: Path, name: str) -> str | None:
    """The URL of the server `name` under `run_dir` while its process runs, else None."""
    pid_path, url_path, _ = server_files(run_dir, name)
    if read_pid(pid_path) is None or not url_path.is_file():
        return None
    return url_path.read_text().strip()


def start_registry_server(tracking_uri: str, run_dir: Path, name: str, port: int = 0,
                          wait_s: float = 240.0) -> str:
    """Start `mlflow server` over `tracking_uri` on 127.0.0.1:`port` (0: a free one) unless the one
    under `run_dir`/`name` runs; wait until it answers; return its URL."""
    url = running_server_url(run_dir, name)
    if url:
        return url
    run_dir.mkdir(parents=True, exist_ok=True)
    pid_path, url_path, log_path = server_files(run_dir, name)
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    pid = start_process([mlflow_bin, "server", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1",
                         "--port", str(port), "--workers", "1"], log_path, pid_path)
    url = f"http://127.0.0.1:{port}"
    # Its start imports all of MLflow's server: ~20 s idle here, minutes on a loaded 2-core machine.
    wait_until(lambda: http_ok(f"{url}/health"), wait_s, 0.3, what=f"the MLflow server at {url}",
               watch=pid, hint=f"see {log_path}")
    url_path.write_text(url + "\n")
    return url
