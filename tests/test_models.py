"""Training data splits, metrics, bundle contents, checksums and local scoring."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from _models_fixtures import SMALL, built_bundle, copy_bundle, synthetic_frames, write_frames
from models.data import assign_splits, group_keys, load_training_data
from models.metrics import evaluate, expected_calibration_error
from udfs.scoring import score_frame
from udfs.bundle import (CHECKSUMS, MODEL_TYPES, NATIVE_FILES, read_feature_schema, read_manifest,
                         sha256_file, verify_bundle, write_checksums)
from udfs.errors import PhotoscoreError
from udfs.features import FEATURE_NAMES, FEATURE_VERSION
from udfs.formats import formats, load_scorer
from udfs.schemas import SCORE


# --- splits -------------------------------------------------------------------------------------

def test_split_keeps_every_source_photo_in_one_split(tmp_path):
    features, labels = synthetic_frames(n_sources=60, variants=5)
    fp, lp = write_frames(features, labels, tmp_path)
    data = load_training_data(fp, lp, "low_quality", FEATURE_NAMES, FEATURE_VERSION)
    seen = {}
    for name, split in data.splits.items():
        for group in set(split.groups):
            assert seen.setdefault(group, name) == name, f"{group} is in {seen[group]} and {name}"
    sizes = {name: len(set(split.groups)) for name, split in data.splits.items()}
    assert sizes == {"train": 42, "validation": 9, "test": 9}
    assert sum(len(s.y) for s in data.splits.values()) == len(features)


def test_split_of_the_real_corpus_keeps_variants_together(model_data, corpus_labels):
    source_of = dict(zip(corpus_labels["photo_id"], group_keys(corpus_labels)))
    splits_of_source: dict[str, set] = {}
    for name, split in model_data.splits.items():
        for pid in split.photo_ids:
            splits_of_source.setdefault(source_of[pid], set()).add(name)
    assert all(len(s) == 1 for s in splits_of_source.values()), splits_of_source
    assert all(len(split.y) for split in model_data.splits.values())


def test_split_is_deterministic_and_independent_of_row_order():
    groups = pd.Series([f"s{i % 17}" for i in range(200)], dtype="string")
    first = assign_splits(groups)
    shuffled = groups.sample(frac=1.0, random_state=3)
    again = assign_splits(shuffled)
    assert (first == again.sort_index()).all()


def test_rows_without_source_photo_fall_back_to_duplicate_then_self():
    labels = pd.DataFrame({"photo_id": ["a", "b", "c"], "source_photo": [None, "", "s"],
                           "duplicate_of": ["x", None, None]})
    assert group_keys(labels).tolist() == ["x", "b", "s"]


def test_missing_target_and_version_mismatch_are_named(tmp_path):
    features, labels = synthetic_frames(n_sources=10, variants=2)
    fp, lp = write_frames(features, labels, tmp_path)
    with pytest.raises(PhotoscoreError, match="no 'blurry' column"):
        load_training_data(fp, lp, "blurry", FEATURE_NAMES, FEATURE_VERSION)
    with pytest.raises(PhotoscoreError, match="feature versions"):
        load_training_data(fp, lp, "low_quality", FEATURE_NAMES, FEATURE_VERSION + 1)


# --- metrics ------------------------------------------------------------------------------------

def test_metrics_of_a_perfect_and_a_calibrated_model():
    y = np.array([0, 0, 1, 1])
    perfect = evaluate(y, np.array([0.0, 0.0, 1.0, 1.0]))
    assert perfect["auc"] == 1.0 and perfect["pr_auc"] == 1.0 and perfect["brier"] == 0.0
    assert perfect["ece"] == 0.0
    # Half the rows predicted 0.5 with half of them positive: calibrated, ECE 0.
    assert expected_calibration_error(np.array([0, 1] * 50), np.full(100, 0.5)) == 0.0
    assert expected_calibration_error(np.array([0] * 100), np.full(100, 0.9)) == pytest.approx(0.9)
    assert math.isnan(evaluate(np.array([1, 1]), np.array([0.2, 0.9]))["auc"])


# --- bundle contents ----------------------------------------------------------------------------

def test_bundle_layout(bundle):
    d = bundle.bundle_dir
    manifest = read_manifest(d)
    assert manifest["bundle_version"] == 1
    assert manifest["native_file"] == NATIVE_FILES[bundle.model_type]
    assert set(formats()) <= set(manifest["exports"])
    schema = read_feature_schema(d)
    assert schema.names == FEATURE_NAMES and set(schema.dtypes) == {"float32"}
    assert schema.feature_version == FEATURE_VERSION
    listed = json.loads((d / CHECKSUMS).read_text())["files"]
    assert {"bundle.json", "model.onnx", "feature_schema.json", "parity_report.json",
            manifest["native_file"]} <= set(listed)
    verify_bundle(d)
    if bundle.model_type in ("xgboost", "lightgbm", "catboost"):
        assert manifest["trees"] == SMALL.trees
    # Native formats only: nothing in a bundle is a pickle.
    for rel in listed:
        assert not (d / rel).read_bytes().startswith(b"\x80"), f"{rel} looks like a pickle"


def test_logreg_coefficients_are_self_contained(model_data, tmp_path_factory):
    built = built_bundle("logreg", model_data, tmp_path_factory)
    coef = json.loads((built.bundle_dir / "coefficients.json").read_text())
    assert len(coef["coef"]) == len(FEATURE_NAMES)
    X = model_data["test"].X
    expected = 1.0 / (1.0 + np.exp(-(X.astype(np.float64) @ np.array(coef["coef"]) + coef["intercept"])))
    np.testing.assert_allclose(load_scorer(built.bundle_dir, "native").score(X), expected, rtol=0, atol=1e-12)


def test_native_scores_are_probabilities(bundle, model_data):
    p = load_scorer(bundle.bundle_dir, "native").score(model_data["test"].X)
    assert p.dtype == np.float64 and p.shape == (len(model_data["test"].y),)
    assert np.all((p > 0) & (p < 1))
    assert set(bundle.metrics) == {"train", "validation", "test"}


# --- checksums ----------------------------------------------------------------------------------

@pytest.fixture
def private_bundle(model_data, tmp_path_factory, tmp_path):
    return copy_bundle(built_bundle("xgboost", model_data, tmp_path_factory), tmp_path / "bundle")


def test_tampered_file_is_refused_by_name(private_bundle):
    with open(private_bundle / "model.onnx", "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(PhotoscoreError, match=r"model\.onnx fails its checksum"):
        load_scorer(private_bundle, "onnx")
    # The native file is untouched, but the bundle as a whole is refused for any export.
    with pytest.raises(PhotoscoreError, match=r"model\.onnx"):
        load_scorer(private_bundle, "native")


def test_missing_extra_and_relisted_files_are_refused(private_bundle):
    (private_bundle / "extra.txt").write_text("x")
    with pytest.raises(PhotoscoreError, match="not listed.*extra.txt"):
        verify_bundle(private_bundle)
    (private_bundle / "extra.txt").unlink()
    digest = sha256_file(private_bundle / CHECKSUMS)
    (private_bundle / "model.json").write_text("{}")
    assert write_checksums(private_bundle) != digest
    verify_bundle(private_bundle)  # consistent listing, but not the registered one:
    with pytest.raises(PhotoscoreError, match="digest recorded in the model registry"):
        verify_bundle(private_bundle, expected_digest=digest)
    (private_bundle / "model.json").unlink()
    with pytest.raises(PhotoscoreError, match=r"model\.json is missing"):
        verify_bundle(private_bundle)
    (private_bundle / CHECKSUMS).unlink()
    with pytest.raises(PhotoscoreError, match="has no checksums.json"):
        load_scorer(private_bundle, "native")


# --- local scoring ------------------------------------------------------------------------------

class RaisingOnSentinel:
    """Wraps a real scorer; raises for any batch holding a row whose first feature is -1."""

    def __init__(self, inner):
        self.inner, self.format = inner, inner.format

    def score(self, X):
        if np.any(X[:, 0] == -1):
            raise RuntimeError("sentinel row")
        return self.inner.score(X)


def test_score_frame_accounts_for_every_row(model_data, corpus_features, tmp_path_factory):
    built = built_bundle("lightgbm", model_data, tmp_path_factory)
    frame = corpus_features.copy()
    frame.loc[0, "sharpness"] = np.nan
    frame.loc[1, "width"] = -1.0
    dup = frame.iloc[[5]].assign(photo_id="copy-of-5")
    frame = pd.concat([frame, dup], ignore_index=True)
    scorer = RaisingOnSentinel(load_scorer(built.bundle_dir, "native"))
    result = score_frame(frame, scorer, read_feature_schema(built.bundle_dir), "pq", 3, "f.parquet")
    assert len(result.scores) + len(result.quarantine) == len(frame)
    reasons = dict(zip(result.quarantine["photo_id"], result.quarantine["reason_code"]))
    assert reasons == {frame.at[0, "photo_id"]: "non_finite_feature", frame.at[1, "photo_id"]: "score_failed"}
    assert list(result.scores.columns) == SCORE.names
    assert set(result.scores["source"]) == {"batch"} and not result.scores["from_cache"].any()
    by_id = result.scores.set_index("photo_id")["score"]
    assert by_id["copy-of-5"] == by_id[frame.at[5, "photo_id"]]
    assert (result.scores["model_version"] == 3).all()


def test_score_frame_refuses_other_feature_versions(model_data, corpus_features, tmp_path_factory):
    built = built_bundle("logreg", model_data, tmp_path_factory)
    frame = corpus_features.assign(feature_version=FEATURE_VERSION + 1)
    with pytest.raises(PhotoscoreError, match="feature versions"):
        score_frame(frame, load_scorer(built.bundle_dir, "native"), read_feature_schema(built.bundle_dir),
                    "pq", 1, "f.parquet")


def test_all_model_types_are_covered():
    assert set(MODEL_TYPES) == {"xgboost", "lightgbm", "catboost", "logreg"}
