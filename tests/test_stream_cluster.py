"""`flink run` against a Flink session cluster by config alone: a JobManager and a TaskManager from
the apache-flink wheel's own scripts (jobmanager.sh / taskmanager.sh) on loopback."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from _stream_fixtures import collect, produce, running_broker, stream_config
from jobs.supervise import WaitTimeout, free_port, wait_until
from jobs.topic_io import file_upload
from udfs.messages import encode_upload

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def _flink_home() -> Path:
    out = subprocess.run([str(REPO / ".venv-flink" / "bin" / "python"), "-c",
                          "import pyflink, os; print(os.path.dirname(pyflink.__file__))"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def _taskmanagers(rest_port: int) -> int:
    """TaskManagers registered with the session cluster's JobManager (0 while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/overview", timeout=3) as resp:
            return int(json.loads(resp.read()).get("taskmanagers", 0))
    except OSError:
        return 0


@pytest.fixture
def session_cluster(tmp_path, monkeypatch):
    """A standalone session cluster on loopback with its own conf, log and pid dirs; always stopped."""
    home = _flink_home()
    conf_dir = tmp_path / "flink-conf"
    shutil.copytree(home / "conf", conf_dir)
    conf = yaml.safe_load((conf_dir / "config.yaml").read_text())
    rest, rpc = free_port(), free_port()
    conf["jobmanager"].update({"bind-host": "127.0.0.1", "rpc": {"address": "127.0.0.1", "port": rpc}})
    conf["taskmanager"].update({"bind-host": "127.0.0.1", "host": "127.0.0.1", "numberOfTaskSlots": 2})
    conf["jobmanager"]["memory"]["process"]["size"] = "1024m"
    conf["taskmanager"]["memory"]["process"]["size"] = "1536m"
    conf["rest"] = {"address": "127.0.0.1", "bind-address": "127.0.0.1", "port": rest}
    (conf_dir / "config.yaml").write_text(yaml.safe_dump(conf))
    (conf_dir / "masters").write_text(f"127.0.0.1:{rest}\n")
    # A cluster that runs PyFlink jobs has flink-python in its lib/ (the wheel keeps it in opt/).
    lib_dir = tmp_path / "flink-lib"
    lib_dir.mkdir()
    for jar in [*(home / "lib").glob("*.jar"), *(home / "opt").glob("flink-python-*.jar")]:
        (lib_dir / jar.name).symlink_to(jar)
    env = dict(os.environ, FLINK_CONF_DIR=str(conf_dir), FLINK_LOG_DIR=str(tmp_path / "flink-log"),
               FLINK_PID_DIR=str(tmp_path / "flink-pid"), FLINK_LIB_DIR=str(lib_dir))
    (tmp_path / "flink-log").mkdir()
    (tmp_path / "flink-pid").mkdir()
    for k, v in env.items():
        if k.startswith("FLINK_"):
            monkeypatch.setenv(k, v)
    scripts = home / "bin"
    try:
        subprocess.run(["bash", str(scripts / "jobmanager.sh"), "start"], env=env, check=True, capture_output=True)
        subprocess.run(["bash", str(scripts / "taskmanager.sh"), "start"], env=env, check=True, capture_output=True)
        try:
            wait_until(lambda: _taskmanagers(rest) >= 1, 180, 1.0, what="the session cluster to come up")
        except WaitTimeout as exc:
            logs = "\n".join(p.read_text()[-2000:] for p in (tmp_path / "flink-log").glob("*.log"))
            raise AssertionError(f"{exc}\n{logs}") from None
        yield f"127.0.0.1:{rest}"
    finally:
        subprocess.run(["bash", str(scripts / "taskmanager.sh"), "stop"], env=env, capture_output=True)
        subprocess.run(["bash", str(scripts / "jobmanager.sh"), "stop"], env=env, capture_output=True)


def test_flink_run_on_a_session_cluster_by_config(stream_registry, session_cluster, corpus_dir, corpus_features,
                                                  tmp_path):
    from jobs.stream_supervisor import start_stream, stop_stream, stream_status

    config = stream_config(tmp_path / "home", stream_registry, f"flink.jobmanager={session_cluster}",
                           roots=[corpus_dir])
    photos = sorted(corpus_features["photo_id"])[:12]
    with running_broker(config, "ephemeral") as bootstrap:
        try:
            info = start_stream(config)
            assert info["mode"] == "session" and info["job_id"]
            assert stream_status(config)["running"]
            refs = produce(bootstrap, config.kafka.topics.uploaded,
                           [(p, file_upload(p, p) if i % 2 else encode_upload(p, Path(p).as_uri()))
                            for i, p in enumerate(photos)] + [("x", b"not json")])
            scores, dlq = collect(config, bootstrap, set(refs), timeout_s=300, job_log=Path(info["log"]))
            assert {s["upload_ref"] for s in scores} == set(refs[:-1])
            assert [d["reason_code"] for d in dlq] == ["malformed_message"]
        finally:
            stop_stream(config, stop_registry=False)
        assert not stream_status(config)["running"] or stream_status(config)["state"] in ("CANCELLING", "CANCELED")
