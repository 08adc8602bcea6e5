"""The embedded broker's lifecycle and configureTopics.sh against a real Tansu process."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from jobs.broker import (broker_status, configure_topics, kafka_metadata, pid_alive, start_broker, stop_broker,
                         topic_specs)
from jobs.config import load_config
from udfs.errors import PhotoscoreError

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]


def _script(home: Path, **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSCORE_")}
    full.update(PHOTOSCORE_HOME=str(home), **env)
    return subprocess.run([str(REPO / "configureTopics.sh")], capture_output=True, text=True, env=full, timeout=120)


def test_ephemeral_broker_lifecycle_and_idempotent_topics(tmp_path):
    home = tmp_path / "home"
    config = load_config([f"home={home}"], env={})
    try:
        state = start_broker(config, mode="ephemeral")
        assert start_broker(config, mode="ephemeral")["tansu_pid"] == state["tansu_pid"]  # idempotent
        with pytest.raises(PhotoscoreError, match="already running in ephemeral mode"):
            start_broker(config, mode="durable")
        status = broker_status(config)
        assert status["healthy"] and status["bootstrap"] == state["bootstrap"] and status["mode"] == "ephemeral"
        out = _script(home)
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("created partitions=2 retention.ms=3600000") == 3
        again = _script(home)
        assert again.returncode == 0 and "created" not in again.stdout and "partitions" not in again.stdout
        # What differs is updated - or, where the broker cannot (Tansu has no CreatePartitions),
        # said loudly with a distinct exit code.
        bigger = load_config([f"home={home}", "kafka.partitions=3"], env={})
        lines = configure_topics(state["bootstrap"], topic_specs(bigger))
        assert all("partitions 2->3" in line or "NOT UPDATED" in line for line in lines), lines
        refused = _script(home, PHOTOSCORE_KAFKA_PARTITIONS="3")
        assert refused.returncode in (0, 4) and (refused.returncode == 4) == ("NOT UPDATED" in refused.stdout)
        assert set(kafka_metadata(state["bootstrap"])) >= {"photos.uploaded", "photos.scores", "photos.dlq"}
        # The CLI prints bootstrap=HOST:PORT.
        cli = subprocess.run([str(REPO / ".venv" / "bin" / "photoscore"), "--set", f"home={home}", "broker", "status"],
                             capture_output=True, text=True, timeout=120,
                             env={k: v for k, v in os.environ.items() if not k.startswith("PHOTOSCORE_")})
        assert f"bootstrap={state['bootstrap']}" in cli.stdout.splitlines()
    finally:
        assert stop_broker(config)
    assert not pid_alive(state["tansu_pid"]) and not broker_status(config)["healthy"]


def test_configure_topics_fails_clearly_without_a_broker(tmp_path):
    out = _script(tmp_path / "nohome")
    assert out.returncode != 0 and "no broker" in out.stderr
    port = __import__("jobs.broker", fromlist=["free_port"]).free_port()
    out = _script(tmp_path / "nohome", PHOTOSCORE_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}")
    assert out.returncode != 0 and f"127.0.0.1:{port}" in out.stderr


def test_external_bootstrap_starts_nothing(tmp_path):
    config = load_config([f"home={tmp_path}", "kafka.bootstrap=kafka.example:9092"], env={})
    with pytest.raises(PhotoscoreError, match="no local broker is started"):
        start_broker(config)
    assert not (tmp_path / "broker").exists()
