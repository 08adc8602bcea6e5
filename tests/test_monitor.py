"""The drift monitor's judgement (udfs.drift) on real and synthetic features, and its window over
hand-written tables (jobs.monitor.read_window, alarm_streak): fast, no engine. The Spark end to end
(backfilled darkened photos, a surge of broken files) is tests/test_monitor_spark.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _models_fixtures import synthetic_frames
from jobs.config import load_settings
from jobs.demo_monitor import gamma_darkened
from jobs.monitor import alarm_streak, read_window, reports_root
from udfs.drift import DriftThresholds, judge_window
from udfs.features import FEATURE_NAMES, FEATURE_VERSION, extract_batch
from udfs.reference_profile import ReferenceProfile, build_profile, quarantine_summary
from udfs.schemas import PHOTOS, QUARANTINE_TABLE, SCORE, feature_schema, without

THRESHOLDS = DriftThresholds(min_rows=50, psi_warn=0.1, psi_alarm=0.25, ks_alpha=0.001,
                             max_missing_increase=0.02, max_quarantine_increase=0.05)


def profile_of(features: pd.DataFrame, scores: np.ndarray, quarantined: int = 0, inputs: int | None = None,
               rows: int = 2000) -> ReferenceProfile:
    inputs = len(features) if inputs is None else inputs
    return ReferenceProfile(build_profile(FEATURE_NAMES, features[list(FEATURE_NAMES)].to_numpy(float), scores,
                                          FEATURE_VERSION, quarantine_summary(inputs, ["truncated_image"] * quarantined),
                                          rows))


def columns(features: pd.DataFrame) -> dict[str, np.ndarray]:
    return {name: features[name].to_numpy(float) for name in FEATURE_NAMES}


def test_photos_darkened_by_a_fixed_gamma_alarm_on_mean_luma(corpus_features, corpus_labels):
    ids = list(corpus_labels["photo_id"])
    dark = extract_batch(ids, [gamma_darkened(p) for p in ids])
    assert dark.quarantine.empty
    profile = profile_of(corpus_features, np.linspace(0, 1, 40))
    body = judge_window(profile, columns(dark.features), np.linspace(0, 1, 40), len(ids), {}, THRESHOLDS)
    assert body["verdict"] == "alarm"
    drifted = [a["name"] for a in body["alarms"] if a["kind"] == "feature"]
    assert "mean_luma" in drifted, body["alarms"]
    assert body["features"]["mean_luma"]["mean"] < body["features"]["mean_luma"]["reference_mean"]
    # What moves with the mid-tones moves too; what does not (the photo's size) stays put.
    assert "luma_p50" in drifted and "megapixels" not in drifted, drifted
    assert not [a for a in body["alarms"] if a["kind"] in ("quarantine", "score")]


def test_unshifted_samples_of_the_same_distribution_are_quiet_in_19_of_20():
    reference, _ = synthetic_frames(n_sources=150, variants=4, seed=0)
    profile = profile_of(reference, np.random.default_rng(0).beta(2, 5, 600))
    verdicts = []
    for seed in range(1, 21):
        window, _ = synthetic_frames(n_sources=50, variants=4, seed=seed)
        scores = np.random.default_rng(seed).beta(2, 5, 200)
        verdicts.append(judge_window(profile, columns(window), scores, 200, {}, THRESHOLDS)["verdict"])
    assert verdicts.count("quiet") >= 19, verdicts


def test_a_surge_of_broken_files_alarms_on_the_quarantine_share_by_reason():
    reference, _ = synthetic_frames(n_sources=100, seed=0)
    profile = profile_of(reference, np.linspace(0, 1, 50), quarantined=4, inputs=400)   # 1 % at training
    window, _ = synthetic_frames(n_sources=40, seed=3)
    quiet = judge_window(profile, columns(window), np.linspace(0, 1, 50), 170, {"truncated_image": 3}, THRESHOLDS)
    assert quiet["verdict"] == "quiet"
    surge = judge_window(profile, columns(window), np.linspace(0, 1, 50), 200,
                         {"truncated_image": 25, "not_an_image": 15}, THRESHOLDS)
    assert surge["verdict"] == "alarm" and [a["kind"] for a in surge["alarms"]] == ["quarantine"]
    assert surge["quarantine"]["share"] == pytest.approx(0.2)
    assert "truncated_image=25" in surge["alarms"][0]["message"]


def test_missing_values_and_too_little_evidence():
    reference, _ = synthetic_frames(n_sources=100, seed=0)
    profile = profile_of(reference, np.linspace(0, 1, 50))
    window, _ = synthetic_frames(n_sources=40, seed=4)
    holes = columns(window)
    holes["sharpness"][:20] = np.nan
    body = judge_window(profile, holes, np.linspace(0, 1, 50), 160, {}, THRESHOLDS)
    assert [(a["kind"], a["name"]) for a in body["alarms"]] == [("missing", "sharpness")]
    few = judge_window(profile, {k: v[:10] for k, v in columns(window).items()}, np.linspace(0, 1, 10), 10, {},
                       THRESHOLDS)
    assert few["verdict"] == "insufficient" and not few["alarms"]


@pytest.fixture
def tmp_settings(tmp_path_factory):
    return load_settings([f"home={tmp_path_factory.mktemp('home')}"], env={})


def _write(table: Path, schema: pa.Schema, rows: list[dict], run: str = "r1") -> None:
    (table / f"run_id={run}").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema),
                   table / f"run_id={run}" / "part-0.parquet")


def test_the_window_counts_each_input_once_and_reads_only_the_versions_served_scores(tmp_path, tmp_settings):
    old, new = 1_000, 2_000_000
    names = ["mean_luma", "sharpness"]
    _write(tmp_path / "photos", PHOTOS, [
        dict(photo_id="a", uri="/p/a.jpg", content_sha256="ca", file_bytes=1, seen_at_ms=new),
        dict(photo_id="b", uri="/p/b.jpg", content_sha256="cb", file_bytes=1, seen_at_ms=new),
        dict(photo_id="bad", uri="/p/bad.jpg", content_sha256="cx", file_bytes=1, seen_at_ms=new),
        dict(photo_id="o", uri="/p/old.jpg", content_sha256="co", file_bytes=1, seen_at_ms=old)])
    q = dict(photo_id="x", detail="", content_sha256=None, feature_version=FEATURE_VERSION)
    _write(tmp_path / "quarantine", QUARANTINE_TABLE, [
        {**q, "source_ref": "/p/bad.jpg", "stage": "decode", "reason_code": "truncated_image", "seen_at_ms": new},
        {**q, "source_ref": "/p/gone.jpg", "stage": "read", "reason_code": "unreadable_uri", "seen_at_ms": new},
        {**q, "source_ref": "/p/older.jpg", "stage": "read", "reason_code": "unreadable_uri", "seen_at_ms": old},
        {**q, "source_ref": "models:/m/3#ca", "stage": "score", "reason_code": "score_failed", "seen_at_ms": new},
        {**q, "source_ref": "models:/m/4#ca", "stage": "score", "reason_code": "score_failed", "seen_at_ms": new}])
    keys = dict(photo_id="p", format="JPEG", dhash=0)
    _write(tmp_path / "features", feature_schema(names), [
        {**keys, "content_sha256": c, "feature_version": v, "mean_luma": luma, "sharpness": 1.0}
        for c, v, luma in [("ca", FEATURE_VERSION, 10.0), ("cb", FEATURE_VERSION, 20.0),
                           ("cb", FEATURE_VERSION - 1, 99.0), ("co", FEATURE_VERSION, 30.0)]])
    score = dict(photo_id="p", model_name="m", export_format="onnx", feature_version=FEATURE_VERSION,
                 source="batch", from_cache=False)
    layout = without(SCORE, ("model_name", "model_version"))
    rows = [dict(content_sha256="ca", score=0.1, scored_at_ms=new, role="served"),
            dict(content_sha256="cb", score=0.2, scored_at_ms=new, role="shadow"),
            dict(content_sha256="co", score=0.3, scored_at_ms=old, role=None)]
    _write(tmp_path / "scores" / "model_name=m" / "model_version=3", layout, [{**score, **r} for r in rows])

    window = read_window(tmp_settings, str(tmp_path), "m", 3, FEATURE_VERSION, names, since_ms=new - 1,
                         until_ms=new + 1)
    assert window.inputs == 4   # a, b, bad (a photo row and a quarantine row: once), gone
    assert window.quarantined == {"truncated_image": 1, "unreadable_uri": 1}
    assert window.score_failed == 1
    assert sorted(window.features["mean_luma"]) == [10.0, 20.0]   # feature version's rows of the window's contents
    assert list(window.scores) == [0.1]                            # served (or unlabelled) scores only
    assert window.timeline[["inputs", "quarantined", "scored"]].sum().tolist() == [4, 2, 1]


def test_the_alarm_streak_counts_the_newest_alarmed_runs(tmp_settings):
    root = reports_root(tmp_settings, "m")
    for stamp, version, verdict in [("20260101T000000000000Z", 1, "alarm"), ("20260102T000000000000Z", 2, "quiet"),
                                    ("20260103T000000000000Z", 2, "alarm"), ("20260104T000000000000Z", 2, "insufficient"),
                                    ("20260105T000000000000Z", 3, "alarm")]:
        (root / f"v{version}" / stamp).mkdir(parents=True)
        (root / f"v{version}" / stamp / "drift.json").write_text(json.dumps({"verdict": verdict}))
    assert alarm_streak(tmp_settings, "m") == 2
    assert alarm_streak(tmp_settings, "other") == 0
