"""Feature versions side by side, without an engine: one features-table layout for every version,
training records its data's version, the stream computes the version of the model it serves (and
follows the alias to a model of another version), and a model never scores another version's
features. The Spark side is tests/test_spark_feature_versions.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _models_fixtures import SMALL, built_bundle
from jobs.config import load_settings
from models.build import build_bundle
from models.data import load_training_data, training_feature_version
from udfs.bundle import read_feature_schema
from udfs.decode import DecodeLimits
from udfs.errors import PhotoscoreError
from udfs.features import FEATURE_VERSION, FEATURE_VERSIONS, extract_batch, extract_features, feature_set
from udfs.formats import load_scorer
from udfs.messages import encode_upload
from udfs.schemas import FEATURE_KEYS
from udfs.scoring import score_frame
from udfs.spark_udfs import FEATURE_TABLE, TABLE_FEATURE_NAMES
from udfs.rollout import RolloutPlan
from udfs.stream_models import RolloutHolder, load_model
from udfs.stream_scoring import SCORES, process_message, score_features, upload_intake

OLD, NEW = FEATURE_VERSIONS[0], FEATURE_VERSIONS[-1]
LIMITS = DecodeLimits()


@pytest.fixture(scope="module")
def bundles(versioned_frames, model_data, tmp_path_factory) -> dict[int, Path]:
    """{feature version: an xgboost bundle trained on the corpus' features of that version}."""
    out = {NEW: built_bundle("xgboost", model_data, tmp_path_factory).bundle_dir}
    fp, lp = versioned_frames[OLD]
    data = load_training_data(fp, lp, "low_quality", feature_set(OLD).names, OLD)
    out[OLD] = build_bundle("xgboost", data, SMALL, tmp_path_factory.mktemp(f"bundle-fv{OLD}") / "b").bundle_dir
    return out


def test_there_are_two_versions_and_the_table_layout_holds_each_in_order():
    assert OLD != NEW and FEATURE_VERSION == NEW
    assert FEATURE_TABLE.names[:len(FEATURE_KEYS)] == FEATURE_KEYS.names
    assert len(set(TABLE_FEATURE_NAMES)) == len(TABLE_FEATURE_NAMES)
    for version in FEATURE_VERSIONS:
        names = feature_set(version).names
        positions = [TABLE_FEATURE_NAMES.index(n) for n in names]
        assert positions == sorted(positions), version  # each version's own order is kept
        # A version's own row (`photoscore features`) types its columns as the table does.
        assert all(feature_set(version).layout.field(n).type == FEATURE_TABLE.field(n).type for n in names)
    assert TABLE_FEATURE_NAMES[:len(feature_set(OLD).names)] == feature_set(OLD).names


def test_bundles_record_the_version_they_were_trained_on(bundles):
    for version, bundle_dir in bundles.items():
        schema = read_feature_schema(bundle_dir)
        assert (schema.feature_version, schema.names) == (version, feature_set(version).names)


def _expected_score(bundle_dir: Path, path: str, version: int) -> float:
    features = extract_batch([path], [Path(path).read_bytes()], version=version).features
    scored = score_frame(features, load_scorer(bundle_dir, "native"), read_feature_schema(bundle_dir), "m", 0, "x")
    return float(scored.scores["score"].iloc[0])


def test_the_stream_computes_the_version_of_the_model_it_serves_and_follows_the_alias(corpus_features, bundles):
    path = corpus_features["photo_id"].iloc[0]
    data = Path(path).read_bytes()
    # Registry version 1 was trained on the old features, version 2 on the new ones.
    registry = {1: bundles[OLD], 2: bundles[NEW]}
    alias = {"version": 1}
    holder = RolloutHolder("m", lambda: RolloutPlan("m", alias["version"]), lambda v: ("m", v, registry[v]), "native",
                           poll_interval_s=0.0)
    cache: dict = {}
    intake = upload_intake(load_settings())  # inline photos: nothing is read from a store

    def upload(i: int):
        out = process_message(encode_upload(f"p{i}", inline=data), f"t/0/{i}", holder.refresh(), cache, LIMITS,
                              intake)
        (kind, payload), = out.records
        assert kind == SCORES, payload
        return out, json.loads(payload)

    first, r1 = upload(0)
    assert first.decoded and r1["feature_version"] == OLD and r1["model_version"] == 1
    assert r1["score"] == _expected_score(bundles[OLD], path, OLD)
    alias["version"] = 2
    swapped, r2 = upload(1)
    # The new model's version was never computed for this content: decoded once more, at NEW.
    assert swapped.decoded and r2["feature_version"] == NEW and r2["model_version"] == 2
    assert r2["score"] == _expected_score(bundles[NEW], path, NEW)
    assert set(cache[r1["content_sha256"]].features) == {OLD, NEW}
    again, r3 = upload(2)
    assert not again.decoded and r3["from_cache"] and r3["score"] == r2["score"]
    alias["version"] = 1
    back, r4 = upload(3)
    assert not back.decoded and r4["from_cache"] and (r4["score"], r4["feature_version"]) == (r1["score"], OLD)


def test_a_model_refuses_features_of_another_version(corpus_features, bundles):
    path = corpus_features["photo_id"].iloc[0]
    old_model = load_model("m", 1, bundles[OLD], "native")
    new_row = extract_features(Path(path).read_bytes(), path, version=NEW)
    with pytest.raises(PhotoscoreError, match=f"m/1 was trained on feature version {OLD} and cannot score "
                                              f"features of version {NEW}"):
        score_features(old_model, new_row, "t/0/0")
    new_frame = extract_batch([path], [Path(path).read_bytes()], version=NEW).features
    with pytest.raises(PhotoscoreError, match=rf"holds feature versions \[{NEW}\] but model m/1 was trained on "
                                              rf"feature version {OLD}: .*photoscore features --feature-version {OLD}"):
        score_frame(new_frame, old_model.scorer, old_model.schema, "m", 1, "f.parquet")


def test_training_takes_the_version_of_its_data(versioned_frames, tmp_path):
    frames = {v: pd.read_parquet(fp) for v, (fp, _) in versioned_frames.items()}
    for version, (fp, _) in versioned_frames.items():
        assert training_feature_version(fp) == version
    both = tmp_path / "both.parquet"
    pd.concat(frames.values(), ignore_index=True).to_parquet(both, index=False)
    with pytest.raises(PhotoscoreError, match=rf"holds feature versions \[{OLD}, {NEW}\].*--feature-version"):
        training_feature_version(both)
    assert training_feature_version(both, OLD) == OLD
    labels = versioned_frames[OLD][1]
    data = load_training_data(both, labels, "low_quality", feature_set(OLD).names, OLD)
    expected = load_training_data(*versioned_frames[OLD], "low_quality", feature_set(OLD).names, OLD)
    np.testing.assert_array_equal(data["train"].X, expected["train"].X)  # only the version's rows
    with pytest.raises(PhotoscoreError, match=f"none of version {NEW + 1}"):
        load_training_data(both, labels, "low_quality", feature_set(NEW).names, NEW + 1)


def test_features_version_setting_defaults_to_the_newest_and_refuses_unknown_versions():
    assert load_settings(env={}).features.feature_version() == NEW
    assert load_settings([f"features.version={OLD}"], env={}).features.feature_version() == OLD
    with pytest.raises(PhotoscoreError, match=f"unknown feature version {NEW + 1}"):
        load_settings([f"features.version={NEW + 1}"], env={}).features.feature_version()


def test_the_features_command_computes_the_version_asked_for(corpus_features, tmp_path, monkeypatch, capsys):
    from jobs.cli import main as cli

    monkeypatch.setenv("PHOTOSCORE_HOME", str(tmp_path / "home"))
    paths = list(corpus_features["photo_id"].iloc[:2])
    for flags, version in (([], NEW), (["--feature-version", str(OLD)], OLD)):
        out = tmp_path / f"v{version}"
        assert cli(["features", "--input", *paths, "--out", str(out), "--workers", "1", *flags]) == 0
        assert capsys.readouterr().out.strip().endswith(f"feature_version={version}")
        written = pd.read_parquet(out / "features.parquet")
        assert list(written.columns) == feature_set(version).layout.names
        assert set(written["feature_version"]) == {version}
    assert cli(["features", "--input", *paths, "--out", str(tmp_path / "x"), "--feature-version", str(NEW + 1)]) == 1
    assert f"unknown feature version {NEW + 1}" in capsys.readouterr().err


def test_photoscore_backfill_passes_the_version_and_model_to_the_job():
    import argparse

    from jobs.commands.backfill import job_arguments, register

    parser = argparse.ArgumentParser()
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["backfill", "features", "--input", "photos", "--feature-version", str(OLD),
                              "--model", "models:/m@champion"])
    assert job_arguments(args) == ["--input", "photos", "--input-kind", "auto", "--model", "models:/m@champion",
                                   "--feature-version", str(OLD)]
