"""Batch <-> stream parity with the Spark backfill: the same photos through `jobs/backfill_features.py`
+ `jobs/backfill_scores.py` and through the stream's functions (the code the Flink operators run;
tests/test_stream_job.py shows the running job emits exactly these) give identical feature vectors
and identical scores for the same model version and export format."""
from __future__ import annotations

import json

import numpy as np
import pytest

from _spark_fixtures import scores_by_content
from _stream_fixtures import MODEL
from udfs.features import FEATURE_NAMES

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("export_format", ["native", "onnx"])
def test_spark_backfill_and_stream_agree_exactly(spark, spark_corpus, stream_registry, tmp_path, export_format):
    from jobs.backfill_features import run_feature_backfill
    from jobs.backfill_scores import run_score_backfill
    from jobs.spark_tables import register_views
    from models.registry import resolve_bundle
    from udfs.messages import encode_upload
    from udfs.stream_scoring import SCORES, load_model, process_message

    config, v1 = stream_registry["config"], stream_registry["v1"]
    root = tmp_path / "tables"
    run_feature_backfill(spark, config, str(spark_corpus / "photos"), str(root))
    run_score_backfill(spark, config, f"models:/{MODEL}/{v1}", export_format, str(root))
    batch_scores = scores_by_content(spark, root, v1)
    register_views(spark, str(root))
    batch_features = {r["content_sha256"]: np.asarray([r[n] for n in FEATURE_NAMES], np.float32)
                      for r in spark.sql("SELECT * FROM features").collect()}

    name, version, bundle_dir = resolve_bundle(f"models:/{MODEL}/{v1}", config)
    model = load_model(name, version, bundle_dir, export_format)
    cache: dict = {}
    photos = sorted((spark_corpus / "photos").glob("*"))
    for i, path in enumerate(photos):
        out = process_message(encode_upload(path.name, path.as_uri(), 1), f"photos.uploaded/0/{i}",
                              model, cache, config.features.limits())
        (kind, payload), = out.records
        rec = json.loads(payload)
        assert kind == SCORES, rec
        assert rec["score"] == batch_scores[rec["content_sha256"]], path
        np.testing.assert_array_equal(np.asarray(cache[rec["content_sha256"]].values, np.float32),
                                      batch_features[rec["content_sha256"]])
    assert set(cache) == set(batch_scores)
