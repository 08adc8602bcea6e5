"""The local S3 photo store: a SeaweedFS S3 server on 127.0.0.1 holding photos, for the demo, the
tests and a laptop - the same `s3://` reads and uploads as against AWS or any S3-compatible store.

Separate from the durable broker's SeaweedFS (jobs.broker): its own data under
`<home>/s3/seaweedfs`, its own keys generated once into `<home>/s3/s3.json` (mode 600; they never
leave the home), its own bucket (`storage.s3.embedded_bucket`), its own ports (kept in
`<home>/s3/ports.json`; `storage.s3.embedded_port` fixes the S3 one). Supervised like the broker
(pid file with the create time, log, SIGTERM then SIGKILL).

Clients find it through the standard variables `client_env` gives (`photoscore s3 up` prints them):
nothing reads the keys from the home behind the user's back.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jobs.seaweedfs import PORT_NAMES, REGION, s3_credentials, start_seaweedfs
from jobs.supervise import kept_ports, read_json, read_pid, stop_process, wait_until, write_json
from udfs.errors import PhotoscoreError
from udfs.settings import Settings


# The readiness probe's object (dot-named: `photoscore upload` skips hidden files, listings show it last).
HEALTH_KEY = ".photoscore-health"


@dataclass(frozen=True)
class StorePaths:
    """Where one home's S3 photo store keeps its state."""

    root: Path
    state: Path       # endpoint, bucket, region, pid of the running store
    ports: Path       # its ports, kept across restarts
    pid: Path
    log: Path
    data: Path        # SeaweedFS' data
    identities: Path  # its generated keys (mode 600)


def store_paths(settings: Settings) -> StorePaths:
    """The S3 photo store's files under this config's home (`<home>/s3`)."""
    root = settings.home / "s3"
    return StorePaths(root, root / "state.json", root / "ports.json", root / "seaweedfs.pid",
                      root / "seaweedfs.log", root / "seaweedfs", root / "s3.json")


def start_s3_store(settings: Settings, timeout_s: float = 60.0) -> dict:
    """Start the store (idempotent: a running one is left alone) with its bucket; returns its state:
    endpoint, bucket, region, pid, log."""
    paths = store_paths(settings)
    paths.root.mkdir(parents=True, exist_ok=True)
    state = read_json(paths.state)
    if state and read_pid(paths.pid) is not None:
        return state
    stop_process(paths.pid)  # a crashed start's leftovers
    ports = kept_ports(paths.ports, PORT_NAMES, running=False, fixed={"s3": settings.storage.s3.embedded_port})
    endpoint = start_seaweedfs(paths.data, ports, paths.identities, paths.log, paths.pid, timeout_s)
    bucket = settings.storage.s3.embedded_bucket
    try:
        # The S3 port opens before the filer and volumes behind it serve: ready is a round trip.
        wait_until(lambda: _ready(settings, endpoint, paths, bucket), timeout_s, 0.5,
                   what=f"SeaweedFS at {endpoint} to store and serve an object in bucket {bucket}",
                   watch=read_pid(paths.pid), hint=f"see {paths.log}")
    except PhotoscoreError:
        stop_process(paths.pid)
        raise
    state = {"endpoint": endpoint, "bucket": bucket, "region": REGION, "pid": read_pid(paths.pid),
             "log": str(paths.log)}
    write_json(paths.state, state)
    return state


def _ready(settings: Settings, endpoint: str, paths: StorePaths, bucket: str) -> bool:
    """Create the bucket if new, then write and read back a probe object: True once both work
    (after a restart the S3 port answers before the volume server has re-registered its data)."""
    from udfs.object_store import s3_filesystem

    access, secret = s3_credentials(paths.identities)
    s3 = settings.storage.s3.model_copy(update={"endpoint_url": endpoint, "region": REGION})
    fs = s3_filesystem(s3, 10.0, access, secret)
    probe = f"{bucket}/{HEALTH_KEY}"
    try:
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        fs.pipe_file(probe, b"ok")
        return fs.cat_file(probe) == b"ok"
    except OSError:
        return False


def stop_s3_store(settings: Settings) -> bool:
    """Stop the store (its data stays for the next start); True when a running one was stopped."""
    paths = store_paths(settings)
    if not paths.root.is_dir():
        return False
    stopped = stop_process(paths.pid)
    paths.state.unlink(missing_ok=True)
    return stopped


def s3_store_status(settings: Settings) -> dict:
    """{"running", "endpoint", "bucket", "pid", "log"} of this home's store."""
    paths = store_paths(settings)
    state = read_json(paths.state) or {}
    pid = read_pid(paths.pid)
    return {"running": bool(state) and pid is not None, "endpoint": state.get("endpoint", ""),
            "bucket": state.get("bucket", ""), "pid": pid, "log": str(paths.log)}


def client_env(settings: Settings) -> dict[str, str]:
    """The standard AWS variables a client of the running store needs (for `export`, a test's or
    the demo's environment; the Spark executors and Flink workers inherit them)."""
    paths = store_paths(settings)
    state = read_json(paths.state)
    if not state or read_pid(paths.pid) is None:
        raise PhotoscoreError(f"the S3 photo store is not running under {settings.home}: run `photoscore s3 up`")
    access, secret = s3_credentials(paths.identities)
    return {"AWS_ENDPOINT_URL": state["endpoint"], "AWS_ACCESS_KEY_ID": access,
            "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": state["region"]}
