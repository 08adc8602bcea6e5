"""Spark test fixtures: the suite's ONE SparkSession (`local[2]`), a small corpus copy with
duplicates and broken files, a registered model in a private PHOTOSCORE_HOME, and helpers to run
the spark-submit entrypoints and a standalone cluster. The fixtures are registered once, by
`pytest_plugins` in tests/conftest.py; test modules import only the helper functions.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from contextlib import contextmanager, suppress
from pathlib import Path

import pandas as pd
import pytest

from _models_fixtures import write_frames
from jobs.config import load_settings
from jobs.spark_session import spark_env, spark_submit_command
from jobs.supervise import WaitTimeout, free_port, wait_until
from udfs.errors import PhotoscoreError

REPO = Path(__file__).resolve().parent.parent
SPARK_PHOTOS = 14  # corpus photos copied into the Spark corpus (plus every broken file and one duplicate)


@pytest.fixture(scope="session")
def spark():
    """The one SparkSession of the test session: local[2], small shuffles, no UI."""
    for key, value in spark_env().items():
        os.environ.setdefault(key, value)
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("photoscore-tests")
               .config("spark.driver.host", "127.0.0.1").config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "4")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def spark_corpus(corpus_dir, tmp_path_factory) -> Path:
    """Photos (some with exact duplicates), every broken file, and one extra byte-identical copy."""
    out = tmp_path_factory.mktemp("spark_corpus")
    labels = pd.read_parquet(corpus_dir / "labels.parquet").sort_values("photo_id")
    dups = labels[labels["duplicate_of"].notna()]
    chosen = list(dups["photo_id"][:4]) + list(dups["duplicate_of"][:4])
    chosen += [p for p in labels["photo_id"] if p not in chosen][: SPARK_PHOTOS - len(set(chosen))]
    (out / "photos").mkdir()
    for path in sorted(set(chosen)):
        shutil.copy2(path, out / "photos" / Path(path).name)
    shutil.copy2(sorted(set(chosen))[0], out / "photos" / "copy_of_first.jpg")
    shutil.copytree(corpus_dir / "broken", out / "broken")
    return out


@pytest.fixture(scope="session")
def spark_model_home(tmp_path_factory, corpus_features, corpus_labels):
    """A PHOTOSCORE_HOME with `photo_quality` version 1 (xgboost) promoted to @champion."""
    from models.registry import promote
    from models.train import train_and_register
    from models.trainers import TrainParams

    home = tmp_path_factory.mktemp("spark_home")
    config = load_settings(env={"PHOTOSCORE_HOME": str(home)})
    fp, lp = write_frames(corpus_features, corpus_labels, home / "train")
    result = train_and_register(fp, lp, "low_quality", "xgboost", "photo_quality", config,
                                TrainParams(trees=30, depth=4))
    promote(config, "photo_quality", str(result.version), "champion")
    return home


@pytest.fixture(scope="session")
def versioned_model_home(tmp_path_factory, versioned_frames) -> tuple[Path, dict[int, int]]:
    """A PHOTOSCORE_HOME whose `photo_quality` has one version (xgboost, no alias) trained on each
    feature version: (home, {feature version: model version})."""
    from models.train import train_and_register
    from models.trainers import TrainParams

    home = tmp_path_factory.mktemp("versioned_home")
    config = home_config(home)
    models = {}
    for feature_version, (fp, lp) in sorted(versioned_frames.items()):
        result = train_and_register(fp, lp, "low_quality", "xgboost", "photo_quality", config,
                                    TrainParams(trees=20, depth=3))
        assert result.feature_version == feature_version
        models[feature_version] = result.version
    return home, models


def home_config(home: Path):
    return load_settings(env={"PHOTOSCORE_HOME": str(home)})


def job_env(home: Path) -> dict[str, str]:
    """The environment of a spark-submit job over `home`. Without MLFLOW_TRACKING_URI: an ambient
    one (a developer's shell) outranks the home's registry."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return spark_env({**env, "PHOTOSCORE_HOME": str(home)})


def submit(script: str, args: list[str], home: Path, master: str = "local[2]", timeout: float = 600,
           extra_conf: dict | None = None) -> subprocess.CompletedProcess:
    """Run a job with spark-submit exactly as `photoscore backfill` builds it."""
    env = job_env(home)
    cmd = spark_submit_command(home_config(home).spark, script, args, master=master, extra_conf=extra_conf)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def job_output(done: subprocess.CompletedProcess) -> str:
    """What a failed spark-submit said: the Python driver's traceback is in stdout (spark-submit
    merges the driver's stderr into it), Spark's own log in stderr."""
    return f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-1500:]}"


def last_counts(stdout: str) -> dict[str, int]:
    """The job's final counts line (`inputs=...` or `rows=...`, the last such stdout line) as a dict."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith(("inputs=", "rows="))]
    assert lines, f"no final counts line in the job's output:\n{stdout[-2000:]}"
    line = lines[-1]
    return {k: int(v) for k, v in (item.split("=") for item in line.split())}


def kill_when(script: str, args: list[str], home: Path, ready, timeout: float = 300) -> int:
    """Start a spark-submit job and SIGKILL its whole process group once `ready()` is true."""
    env = job_env(home)
    cmd = spark_submit_command(home_config(home).spark, script, args, master="local[2]")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        # A job that ends first stops the wait too (the assertion below says so); past the timeout
        # the job is killed wherever it is.
        with suppress(WaitTimeout):
            wait_until(lambda: proc.poll() is not None or ready(), timeout, 0.2, what=f"{script} to be ready to kill")
        killed_running = proc.poll() is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_running, "the job ended before it could be killed mid-run"
    return proc.returncode


@contextmanager
def standalone_cluster(workdir: Path):
    """A Spark standalone master and one worker (2 cores) on loopback, always stopped."""
    import pyspark

    spark_class = str(Path(pyspark.__file__).resolve().parent / "bin" / "spark-class")
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    env = spark_env({**os.environ, "SPARK_LOG_DIR": str(workdir), "SPARK_WORKER_DIR": str(workdir / "work")})
    procs = []
    try:
        master = subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", "0"], env=env, stdout=open(workdir / "master.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        procs.append(master)
        url = f"spark://127.0.0.1:{port}"
        worker = subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--webui-port", "0",
             "--cores", "2", "--memory", "2g", url], env=env, stdout=open(workdir / "worker.log", "w"),
            stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(worker)
        try:
            wait_until(lambda: "Successfully registered with master" in (workdir / "worker.log").read_text(),
                       120, 0.5, what="the standalone worker to register", watch=worker)
        except PhotoscoreError as exc:
            raise RuntimeError(f"{exc}:\n" + (workdir / "worker.log").read_text()[-3000:]) from None
        yield url
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def table_files(root: Path) -> list[str]:
    """Committed parquet files under a table root (staging excluded)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet") if "_staging" not in p.parts)


def scores_by_content(spark, root: Path, model_version: int | None = None) -> dict[str, float]:
    from jobs.spark_tables import register_views

    register_views(spark, str(root))
    where = f"WHERE model_version = {model_version}" if model_version is not None else ""
    rows = spark.sql(f"SELECT content_sha256, score FROM scores {where}").collect()
    out = {r["content_sha256"]: r["score"] for r in rows}
    assert len(out) == len(rows), "more than one score row for an identity"
    return out
