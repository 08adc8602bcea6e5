"""The local S3 photo store for tests: one per session, under its own home, always stopped. While
it runs, its AWS_* variables are in this process' environment, so what the tests start (spark-submit,
the Flink job, their Python workers) reaches it exactly as an operator's shell would after
`eval "$(photoscore s3 up)"`. Registered once, by `pytest_plugins` in tests/conftest.py; test modules
import only the helpers."""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobs.config import load_settings


@dataclass(frozen=True)
class S3Store:
    """The running store: its config (home, storage.s3), bucket and client variables."""

    config: object
    bucket: str
    env: dict

    @property
    def root(self) -> str:
        """The bucket as an `s3://` prefix."""
        return f"s3://{self.bucket}/"


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory):
    """The local S3 photo store (SeaweedFS on 127.0.0.1) with its bucket; its client variables set
    in os.environ for the session's rest."""
    from jobs.s3_store import client_env, start_s3_store, stop_s3_store

    home = tmp_path_factory.mktemp("s3-store")
    config = load_settings([f"home={home}"], env={})
    with pytest.MonkeyPatch.context() as mp:
        try:
            state = start_s3_store(config)
            env = client_env(config)
            for key, value in env.items():
                mp.setenv(key, value)
            yield S3Store(config, state["bucket"], env)
        finally:
            stop_s3_store(config)


def upload(store: S3Store, files: list[Path], prefix: str) -> list[str]:
    """Copy `files` (by name) under `prefix` in the store's bucket; returns their s3:// URIs."""
    from jobs.photo_upload import copy_to_store, object_uris

    uris = object_uris([str(f) for f in files], [], f"{store.root}{prefix}")
    copy_to_store([str(f) for f in files], uris, store.config.storage)
    return uris


def kill_store(store: S3Store) -> None:
    """SIGKILL the store's server (a crash: nothing flushed, the pid file left behind)."""
    from jobs.s3_store import store_paths
    from jobs.supervise import pid_alive, read_pid, wait_until

    pid = read_pid(store_paths(store.config).pid)
    assert pid, "the S3 store is not running"
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 10, 0.1, what=f"the killed S3 store (pid {pid}) to end")


def restart_store(store: S3Store) -> None:
    """Start the store again after `kill_store`: same home, ports, keys and bucket."""
    from jobs.s3_store import client_env, start_s3_store

    start_s3_store(store.config)
    assert client_env(store.config) == store.env, "a restarted store must keep its endpoint and keys"
