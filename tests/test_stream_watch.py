"""The stream watch on a real job (Tansu + Flink's mini-cluster): a running job is healthy with its
checkpoint age and consumer lag measured; a killed job is restarted from its checkpoint and the
watch reports the outage; a job stopped on purpose is left alone."""
from __future__ import annotations

from pathlib import Path

import pytest

from _stream_fixtures import collect, kill_job, produce, running_broker, running_stream, stream_config
from jobs.stream_supervisor import latest_checkpoint, stop_stream, stream_status
from jobs.stream_watch import watch_stream
from jobs.supervise import wait_until
from jobs.topic_io import file_upload

pytestmark = pytest.mark.integration


def test_watch_measures_a_live_job_and_restarts_a_dead_one(stream_registry, corpus_dir, corpus_labels, tmp_path):
    config = stream_config(tmp_path / "home", stream_registry, roots=[corpus_dir])
    paths = sorted(corpus_labels["photo_id"])[:4]
    with running_broker(config, "ephemeral") as bootstrap, running_stream(config) as job:
        refs = produce(bootstrap, config.kafka.topics.uploaded, [(p, file_upload(p, p)) for p in paths])
        collect(config, bootstrap, set(refs), job_log=Path(job["log"]))
        wait_until(lambda: latest_checkpoint(config), 60, 0.5, what="a completed checkpoint")
        health = wait_until(lambda: (h := watch_stream(config, 600, 0)).ok and h, 60, 1,
                            what="the job's committed offsets to catch up (lag 0)")
        assert any("consumer lag on photos.uploaded: 0" in line for line in health.lines), health.lines
        assert not watch_stream(config, 600, 0).restarted

        kill_job(config)
        assert not stream_status(config)["running"]
        health = watch_stream(config, 600, 1000)
        assert health.restarted and not health.ok and "stream job down" in health.problems[0]
        assert stream_status(config)["running"]  # restarted from its newest checkpoint
        stop_stream(config, stop_registry=False)
        health = watch_stream(config, 600, 1000)
        assert health.ok and not health.restarted and "stopped on purpose" in health.lines[0]
