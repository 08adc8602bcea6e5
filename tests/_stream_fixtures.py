"""Shared stream-test machinery: a registry with two real model versions at the tracking URI the
Flink workers are given, brokers and jobs that are always stopped, and result collection. The
fixture is registered once, by `pytest_plugins` in tests/conftest.py; test modules import only the
helpers."""
from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest

from _models_fixtures import built_bundle
from _photo_fixtures import worker_python
from jobs.config import load_settings
from models.data import load_training_data
from udfs.features import feature_set

MODEL = "photo_quality"


@pytest.fixture(scope="session")
def stream_registry(model_data, versioned_frames, tmp_path_factory):
    """{"url", "v1", "v2", "old", "bundles"}: xgboost v1 (champion) and logreg v2 on the newest
    features, and xgboost `old` on the oldest feature version, in an MLflow store at the URI
    `registry_url_for_job` gives the job (a local server, if any, is stopped at session end)."""
    from jobs.stream_supervisor import registry_url_for_job, stream_dir
    from jobs.supervise import stop_process
    from models.registry import log_and_register, promote

    home = tmp_path_factory.mktemp("stream-registry")
    config = load_settings([f"home={home}", f"flink.python={worker_python(home / 'python')}"], env={})
    try:
        built = {t: built_bundle(t, model_data, tmp_path_factory) for t in ("xgboost", "logreg")}
        oldest = min(versioned_frames)
        old_data = load_training_data(*versioned_frames[oldest], "low_quality", feature_set(oldest).names, oldest)
        built["old"] = built_bundle("xgboost", old_data, tmp_path_factory)
        v1 = log_and_register(built["xgboost"], MODEL, config, {"model_type": "xgboost"})
        v2 = log_and_register(built["logreg"], MODEL, config, {"model_type": "logreg"})
        old = log_and_register(built["old"], MODEL, config, {"model_type": "xgboost"})
        promote(config, MODEL, v1.version, "champion")
        url = registry_url_for_job(config)
        yield {"url": url, "v1": int(v1.version), "v2": int(v2.version), "old": int(old.version),
               "config": config, "bundles": {int(v1.version): built["xgboost"].bundle_dir,
                                             int(v2.version): built["logreg"].bundle_dir,
                                             int(old.version): built["old"].bundle_dir}}
    finally:
        stop_process(stream_dir(config) / "registry.pid")


def stream_config(home: Path, registry: dict, *overrides: str, roots=(), store=None):
    """A config for one test: its own home (broker, checkpoints, bundle cache), the shared registry,
    photos readable under `roots`, the job's Python running this checkout's code (and the fake
    object store `store`, if given)."""
    python = worker_python(home / "python", store)
    return load_settings([f"home={home}", f"mlflow.tracking_uri={registry['url']}",
                          "flink.checkpoint_interval_ms=1500", "flink.model_poll_interval_ms=1000",
                          f"flink.python={python}", f"storage.photo_roots={json.dumps([str(r) for r in roots])}",
                          *overrides], env={})


@contextlib.contextmanager
def running_broker(config, mode: str):
    """The embedded broker in `mode` with the topics configured; always stopped."""
    from jobs.broker import start_broker, stop_broker
    from jobs.kafka_admin import configure_topics, topic_specs

    try:
        state = start_broker(config, mode=mode)
        configure_topics(state["bootstrap"], topic_specs(config.kafka))
        yield state["bootstrap"]
    finally:
        stop_broker(config)


@contextlib.contextmanager
def running_stream(config):
    """The Flink job (mini-cluster); always stopped (checkpoints kept)."""
    from jobs.stream_supervisor import start_stream, stop_stream

    try:
        yield start_stream(config)
    finally:
        stop_stream(config, stop_registry=False)


def kill_job(config) -> None:
    """SIGKILL the job's whole process group (client, JVM mini-cluster, Python workers): a crash."""
    from jobs.supervise import pid_alive, read_pid, wait_until

    pid_path = config.home / "stream" / "job.pid"
    pid = read_pid(pid_path)
    assert pid and pid_alive(pid), "the job is not running"
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 10, 0.1, what=f"the killed job (pid {pid}) to end")
    pid_path.unlink(missing_ok=True)


def collect(config, bootstrap: str, refs: set[str], timeout_s: float = 240.0,
            job_log: Path | None = None) -> tuple[list[dict], list[dict]]:
    """Read photos.scores and photos.dlq until every upload ref in `refs` has a record (or time out).

    Returns (scores, dlq) - all records, duplicates included."""
    from jobs.supervise import WaitTimeout, wait_until
    from jobs.topic_io import read_topic

    seen: set[str] = set()

    def records() -> tuple[list[dict], list[dict]] | None:
        scores = [json.loads(v) for _, _, v in read_topic(bootstrap, config.kafka.topics.scores, idle_s=1.0)]
        dlq = [json.loads(v) for _, _, v in read_topic(bootstrap, config.kafka.topics.dlq, idle_s=1.0)]
        seen.update({s["upload_ref"] for s in scores} | {d["source_ref"] for d in dlq})
        return (scores, dlq) if refs <= seen else None

    try:
        return wait_until(records, timeout_s, 1.0, what=f"records of {len(refs)} uploads")
    except WaitTimeout as exc:
        tail = job_log.read_text()[-3000:] if job_log and job_log.is_file() else ""
        raise AssertionError(f"{len(refs - seen)} of {len(refs)} uploads have no record ({exc}), "
                             f"e.g. {sorted(refs - seen)[:5]}\n{tail}") from None


def produce(bootstrap: str, topic: str, values: list[tuple[str, bytes]]) -> list[str]:
    """Send (key, raw value) messages; returns their refs `topic/partition/offset` in order."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_request_size=8 << 20)
    try:
        futures = [producer.send(topic, key=k.encode(), value=v) for k, v in values]
        producer.flush()
        metas = [f.get(timeout=30) for f in futures]
    finally:
        producer.close()
    return [f"{m.topic}/{m.partition}/{m.offset}" for m in metas]
