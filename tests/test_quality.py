"""`photoscore evaluate` (models/evaluate.py and its command) and the independent quality check:
a model trained on the corpus, measured on held-out photos degraded by another implementation."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import _independent_degrade as independent
from _models_fixtures import built_bundle
from jobs.cli import main as cli
from models.corpus import available_sources, load_source
from models.evaluate import NOT_SCORED, evaluate, format_table, read_labels, report_json
from udfs.errors import PhotoscoreError
from udfs.features import FEATURE_VERSION


def _labels(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["file", "low_quality", "kind"]).astype({"file": "string", "kind": "string"})


# --- models/evaluate.py: pure -------------------------------------------------------------------

def test_per_kind_auc_compares_each_kind_with_the_clean_photos():
    labels = _labels([("c1", 0, ""), ("c2", 0, ""), ("c3", 0, ""), ("b1", 1, "blur"), ("b2", 1, "blur"),
                      ("n1", 1, "noise"), ("n2", 1, "noise")])
    # Blur is ranked above every clean photo; noise is mixed in among them.
    scores = pd.DataFrame({"file": ["c1", "c2", "c3", "b1", "b2", "n1", "n2"],
                           "score": [0.1, 0.3, 0.5, 0.8, 0.9, 0.2, 0.4]})
    report = evaluate(scores, labels)
    assert report["per_kind"]["blur"] == {"positives": 2, "negatives": 3, "auc": 1.0, "pr_auc": 1.0}
    assert report["per_kind"]["noise"]["auc"] == pytest.approx(3 / 6)
    # Overall: 4 positives x 3 negatives = 12 pairs; noise loses 3 of its 6.
    assert report["overall"]["auc"] == pytest.approx(9 / 12)
    assert report["overall"]["rows"] == 7 and report["overall"]["positives"] == 4
    assert (report["labelled"], report["scored"], report["unscored"]) == (7, 7, 0)


def test_unscored_photos_are_counted_and_listed_never_dropped():
    labels = _labels([("c1", 0, ""), ("c2", 0, ""), ("b1", 1, "blur"), ("b2", 1, "blur"), ("x", 1, "blur")])
    scores = pd.DataFrame({"file": ["c1", "c2", "b1"], "score": [0.1, 0.2, 0.9]})
    report = evaluate(scores, labels, {"b2": "decode/truncated_image"})
    assert report["labelled"] == report["scored"] + report["unscored"] == 5
    assert report["unscored_files"] == {"b2": "decode/truncated_image", "x": NOT_SCORED}
    assert report["per_kind"]["blur"]["positives"] == 1
    table = format_table(report)
    assert "unscored b2: decode/truncated_image" in table and "labelled=5 scored=3 unscored=2" in table


def test_scores_for_unlabelled_files_are_an_error():
    with pytest.raises(PhotoscoreError, match="not labelled"):
        evaluate(pd.DataFrame({"file": ["zzz"], "score": [0.5]}), _labels([("a", 0, "")]))


def test_one_class_gives_no_auc_and_strict_json():
    report = evaluate(pd.DataFrame({"file": ["a", "b"], "score": [0.2, 0.4]}),
                      _labels([("a", 1, "blur"), ("b", 1, "noise")]))
    assert math.isnan(report["overall"]["auc"]) and math.isnan(report["per_kind"]["blur"]["auc"])
    parsed = json.loads(report_json(report))  # json.loads accepts NaN; the file must hold null
    assert parsed["overall"]["auc"] is None and "NaN" not in report_json(report)
    assert "n/a" in format_table(report)


@pytest.mark.parametrize("text, message", [
    ("name,low_quality\na.jpg,1\n", "lacks columns"),
    ("file,low_quality\na.jpg,2\n", "must be 0 or 1"),
    ("file,low_quality\na.jpg,\n", "must be 0 or 1"),
    ("file,low_quality\na.jpg,1\na.jpg,0\n", "listed twice"),
    ("file,low_quality\n/etc/passwd,1\n", "relative"),
    ("file,low_quality\n../x.jpg,1\n", "relative"),
])
def test_read_labels_refuses_bad_csvs(tmp_path, text, message):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(PhotoscoreError, match=message):
        read_labels(path)


def test_read_labels_without_kind(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("file,low_quality\nsub/a.jpg,1\nb.png,0\n")
    labels = read_labels(path)
    assert list(labels.columns) == ["file", "low_quality", "kind"]
    assert labels["kind"].tolist() == ["", ""] and labels["low_quality"].tolist() == [1, 0]


# --- the independent generator -------------------------------------------------------------------

def test_held_out_photos_are_no_corpus_source():
    training = {s.name for s in independent.training_sources()}
    assert not training & set(independent.HELD_OUT_WALLPAPERS)
    assert len(independent.extra_photo_paths()) >= 3
    # Not merely other names: no held-out photo looks like any corpus source.
    def thumb(img):
        return np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BOX), np.float32)
    sources = [thumb(load_source(s)) for s in available_sources() if s.name in training]
    for name, img in independent.held_out_images().items():
        assert min(np.abs(thumb(img) - t).mean() for t in sources) > 10, name


def _gray(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"), np.float32)


def test_independent_degradations_move_the_photo_the_right_way():
    import cv2

    source = next(iter(independent.held_out_images().values()))
    clean = independent.crop_resize(source, np.random.default_rng(1))
    assert 0.25e6 <= clean.size[0] * clean.size[1] <= 2.5e6
    out = {kind: independent.degrade(clean, kind, np.random.default_rng(2)) for kind in independent.KINDS}
    lap = lambda im: float(cv2.Laplacian(_gray(im), cv2.CV_32F).var())  # noqa: E731
    assert lap(out["blur"][0]) < 0.6 * lap(clean) and lap(out["motion"][0]) < 0.8 * lap(clean)
    assert lap(out["noise"][0]) > lap(clean) and (_gray(out["noise"][0]) - _gray(clean)).std() > 5
    assert _gray(out["dark"][0]).mean() < 0.6 * _gray(clean).mean() < _gray(out["overexposed"][0]).mean()
    assert out["jpeg"][1] <= 7 and all(q >= 80 for k, (_, q) in out.items() if k != "jpeg")
    changed = np.abs(_gray(out["text"][0]) - _gray(clean)) > 30
    assert 0.002 < changed.mean() < 0.4


# --- photoscore evaluate, end to end --------------------------------------------------------------

@pytest.mark.integration
def test_cli_evaluate_prints_table_and_writes_json(corpus_dir, corpus_labels, model_data, tmp_path_factory,
                                                   tmp_path, monkeypatch, capsys):
    from jobs.config import load_settings
    from models.registry import log_and_register, promote

    monkeypatch.setenv("PHOTOSCORE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings([], env={"PHOTOSCORE_HOME": str(tmp_path / "home")})
    built = built_bundle("xgboost", model_data, tmp_path_factory)
    mv = log_and_register(built, "eval_model", settings, {"model_type": "xgboost"})
    promote(settings, "eval_model", mv.version, "champion")

    photos = corpus_dir / "photos"
    rows = corpus_labels[corpus_labels["duplicate_of"].isna()]
    kind = rows["variant"].where(rows["low_quality"], "").str.replace("+", "_", regex=False)
    labels = pd.DataFrame({"file": [p.split("/")[-1] for p in rows["photo_id"]],
                           "low_quality": rows["low_quality"].astype(int), "kind": kind})
    (photos / "broken.jpg").write_bytes(b"<html>not a photo</html>")
    extra = pd.DataFrame({"file": ["broken.jpg", "missing.jpg"], "low_quality": [1, 0], "kind": ["text", ""]})
    csv = tmp_path / "labels.csv"
    pd.concat([labels, extra]).to_csv(csv, index=False)
    out = tmp_path / "report" / "eval.json"
    assert cli(["evaluate", "--model", "models:/eval_model@champion", "--photos", str(photos),
                "--labels", str(csv), "--out", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"feature_version={FEATURE_VERSION}" in printed
    assert f"labelled={len(labels) + 2} scored={len(labels)} unscored=2" in printed
    report = json.loads(out.read_text())
    assert report["unscored_files"] == {"broken.jpg": "decode/not_an_image", "missing.jpg": "read/unreadable_uri"}
    assert report["model"]["version"] == int(mv.version) and report["overall"]["rows"] == len(labels)
    assert 0.5 < report["overall"]["auc"] <= 1.0
    assert set(report["per_kind"]) <= set(kind) - {""} and report["per_kind"]


# --- the independent check (issue 19's goal) -------------------------------------------------------

QUALITY_CORPUS_N = 500


@pytest.mark.quality
# Issue 19's goal, not reached yet (measured 2026-12-02 with the sharpening camera look: AUC 0.80-0.90
# overall over three corpus seeds; motion, noise and text ~0.7-0.85; the dark forest's clean crops
# score as dark). Strict: the day it passes, this marker fails the run and must go.
@pytest.mark.xfail(strict=True, reason="issue 19's independent-check goal (AUC >= 0.95, >= 0.90 per kind) is not met yet")
def test_model_trained_on_the_corpus_sees_independent_degradations_on_unseen_photos(tmp_path):
    held_out = independent.build_held_out_set(tmp_path / "held-out")
    report = independent.measure_quality(tmp_path, held_out, QUALITY_CORPUS_N, FEATURE_VERSION)
    figures = {k: round(v["auc"], 3) for k, v in report["per_kind"].items()}
    assert report["unscored"] == 0 and set(figures) == set(independent.KINDS)
    measured = f"overall {report['overall']['auc']:.3f}, per kind {figures}"
    assert report["overall"]["auc"] >= 0.95, measured
    assert min(figures.values()) >= 0.90, measured
