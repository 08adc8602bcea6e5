"""Feature versions side by side in the Spark tables: a feature backfill computes the version it is
told to serve (flag, model, champion, setting), decodes each content once per version, keeps
tables written before versions lived side by side readable, and each model scores only the
features of the version it was trained on - a model whose version is missing is refused."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _spark_fixtures import home_config, scores_by_content
from jobs.backfill_features import run_feature_backfill, run_version
from jobs.backfill_scores import run_score_backfill
from jobs.config import load_settings
from jobs.spark_tables import TableStore
from udfs.errors import PhotoscoreError
from udfs.features import FEATURE_VERSIONS, content_sha256, extract_batch, feature_set
from udfs.spark_udfs import TABLE_FEATURE_NAMES

pytestmark = pytest.mark.integration

OLD, NEW = FEATURE_VERSIONS[0], FEATURE_VERSIONS[-1]
MODEL = "photo_quality"


def test_the_backfill_computes_the_version_of_the_model_it_serves(versioned_model_home):
    from models.registry import promote

    home, models = versioned_model_home
    # An alias no other test of this home uses: the champion never moves.
    config = load_settings(["mlflow.alias=challenger", f"features.version={NEW}"], env={"PHOTOSCORE_HOME": str(home)})
    assert run_version(config) == NEW  # no model at the alias yet: features.version
    promote(config, MODEL, str(models[OLD]), "challenger")
    assert run_version(config) == OLD  # the configured model's bundle says OLD
    assert run_version(config, model_uri=f"models:/{MODEL}/{models[NEW]}") == NEW
    assert run_version(config, feature_version=NEW) == NEW
    with pytest.raises(PhotoscoreError, match=f"unknown feature version {NEW + 1}"):
        run_version(config, feature_version=NEW + 1)
    with pytest.raises(PhotoscoreError):
        run_version(config, model_uri=f"models:/{MODEL}@nobody")  # a named model must resolve


def test_versions_live_side_by_side_and_each_model_scores_its_own(spark, spark_corpus, versioned_model_home, tmp_path):
    from models.registry import resolve_bundle
    from udfs.bundle import read_feature_schema
    from udfs.formats import load_scorer
    from udfs.scoring import score_frame

    home, models = versioned_model_home
    config = home_config(home)
    root, source = tmp_path / "tables", str(spark_corpus / "photos")
    photos = sorted((spark_corpus / "photos").iterdir())
    blobs = {str(p): p.read_bytes() for p in photos}
    distinct = {content_sha256(b): path for path, b in sorted(blobs.items())}
    # Files written by a photoscore whose features table had one version: the old version's own layout.
    legacy = sorted(distinct)[:3]
    legacy_rows = extract_batch([distinct[c] for c in legacy], [blobs[distinct[c]] for c in legacy], version=OLD)
    (root / "features" / "run_id=legacy").mkdir(parents=True)
    legacy_rows.features.to_parquet(root / "features" / "run_id=legacy" / "part-00000.parquet", index=False)
    legacy_inputs = sum(content_sha256(b) in legacy for b in blobs.values())

    old = run_feature_backfill(spark, config, source, str(root), version=OLD)
    assert (old.known, old.decoded) == (legacy_inputs, len(distinct) - len(legacy))
    # Only the old version is stored: the model trained on the new one is refused, clearly.
    with pytest.raises(PhotoscoreError, match=rf"{MODEL}/{models[NEW]} was trained on feature version {NEW}, but "
                                              rf".* holds only feature version {OLD}; .*--feature-version {NEW}"):
        run_score_backfill(spark, config, f"models:/{MODEL}/{models[NEW]}", "native", str(root))
    new = run_feature_backfill(spark, config, source, str(root), version=NEW)
    assert (new.known, new.decoded) == (0, len(distinct))  # every content once more, at the new version
    again = run_feature_backfill(spark, config, source, str(root), version=OLD)
    assert (again.known, again.decoded) == (len(photos), 0)

    table = TableStore(spark, str(root)).read("features").toPandas()
    assert not table.duplicated(["content_sha256", "feature_version"]).any()
    for version in (OLD, NEW):
        rows = table[table["feature_version"] == version].set_index("content_sha256")
        assert set(rows.index) == set(distinct)
        names = list(feature_set(version).names)
        others = [n for n in TABLE_FEATURE_NAMES if n not in names]
        assert rows[others].isna().all().all(), version  # legacy files read the new columns as null
        expected = extract_batch(list(distinct.values()), [blobs[p] for p in distinct.values()], version=version)
        expected = expected.features.set_index("content_sha256").loc[rows.index]
        np.testing.assert_array_equal(rows[names].to_numpy(np.float32), expected[names].to_numpy(np.float32))

        model_uri = f"models:/{MODEL}/{models[version]}"
        result = run_score_backfill(spark, config, model_uri, "native", str(root))
        assert (result.rows, result.scored, result.quarantined) == (len(distinct), len(distinct), 0)
        stored = pd.read_parquet(root / "scores" / f"model_name={MODEL}" / f"model_version={models[version]}")
        assert set(stored["feature_version"]) == {version}
        _, _, bundle_dir = resolve_bundle(model_uri, config)
        local = score_frame(expected.reset_index(), load_scorer(bundle_dir, "native"), read_feature_schema(bundle_dir),
                            MODEL, models[version], "local").scores
        assert scores_by_content(spark, root, models[version]) == dict(zip(local["content_sha256"], local["score"]))
