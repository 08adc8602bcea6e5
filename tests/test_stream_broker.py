"""The embedded broker's lifecycle and configureTopics.sh against a real Tansu process; the
consumers' fetch wait per broker kind (a short one starves consumers of the durable broker); the
local MLflow server the stream job falls back to when its Python cannot open the SQLite store."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from jobs.broker import FETCH_WAIT_MS, broker_kind, broker_status, fetch_wait_ms, start_broker, stop_broker
from jobs.config import ConfigError, load_settings
from jobs.kafka_admin import configure_topics, kafka_metadata, topic_specs
from jobs.supervise import free_port, pid_alive, read_pid
from jobs.topic_io import read_topic
from udfs.errors import PhotoscoreError
from udfs.features import content_sha256

REPO = Path(__file__).resolve().parents[1]


def _run(argv: list[str], **env) -> subprocess.CompletedProcess:
    """`argv` with this test's environment only: no PHOTOSCORE_* settings leak in from the caller."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSCORE_")}
    full.update(env)
    return subprocess.run(argv, capture_output=True, text=True, env=full, timeout=120)


def _script(home: Path, **env) -> subprocess.CompletedProcess:
    return _run([str(REPO / "configureTopics.sh")], PHOTOSCORE_HOME=str(home), **env)


def _photoscore(home: Path, *args: str) -> subprocess.CompletedProcess:
    return _run([str(REPO / ".venv" / "bin" / "photoscore"), "--set", f"home={home}", *args])


@pytest.mark.integration
def test_ephemeral_broker_lifecycle_and_idempotent_topics(tmp_path):
    home = tmp_path / "home"
    config = load_settings([f"home={home}"], env={})
    try:
        state = start_broker(config, mode="ephemeral")
        assert start_broker(config, mode="ephemeral")["tansu_pid"] == state["tansu_pid"]  # idempotent
        with pytest.raises(PhotoscoreError, match="already running in ephemeral mode"):
            start_broker(config, mode="durable")
        status = broker_status(config)
        assert status["healthy"] and status["bootstrap"] == state["bootstrap"] and status["mode"] == "ephemeral"
        out = _script(home)
        assert out.returncode == 0, out.stderr
        # Every topic of kafka.topics: uploads, scores, shadow scores, dead letters.
        assert out.stdout.count("created partitions=2 retention.ms=3600000") == len(config.kafka.topics.model_dump()) == 4
        again = _script(home)
        assert again.returncode == 0 and "created" not in again.stdout and "partitions" not in again.stdout
        # What differs is updated - or, where the broker cannot (Tansu has no CreatePartitions),
        # said loudly with a distinct exit code.
        bigger = load_settings([f"home={home}", "kafka.partitions=3"], env={})
        lines = configure_topics(state["bootstrap"], topic_specs(bigger.kafka))
        assert all("partitions 2->3" in line or "NOT UPDATED" in line for line in lines), lines
        refused = _script(home, PHOTOSCORE_KAFKA_PARTITIONS="3")
        assert refused.returncode in (0, 4) and (refused.returncode == 4) == ("NOT UPDATED" in refused.stdout)
        assert set(kafka_metadata(state["bootstrap"])) >= {"photos.uploaded", "photos.scores", "photos.dlq"}
        # The CLI prints bootstrap=HOST:PORT.
        cli = _photoscore(home, "broker", "status")
        assert f"bootstrap={state['bootstrap']}" in cli.stdout.splitlines()
        # `photoscore upload` publishes one message per file, bounded by --limit, claiming each hash.
        photos = tmp_path / "photos"
        photos.mkdir()
        for i in range(3):
            (photos / f"p{i}.jpg").write_bytes(bytes([i]) * 100)
        up = _photoscore(home, "upload", "--input", str(photos), "--limit", "2", "--rate", "20")
        assert up.returncode == 0 and "uploaded=2 " in up.stdout, up.stdout + up.stderr
        sent = [json.loads(v) for _, _, v in read_topic(state["bootstrap"], "photos.uploaded", idle_s=1.0,
                                                        fetch_wait_ms=20)]
        assert len(sent) == 2
        for msg in sent:
            data = Path(msg["photo_id"]).read_bytes()
            assert msg["uri"] == Path(msg["photo_id"]).as_uri() and msg["content_sha256"] == content_sha256(data)
    finally:
        assert stop_broker(config)
    assert not pid_alive(state["tansu_pid"]) and not broker_status(config)["healthy"]


@pytest.mark.integration
def test_configure_topics_fails_clearly_without_a_broker(tmp_path):
    out = _script(tmp_path / "nohome")
    assert out.returncode != 0 and "no broker" in out.stderr
    port = free_port()
    out = _script(tmp_path / "nohome", PHOTOSCORE_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}")
    assert out.returncode != 0 and f"127.0.0.1:{port}" in out.stderr


@pytest.mark.integration
def test_external_bootstrap_starts_nothing(tmp_path):
    config = load_settings([f"home={tmp_path}", "kafka.bootstrap=kafka.example:9092"], env={})
    with pytest.raises(PhotoscoreError, match="no local broker is started"):
        start_broker(config)
    assert not (tmp_path / "broker").exists()


# ---------------------------------------------------------------- fetch wait per broker kind

