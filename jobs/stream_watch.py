"""Is the stream job healthy? Its state, its newest checkpoint's age and its consumer lag on
`photos.uploaded`, and a restart from the newest checkpoint when a job meant to run has died.

`photoscore stream status` prints these; Airflow's `photoscore_stream_watch` DAG runs `watch_stream`
every few minutes and fails (so it alerts) on any problem.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from jobs.stream_supervisor import (desired_state, job_settings_path, latest_checkpoint, start_stream,
                                    stream_status)
from udfs.errors import PhotoscoreError
from udfs.settings import Settings


def consumer_lag(bootstrap: str, topic: str, group_id: str) -> int:
    """Records of `topic` the consumer group has not committed yet (all of them when it never
    committed): what the job still has to read, as of its last checkpoint."""
    from kafka import KafkaConsumer, TopicPartition

    # A consumer of the group that never subscribes reads its committed offsets without joining it.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False,
                             request_timeout_ms=10_000)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise PhotoscoreError(f"topic {topic} has no partitions on {bootstrap}; run configureTopics.sh")
        ends = consumer.end_offsets(partitions)
        return sum(max(0, ends[tp] - (consumer.committed(tp) or 0)) for tp in partitions)
    finally:
        consumer.close()


@dataclass
class StreamHealth:
    """What the watch found: one line per check, the problems among them, what it did."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    restarted: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems


def watch_stream(settings: Settings, max_checkpoint_age_s: float, max_lag: int) -> StreamHealth:
    """Check the job under this home; restart it from its newest checkpoint when it should run
    but does not. A job never started here, or stopped on purpose, is not watched."""
    health = StreamHealth()
    desired = desired_state(settings)
    if desired != "running":
        health.lines.append(f"stream job {'stopped on purpose' if desired else 'never started'} under "
                            f"{settings.home}: nothing to watch")
        return health
    status = stream_status(settings)
    job = Settings.model_validate_json(job_settings_path(settings).read_text())
    if not status.get("running"):
        checkpoint = latest_checkpoint(settings)
        health.problems.append(f"stream job down (state {status.get('state') or 'no process'}); restarted "
                               f"from {checkpoint or 'the committed offsets (no checkpoint)'}; see {status['log']}")
        start_stream(job, restore=True)
        health.restarted = True
        return health
    health.lines.append(f"stream job running ({status['mode']} {status.get('pid') or status.get('job_id')})")
    checkpoint = latest_checkpoint(settings)
    if checkpoint is None:
        health.lines.append("no completed checkpoint yet")
    else:
        age = time.time() - (checkpoint / "_metadata").stat().st_mtime
        health.lines.append(f"newest checkpoint {checkpoint.name}, {age:.0f} s old")
        if age > max_checkpoint_age_s:
            health.problems.append(f"newest checkpoint {checkpoint} is {age:.0f} s old (> {max_checkpoint_age_s:.0f} s)")
    lag = consumer_lag(job.kafka.bootstrap, job.kafka.topics.uploaded, job.flink.group_id)
    health.lines.append(f"consumer lag on {job.kafka.topics.uploaded}: {lag}")
    if lag > max_lag:
        health.problems.append(f"consumer group {job.flink.group_id} is {lag} records behind on "
                               f"{job.kafka.topics.uploaded} (> {max_lag})")
    return health
