"""Spark backfills on `local[2]`: counts reconcile, reruns do no work, rescoring never decodes, the
four scoring paths agree with each other and with `photoscore score`, kill -9 then rerun gives exact
identities, and a real standalone cluster gives the local results."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from _fake_store import STORE_ENV, FakeStore
from _spark_fixtures import (home_config, job_output, kill_when, last_counts, scores_by_content, standalone_cluster,
                             submit, table_files)
from jobs.backfill_features import run_feature_backfill
from jobs.backfill_scores import run_score_backfill
from jobs.spark_tables import TABLES, file_layout, register_views
from udfs.features import FEATURE_NAMES, content_sha256, extract_batch
from udfs.schemas import SCORE
from udfs.spark_udfs import spark_schema

pytestmark = pytest.mark.integration

FORMATS = ("native", "onnx", "code-c", "code-java")
MODEL = "models:/photo_quality@champion"


def input_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))


@pytest.fixture(scope="module")
def backfilled(spark, spark_corpus, spark_model_home, tmp_path_factory):
    """One feature backfill of the Spark corpus: (tables root, result, config)."""
    root = tmp_path_factory.mktemp("tables")
    config = home_config(spark_model_home)
    result = run_feature_backfill(spark, config, str(spark_corpus), str(root))
    return root, result, config


def test_feature_counts_reconcile_and_duplicates_decode_once(spark, spark_corpus, backfilled, bad_inputs):
    root, result, _ = backfilled
    files = input_files(spark_corpus)
    blobs = {str(p): p.read_bytes() for p in files}
    distinct = {content_sha256(b) for b in blobs.values()}
    assert result.inputs == len(files)
    assert result.inputs == result.featured + result.quarantined + result.known
    assert result.known == 0
    assert result.quarantined == len(list((spark_corpus / "broken").iterdir()))
    # Duplicated contents (corpus exact duplicates and our extra copy) were decoded once.
    assert len(distinct) < len(files)
    assert result.decoded == len(distinct)

    register_views(spark, str(root))
    features = spark.sql("SELECT * FROM features").toPandas()
    assert features["content_sha256"].is_unique
    assert len(features) == len({content_sha256(blobs[str(p)]) for p in files if "broken" not in p.parts})
    photos = spark.sql("SELECT photo_id, content_sha256 FROM photos").toPandas()
    # Every input was readable, so every photo id maps to its content (broken ones included).
    assert sorted(photos["photo_id"]) == sorted(str(p) for p in files)
    assert dict(zip(photos["photo_id"], photos["content_sha256"])) == {
        str(p): content_sha256(blobs[str(p)]) for p in files}

    # Same features, bit for bit, as the in-process extractor.
    local = extract_batch([str(p) for p in files], [blobs[str(p)] for p in files]).features
    local = local.drop_duplicates("content_sha256").set_index("content_sha256").sort_index()
    spark_rows = features.set_index("content_sha256").sort_index()
    assert list(local.index) == list(spark_rows.index)
    np.testing.assert_array_equal(local[list(FEATURE_NAMES)].to_numpy(np.float32),
                                  spark_rows[list(FEATURE_NAMES)].to_numpy(np.float32))

    quarantine = spark.sql("SELECT source_ref, reason_code FROM quarantine").toPandas()
    by_name = {Path(r).name: code for r, code in zip(quarantine["source_ref"], quarantine["reason_code"])}
    expected = {Path(p).name: code for p, code in bad_inputs.items()
                if (spark_corpus / "broken" / Path(p).name).exists()}
    assert by_name == expected


def test_rerun_with_nothing_new_does_no_work(spark, spark_corpus, backfilled):
    root, first, config = backfilled
    before = table_files(root)
    again = run_feature_backfill(spark, config, str(spark_corpus), str(root))
    assert again.decoded == 0
    assert (again.inputs, again.featured, again.known, again.quarantined) == \
        (first.inputs, 0, first.featured, first.quarantined)
    assert table_files(root) == before


def test_four_scoring_paths_agree_and_equal_local_score(spark, backfilled, spark_model_home, tmp_path, monkeypatch):
    from jobs.cli import main as cli_main
    from models.registry import resolve_bundle
    from udfs.bundle import read_parity_report
    from udfs.spark_jvm import jvm_formats, score_rows_jvm
    from udfs.spark_udfs import python_udfs_in_plan

    root, _, config = backfilled
    register_views(spark, str(root))
    n_contents = spark.sql("SELECT * FROM features").count()
    by_format = {}
    for fmt in FORMATS:
        result = run_score_backfill(spark, config, MODEL, fmt, str(root), force=True)
        assert (result.rows, result.scored, result.known, result.quarantined) == (n_contents, n_contents, 0, 0)
        by_format[fmt] = scores_by_content(spark, root)
    _, _, bundle = resolve_bundle(MODEL, config)
    tolerance = max(cell.get("tolerance", 0) for cell in read_parity_report(bundle)["exports"].values())
    base = by_format["native"]
    for fmt, scores in by_format.items():
        assert scores.keys() == base.keys()
        assert max(abs(scores[k] - base[k]) for k in base) <= tolerance, fmt

    # `photoscore score` on the same stored features gives the same scores.
    register_views(spark, str(root))
    features_file = tmp_path / "features.parquet"
    spark.sql("SELECT * FROM features").drop("run_id").toPandas().to_parquet(features_file, index=False)
    monkeypatch.setenv("PHOTOSCORE_HOME", str(spark_model_home))
    assert cli_main(["score", "--model", MODEL, "--features", str(features_file), "--out",
                     str(tmp_path / "scores.parquet")]) == 0
    local = pd.read_parquet(tmp_path / "scores.parquet")
    local = dict(zip(local["content_sha256"], local["score"]))
    assert local.keys() == base.keys()
    assert max(abs(local[k] - base[k]) for k in base) <= tolerance

    # Every table's files and the local score file hold their layouts (udfs/schemas.py; the
    # stream's score record too: tests/test_schemas.py).
    for table in TABLES:
        files = spark_schema(file_layout(table))
        written = spark.read.parquet(str(root / table)).schema
        assert [f for f in written if f.name in files.fieldNames()] == list(files), table
    assert pq.read_schema(tmp_path / "scores.parquet").remove_metadata().equals(SCORE)

    # The JVM formats run no Python at all; a feature row with a null gets a null score (the job
    # quarantines it), the other rows their scores.
    from pyspark.sql import functions as F

    names = list(FEATURE_NAMES)
    features = spark.sql("SELECT * FROM features").select(
        "photo_id", "content_sha256", *[F.col(n).cast("float") for n in names])
    holed = features.withColumn(names[3], F.when(F.col("content_sha256") == min(base), None)
                                .otherwise(F.col(names[3])))
    for fmt in jvm_formats():
        jvm = score_rows_jvm(spark, holed, bundle, names, fmt, config.home / "spark" / "udf-jars", block_rows=7)
        assert python_udfs_in_plan(jvm) == []
        assert jvm.columns == ["photo_id", "content_sha256", "score"]
        got = {r["content_sha256"]: r["score"] for r in jvm.collect()}
        assert got.keys() == base.keys() and got[min(base)] is None, fmt
        assert max(abs(got[k] - base[k]) for k in base if k != min(base)) <= tolerance, fmt


def test_new_model_version_rescores_from_stored_features_only(spark, backfilled, spark_model_home,
                                                              spark_corpus, tmp_path, corpus_features, corpus_labels):
    from _models_fixtures import write_frames
    from models.registry import promote
    from models.train import train_and_register
    from models.trainers import TrainParams

    root, featured, config = backfilled
    first = run_score_backfill(spark, config, MODEL, "native", str(root))
    fp, lp = write_frames(corpus_features, corpus_labels, tmp_path / "train")
    v2 = train_and_register(fp, lp, "low_quality", "xgboost", "photo_quality", config, TrainParams(trees=12, depth=3))
    promote(config, "photo_quality", str(v2.version), "challenger")
    # The photos are gone: any decode would quarantine rows; rescoring must not need them.
    hidden = tmp_path / "hidden"
    shutil.move(str(spark_corpus), hidden)
    try:
        result = run_score_backfill(spark, config, "models:/photo_quality@challenger", "onnx", str(root))
        again = run_score_backfill(spark, config, "models:/photo_quality@challenger", "onnx", str(root))
    finally:
        shutil.move(str(hidden), spark_corpus)
    assert (result.scored, result.known, result.quarantined) == (first.rows, 0, 0)
    assert (again.scored, again.known) == (0, first.rows)
    v2_scores = scores_by_content(spark, root, model_version=v2.version)
    assert len(v2_scores) == first.rows
    assert v2_scores != scores_by_content(spark, root, model_version=1)


def test_kill_9_mid_job_then_rerun_gives_exact_identities(spark_corpus, spark_model_home, tmp_path):
    root = tmp_path / "tables"
    args = ["--input", str(spark_corpus), "--tables", str(root)]
    staged = lambda step: any(root.glob(f"_staging/*/{step}/_SUCCESS"))  # noqa: E731
    kill_when("backfill_features.py", args, spark_model_home, lambda: staged("classified"))
    assert not table_files(root), "a killed, uncommitted run must leave nothing visible"
    done = submit("backfill_features.py", args, spark_model_home)
    assert done.returncode == 0, job_output(done)
    counts = last_counts(done.stdout)
    assert counts["inputs"] == counts["featured"] + counts["quarantined"] + counts["known"]

    score_args = ["--model", MODEL, "--format", "m2cgen-c", "--tables", str(root)]
    kill_when("backfill_scores.py", score_args, spark_model_home, lambda: staged("scored"))
    done = submit("backfill_scores.py", score_args, spark_model_home)
    assert done.returncode == 0, job_output(done)
    frames = {name: pd.read_parquet(root / name) for name in ("features", "scores", "photos")}
    assert frames["features"]["content_sha256"].is_unique
    assert frames["scores"]["content_sha256"].is_unique
    assert set(frames["scores"]["content_sha256"]) == set(frames["features"]["content_sha256"])
    assert frames["photos"]["photo_id"].is_unique and len(frames["photos"]) == counts["inputs"]
    assert not list(root.glob("_staging/*"))


def test_standalone_cluster_gives_the_local_results(spark, spark_corpus, spark_model_home, backfilled, tmp_path):
    root, _, config = backfilled
    run_score_backfill(spark, config, "models:/photo_quality/1", "native", str(root))
    local_scores = scores_by_content(spark, root, model_version=1)
    register_views(spark, str(root))
    local_features = spark.sql("SELECT content_sha256, sharpness FROM features").toPandas()
    cluster_root = tmp_path / "tables"
    with standalone_cluster(tmp_path / "cluster") as master:
        conf = {"spark.executor.memory": "512m", "spark.cores.max": "2"}
        feats = submit("backfill_features.py", ["--input", str(spark_corpus), "--tables", str(cluster_root)],
                       spark_model_home, master=master, extra_conf=conf)
        assert feats.returncode == 0, feats.stderr[-3000:]
        scores = submit("backfill_scores.py", ["--model", MODEL, "--format", "m2cgen-java", "--tables",
                                               str(cluster_root)], spark_model_home, master=master, extra_conf=conf)
        assert scores.returncode == 0, scores.stderr[-3000:]
    counts = last_counts(feats.stdout)
    assert counts["known"] == 0 and counts["inputs"] == len(input_files(spark_corpus))
    cluster_features = pd.read_parquet(cluster_root / "features")[["content_sha256", "sharpness"]]
    assert (cluster_features.sort_values("content_sha256").to_numpy().tolist()
            == local_features.sort_values("content_sha256").to_numpy().tolist())
    cluster_scores = pd.read_parquet(cluster_root / "scores")
    cluster_scores = dict(zip(cluster_scores["content_sha256"], cluster_scores["score"]))
    assert cluster_scores.keys() == local_scores.keys()
    assert max(abs(cluster_scores[k] - local_scores[k]) for k in local_scores) <= 1e-5


def test_a_manifest_reads_only_under_the_roots_and_a_store_outage_fails_the_run(spark_corpus, spark_model_home,
                                                                               tmp_path, monkeypatch):
    """A manifest naming what must never be read: each entry quarantined with its reason, the good
    photos featured, inputs = featured + quarantined. Photos in an object store that is down: the
    run fails (exit 75), nothing is committed or quarantined; the rerun, the store flaky, retries
    and features every photo once. The fake store runs in the job's workers (tests/store_faults)."""
    tests = Path(__file__).resolve().parent
    store = FakeStore(tmp_path / "s3")
    root = tmp_path / "root"
    root.mkdir()
    os.mkfifo(root / "fifo.jpg")
    (root / "escape.jpg").symlink_to("/etc/passwd")
    (root / "dir.jpg").mkdir()
    (tmp_path / "outside.jpg").write_bytes(b"outside")
    photos = sorted((spark_corpus / "photos").glob("*.jpg"))[:3]
    in_store = [store.put(f"s3://photos/up/{p.name}", p.read_bytes()) for p in photos]
    refused = {"/dev/zero": "uri_not_allowed", "/etc/passwd": "uri_not_allowed",
               "file:///proc/self/environ": "uri_not_allowed", f"{root}/../outside.jpg": "uri_not_allowed",
               str(root / "escape.jpg"): "uri_not_allowed", "s3://elsewhere/up/a.jpg": "uri_not_allowed",
               "s3://photos/other/a.jpg": "uri_not_allowed", str(root / "fifo.jpg"): "not_a_regular_file",
               str(root / "dir.jpg"): "not_a_regular_file", str(root / "gone.jpg"): "unreadable_uri",
               "s3://photos/up/gone.jpg": "unreadable_uri"}
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("\n".join([*map(str, photos), *refused, *in_store]) + "\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tests / "store_faults"), str(tests), str(tests.parent)]))
    monkeypatch.setenv(STORE_ENV, str(store.root))
    monkeypatch.setenv("PHOTOSCORE_STORAGE_PHOTO_ROOTS", json.dumps([str(spark_corpus), str(root), "s3://photos/up/"]))
    monkeypatch.setenv("PHOTOSCORE_STORAGE_READ_BACKOFF_S", "0")
    tables = tmp_path / "tables"
    args = ["--input", str(manifest), "--tables", str(tables)]

    store.set_down("photos")
    down = submit("backfill_features.py", args, spark_model_home)
    # (spark-submit runs the Python driver with its stderr merged into stdout)
    assert down.returncode == 75 and "store is unavailable" in down.stdout, down.stdout[-3000:]
    assert not table_files(tables), "a run stopped by an outage commits nothing, quarantines nothing"
    # The object that failed the task (any in the down bucket, the missing one included: which is read
    # first is up to Spark) was tried storage.read_attempts times, none more (no task retry in local mode).
    in_bucket = [*in_store, "s3://photos/up/gone.jpg"]
    assert max(store.attempts(uri) for uri in in_bucket) == 4, down.stdout[-3000:]

    store.set_down("photos", False)
    store.set_flaky("photos", 2)  # each object fails twice more, then reads
    done = submit("backfill_features.py", args, spark_model_home)
    assert done.returncode == 0, job_output(done)
    counts = last_counts(done.stdout)
    quarantine = pd.read_parquet(tables / "quarantine")
    assert dict(zip(quarantine["source_ref"], quarantine["reason_code"])) == refused
    assert counts["inputs"] == len(photos) + len(refused) + len(in_store) == counts["featured"] + counts["quarantined"]
    features = pd.read_parquet(tables / "features")
    assert len(features) == features["content_sha256"].nunique() == len({content_sha256(p.read_bytes()) for p in photos})
    assert all(store.attempts(uri) >= 3 for uri in in_store)
