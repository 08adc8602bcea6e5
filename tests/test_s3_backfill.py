"""The feature backfill over a manifest of `s3://` URIs in the local S3 store, run with spark-submit
as `photoscore backfill` runs it (the executors inherit the store's AWS_* variables, as on a host
where an operator exported them): the same features and scores as for the same bytes on local disk,
a missing object quarantined as unreadable_uri; the store killed mid-run fails the run without
quarantining anything, and the rerun after a restart has exactly one row per content."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _s3_fixtures import kill_store, restart_store
from _spark_fixtures import home_config, job_env, job_output, last_counts, submit, table_files
from jobs.photo_upload import copy_to_store, object_uris
from jobs.spark_session import spark_submit_command
from jobs.supervise import WaitTimeout, wait_until
from udfs.features import FEATURE_NAMES, content_sha256, extract_batch

pytestmark = pytest.mark.integration

MODEL = "models:/photo_quality@champion"


@pytest.fixture(scope="module")
def s3_manifest(s3_store, spark_corpus, tmp_path_factory) -> dict:
    """The Spark corpus (photos/, broken/) copied into the store, and a manifest of its URIs plus
    one of an object that does not exist: {"manifest", "files" (uri -> local path), "missing", "roots"}."""
    files = sorted(str(p) for p in spark_corpus.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    uris = object_uris(files, [str(spark_corpus)], f"{s3_store.root}backfill/")
    copy_to_store(files, uris, s3_store.config.storage)
    missing = f"{s3_store.root}backfill/photos/missing.jpg"
    manifest = tmp_path_factory.mktemp("s3-manifest") / "uris.txt"
    manifest.write_text("".join(f"{u}\n" for u in [*uris, missing]))
    # The bucket is a photo root (storage.photo_roots confines where photos are read from).
    roots = f'storage.photo_roots=["{s3_store.root}"]'
    return {"manifest": manifest, "files": dict(zip(uris, files)), "missing": missing, "roots": roots}


def backfill_args(s3_manifest: dict, root: Path) -> list[str]:
    return ["--input", str(s3_manifest["manifest"]), "--tables", str(root), "--set", s3_manifest["roots"]]


def tables(root: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(root / name) if (root / name).is_dir() else pd.DataFrame()
            for name in ("features", "photos", "quarantine")}


def test_s3_manifest_backfill_gives_the_local_features_and_scores(s3_manifest, spark_model_home, bad_inputs,
                                                                 tmp_path, monkeypatch):
    from jobs.cli import main as cli_main

    root = tmp_path / "tables"
    done = submit("backfill_features.py", backfill_args(s3_manifest, root), spark_model_home)
    assert done.returncode == 0, job_output(done)
    counts = last_counts(done.stdout)
    files = s3_manifest["files"]
    assert counts["inputs"] == len(files) + 1 == counts["featured"] + counts["quarantined"] + counts["known"]
    got = tables(root)

    # Every readable object's photo row names it by its URI and its content.
    blobs = {uri: Path(path).read_bytes() for uri, path in files.items()}
    assert dict(zip(got["photos"]["photo_id"], got["photos"]["content_sha256"])) == {
        uri: content_sha256(data) for uri, data in blobs.items()}

    # The bad inputs get the reasons they get from local disk; the missing object is unreadable.
    reasons = dict(zip(got["quarantine"]["source_ref"], got["quarantine"]["reason_code"]))
    by_name = {Path(p).name: code for p, code in bad_inputs.items()}
    expected = {uri: by_name[Path(p).name] for uri, p in files.items() if "broken" in Path(p).parts}
    assert reasons == {**expected, s3_manifest["missing"]: "unreadable_uri"}

    # Same features, bit for bit, as the in-process extractor on the local files' bytes.
    good = [uri for uri in files if uri not in expected]
    local = extract_batch(good, [blobs[u] for u in good]).features
    local = local.drop_duplicates("content_sha256").set_index("content_sha256").sort_index()
    from_s3 = got["features"].set_index("content_sha256").sort_index()
    assert list(local.index) == list(from_s3.index)
    np.testing.assert_array_equal(local[list(FEATURE_NAMES)].to_numpy(np.float32),
                                  from_s3[list(FEATURE_NAMES)].to_numpy(np.float32))

    # Scores of the S3 backfill equal `photoscore score` on the local bytes' features.
    done = submit("backfill_scores.py", ["--model", MODEL, "--tables", str(root)], spark_model_home)
    assert done.returncode == 0, job_output(done)
    scores = pd.read_parquet(root / "scores")
    features_file = tmp_path / "local-features.parquet"
    local.reset_index().to_parquet(features_file, index=False)
    monkeypatch.setenv("PHOTOSCORE_HOME", str(spark_model_home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)   # an earlier test's registry (job_env says why)
    assert cli_main(["score", "--model", MODEL, "--features", str(features_file),
                     "--out", str(tmp_path / "local-scores.parquet")]) == 0
    on_disk = pd.read_parquet(tmp_path / "local-scores.parquet")
    on_disk = dict(zip(on_disk["content_sha256"], on_disk["score"]))
    from_store = dict(zip(scores["content_sha256"], scores["score"]))
    assert from_store.keys() == on_disk.keys()
    assert max(abs(from_store[k] - on_disk[k]) for k in on_disk) <= 1e-6


def test_store_killed_mid_backfill_fails_the_run_quarantines_nothing_and_the_rerun_completes(
        s3_store, s3_manifest, spark_model_home, tmp_path):
    root = tmp_path / "tables"
    args = backfill_args(s3_manifest, root)
    env = job_env(spark_model_home)
    cmd = spark_submit_command(home_config(spark_model_home).spark, "backfill_features.py", args, master="local[2]")
    log = tmp_path / "killed-run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # The hash pass (every object read once) has started writing: kill the store under it.
        # Whatever it had read by then, the decode pass must read each new content again.
        try:
            wait_until(lambda: proc.poll() is not None or any(root.glob("_staging/*/classified")), 300, 0.1,
                       what="the backfill's hash pass to start")
        except WaitTimeout:
            pass
        assert proc.poll() is None, f"the run ended before the store could be killed:\n{log.read_text()[-3000:]}"
        kill_store(s3_store)
        returncode = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        restart_store(s3_store)
    assert returncode != 0, f"the run must fail while its store is down:\n{log.read_text()[-3000:]}"
    assert not table_files(root), "a failed run commits nothing: no photo is quarantined for the store's fault"

    done = submit("backfill_features.py", args, spark_model_home)
    assert done.returncode == 0, job_output(done)
    counts = last_counts(done.stdout)
    assert counts["inputs"] == len(s3_manifest["files"]) + 1 == counts["featured"] + counts["quarantined"]
    got = tables(root)
    contents = {content_sha256(Path(p).read_bytes()) for u, p in s3_manifest["files"].items()
                if "broken" not in Path(p).parts}
    assert got["features"]["content_sha256"].is_unique and set(got["features"]["content_sha256"]) == contents
    assert got["photos"]["photo_id"].is_unique and len(got["photos"]) == len(s3_manifest["files"])
    # Only the photos' own faults: the broken files and the missing object.
    assert set(got["quarantine"]["source_ref"]) == {
        u for u, p in s3_manifest["files"].items() if "broken" in Path(p).parts} | {s3_manifest["missing"]}