def test_fetch_wait_follows_the_broker_kind_unless_configured(tmp_path):
    durable = load_settings([f"home={tmp_path}"], env={})
    assert broker_kind(durable) == "durable" and fetch_wait_ms(durable) == FETCH_WAIT_MS["durable"]
    ephemeral = load_settings([f"home={tmp_path}", "kafka.embedded_mode=ephemeral"], env={})
    assert fetch_wait_ms(ephemeral) == FETCH_WAIT_MS["ephemeral"]
    external = load_settings([f"home={tmp_path}", "kafka.bootstrap=kafka.example:9092"], env={})
    assert broker_kind(external) == "external" and fetch_wait_ms(external) == FETCH_WAIT_MS["external"]
    # The running broker's mode wins over the configured one (a durable broker started by hand).
    (tmp_path / "broker").mkdir()
    (tmp_path / "broker" / "state.json").write_text(json.dumps({"mode": "durable", "bootstrap": "127.0.0.1:1"}))
    assert broker_kind(ephemeral) == "durable" and fetch_wait_ms(ephemeral) == FETCH_WAIT_MS["durable"]
    # A number wins; "auto" is the kind's value; `kind` forces one; the job's key works the same way.
    assert fetch_wait_ms(load_settings([f"home={tmp_path}", "kafka.fetch_max_wait_ms=75"], env={})) == 75
    assert fetch_wait_ms(load_settings([f"home={tmp_path}", "kafka.fetch_max_wait_ms=auto"], env={})) == 250
    assert fetch_wait_ms(durable, kind="ephemeral") == FETCH_WAIT_MS["ephemeral"]
    job = load_settings([f"home={tmp_path}", "flink.fetch_max_wait_ms=auto", "kafka.fetch_max_wait_ms=75"], env={})
    assert fetch_wait_ms(job, job.flink.fetch_max_wait_ms) == FETCH_WAIT_MS["durable"]
    for bad in ("soon", "-5"):  # refused when the settings load, before any consumer asks
        with pytest.raises(ConfigError, match="kafka.fetch_max_wait_ms"):
            load_settings([f"home={tmp_path}", f"kafka.fetch_max_wait_ms={bad}"], env={})


def test_durable_wait_outlasts_what_a_short_wait_cannot_list():
    # Tansu's s3:// engine LISTs a partition's batches within the fetch wait (~10-20 µs per batch
    # on SeaweedFS): the durable wait must cover thousands, the old 10-20 ms covered a few hundred.
    assert FETCH_WAIT_MS["durable"] >= 200 > 20 >= FETCH_WAIT_MS["ephemeral"]


@pytest.mark.integration
def test_durable_consumers_read_a_partition_of_many_single_record_batches(tmp_path):
    """Every produce request of one record is one S3 object; with the durable broker's fetch wait a
    consumer still reads the whole partition and then its newest record."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    config = load_settings([f"home={tmp_path / 'home'}"], env={})
    n_batches, producers = 1200, 4
    try:
        bootstrap = start_broker(config, mode="durable")["bootstrap"]
        configure_topics(bootstrap, {"many": {"partitions": 1, "retention.ms": 3_600_000}})

        def produce(n: int, first: int) -> None:
            # Waiting for each send makes every record its own batch (its own object).
            producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
            for i in range(first, first + n):
                producer.send("many", value=b"%d" % i, partition=0).get(timeout=30)
            producer.close()

        threads = [threading.Thread(target=produce, args=(n_batches // producers, k * n_batches // producers))
                   for k in range(producers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait = fetch_wait_ms(config)
        assert wait == FETCH_WAIT_MS["durable"]
        records = list(read_topic(bootstrap, "many", idle_s=5.0, fetch_wait_ms=wait))
        assert sorted(int(v) for _, _, v in records) == list(range(n_batches))
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=wait)
        tp = TopicPartition("many", 0)
        consumer.assign([tp])
        consumer.seek(tp, n_batches - 1)
        newest = []
        for _ in range(50):
            newest += [r.offset for batch in consumer.poll(timeout_ms=200).values() for r in batch]
            if newest:
                break
        consumer.close()
        assert newest == [n_batches - 1]
    finally:
        stop_broker(config)


@pytest.mark.integration
def test_job_registry_falls_back_to_a_supervised_mlflow_server_over_the_same_store(tmp_path):
    """A `flink.python` without SQLAlchemy cannot open the SQLite store: the job gets the URL of a
    local MLflow server over that store, reused while it runs and stopped with the stream."""
    from mlflow import MlflowClient

    from jobs.stream_supervisor import registry_url_for_job, stop_stream, stream_dir

    bare = tmp_path / "bare-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    config = load_settings([f"home={tmp_path / 'home'}", f"flink.python={bare / 'bin' / 'python'}"], env={})
    MlflowClient(tracking_uri=config.tracking_uri).create_registered_model("fallback_probe")
    try:
        url = registry_url_for_job(config)
        pid = read_pid(stream_dir(config) / "registry.pid")
        assert url.startswith("http://127.0.0.1:") and pid_alive(pid)
        assert registry_url_for_job(config) == url  # a running server is reused, not restarted
        assert MlflowClient(tracking_uri=url).get_registered_model("fallback_probe").name == "fallback_probe"
    finally:
        stop_stream(config)
    assert not pid_alive(pid)
    assert not (stream_dir(config) / "registry.url").exists()
