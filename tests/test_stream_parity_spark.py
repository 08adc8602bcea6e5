"""Batch <-> stream parity with the Spark backfill: the same photos through `jobs/backfill_features.py`
+ `jobs/backfill_scores.py` and through the stream's functions (the code the Flink operators run;
tests/test_stream_job.py shows the running job emits exactly these) give identical feature vectors
and identical scores for the same model version and export format, for a model of each feature
version (the newest in two export formats)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from _spark_fixtures import home_config, scores_by_content
from udfs.features import FEATURE_VERSIONS, feature_set

pytestmark = pytest.mark.integration

MODEL = "photo_quality"
OLD, NEW = FEATURE_VERSIONS[0], FEATURE_VERSIONS[-1]


@pytest.mark.parametrize("feature_version, export_format", [(NEW, "native"), (NEW, "onnx"), (OLD, "native")])
def test_spark_backfill_and_stream_agree_exactly(spark, spark_corpus, versioned_model_home, tmp_path,
                                                 feature_version, export_format):
    from jobs.backfill_features import run_feature_backfill, run_version
    from jobs.backfill_scores import run_score_backfill
    from jobs.spark_tables import register_views
    from models.registry import resolve_bundle
    from udfs.messages import encode_upload
    from udfs.stream_models import load_model
    from udfs.stream_scoring import SCORES, process_message, upload_intake

    home, models = versioned_model_home
    config, v1 = home_config(home), models[feature_version]
    root = tmp_path / "tables"
    # The version the model serves, as the backfill picks it by default for a served model.
    run_feature_backfill(spark, config, str(spark_corpus / "photos"), str(root),
                         version=run_version(config, model_uri=f"models:/{MODEL}/{v1}"))
    run_score_backfill(spark, config, f"models:/{MODEL}/{v1}", export_format, str(root))
    batch_scores = scores_by_content(spark, root, v1)
    register_views(spark, str(root))
    names = feature_set(feature_version).names
    batch_features = {r["content_sha256"]: np.asarray([r[n] for n in names], np.float32)
                      for r in spark.sql(f"SELECT * FROM features WHERE feature_version = {feature_version}").collect()}

    name, version, bundle_dir = resolve_bundle(f"models:/{MODEL}/{v1}", config)
    model = load_model(name, version, bundle_dir, export_format)
    cache: dict = {}
    intake = upload_intake(config.updated(storage={"photo_roots": [str(spark_corpus)]}))
    photos = sorted((spark_corpus / "photos").glob("*"))
    for i, path in enumerate(photos):
        out = process_message(encode_upload(path.name, path.as_uri(), 1), f"photos.uploaded/0/{i}",
                              model, cache, config.features.limits(), intake)
        (kind, payload), = out.records
        rec = json.loads(payload)
        assert kind == SCORES and rec["feature_version"] == feature_version, rec
        assert rec["score"] == batch_scores[rec["content_sha256"]], path
        np.testing.assert_array_equal(np.asarray(cache[rec["content_sha256"]].features[feature_version].values, np.float32),
                                      batch_features[rec["content_sha256"]])
    assert set(cache) == set(batch_scores)
