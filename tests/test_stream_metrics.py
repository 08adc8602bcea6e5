"""The stream's metrics (udfs/stream_metrics.py) on the real corpus and a real bundle: what each
finished upload adds to the counters, the latency buckets, the rolling means and the reference
bands, through Flink's Python metric-group API (recorded here; the integration test scrapes them
from the running job)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from _models_fixtures import built_bundle
from _photo_fixtures import settings_for
from udfs.decode import DecodeLimits
from udfs.features import FEATURE_NAMES
from udfs.messages import encode_upload
from udfs.stream_metrics import (GAUGE_SCALE, INF, LATENCY_BOUNDS_S, SCORE, RollingMean, StreamMetrics, bucket_label,
                                 exported_name, headline, parse_metrics)
from udfs.stream_models import ServingSet, load_model
from udfs.stream_scoring import DLQ, process_message, upload_intake

LIMITS = DecodeLimits()


class RecordingGroup:
    """Flink's Python MetricGroup API (add_group, counter, gauge), recording every metric by
    (name, labels) in the shared `metrics` dict; generic groups are kept as a path."""

    def __init__(self, metrics: dict, path: tuple = (), labels: tuple = ()):
        self.metrics, self.path, self.labels = metrics, path, labels

    def add_group(self, name: str, extra: str | None = None) -> "RecordingGroup":
        if extra is None:
            return RecordingGroup(self.metrics, (*self.path, name), self.labels)
        return RecordingGroup(self.metrics, self.path, (*self.labels, (name, extra)))

    def counter(self, name: str) -> "RecordingCounter":
        return self.metrics.setdefault(("/".join(self.path), name, frozenset(self.labels)), RecordingCounter())

    def gauge(self, name: str, fn) -> None:
        key = ("/".join(self.path), name, frozenset(self.labels))
        assert key not in self.metrics, f"gauge {key} registered twice"
        self.metrics[key] = fn


class RecordingCounter:
    def __init__(self):
        self.count = 0

    def inc(self, n: int = 1) -> None:
        self.count += n


def values(metrics: dict, name: str) -> dict:
    """{labels dict as sorted tuple: value} of metric `name` (a gauge is read now)."""
    out = {}
    for (path, n, labels), metric in metrics.items():
        if n == name:
            assert path == "photoscore"
            out[tuple(sorted(labels))] = metric.count if isinstance(metric, RecordingCounter) else metric()
    return out


@pytest.fixture(scope="module")
def xgb(model_data, tmp_path_factory):
    return built_bundle("xgboost", model_data, tmp_path_factory)


def test_rolling_mean_keeps_the_last_window_values():
    mean = RollingMean(3)
    assert mean.value is None
    for v in (1.0, 2.0, 3.0, 10.0):
        mean.add(v)
    assert mean.value == pytest.approx(5.0)
    rng = np.random.default_rng(0)
    data = rng.normal(1e6, 1.0, 10_000)
    for v in data:
        mean.add(float(v))
    assert mean.value == pytest.approx(data[-3:].mean(), rel=1e-12)


def test_metrics_count_every_upload_once_with_its_fate(corpus_dir, corpus_features, bad_inputs, xgb):
    """Scores by model/version/role, dead letters by stage/reason, cache hits, cumulative latency
    buckets, rolling means of the served scores' features and score, and the champion's bands."""
    model = load_model("m", 3, xgb.bundle_dir, "native")
    assert model.profile is not None
    serving = ServingSet.alone(model)
    intake = upload_intake(settings_for(corpus_dir))
    metrics: dict = {}
    features, window = ["mean_luma", "sharpness", "not_a_feature"], 5
    stream = StreamMetrics(RecordingGroup(metrics), features, window, 4.0)
    photos = sorted(corpus_features["photo_id"])[:12]
    messages = [encode_upload(p, Path(p).as_uri(), 1_000) for p in photos]
    messages += [encode_upload(p, Path(p).as_uri(), 1_000) for p in sorted(bad_inputs)]
    messages += [encode_upload(f"dup{i}", inline=Path(p).read_bytes(), uploaded_at_ms=1_000)
                 for i, p in enumerate(photos[:4])]
    messages += [b"{not json", b"[]"]
    cache: dict = {}
    served = []
    for i, raw in enumerate(messages):
        outcome = process_message(raw, f"t/0/{i}", serving, cache, LIMITS, intake)
        # Latency: 30 ms for the photos, 3 s for the duplicates.
        stream.finished(outcome, 1_000, [serving], 1_030 if i < len(messages) - 6 else 4_000)
        served += [(row, outcome.features[row["feature_version"]]) for row in outcome.scored]
    stream.dead_lettered("parse", "malformed_message")  # as the hashing operator counts one

    n_scored = len(photos) + 4
    assert values(metrics, "uploads") == {(): len(messages) + 1}
    assert values(metrics, "scores") == {(("model", "m"), ("role", "served"), ("version", "3")): n_scored}
    # The 4 duplicates, and any photo of the corpus whose content an earlier one had.
    hits = sum(row["from_cache"] for row, _ in served)
    assert hits >= 4 and values(metrics, "cache_hits") == {(): hits}
    expected_dlq = Counter(bad_inputs.values()) + Counter({"malformed_message": 3})
    dead = values(metrics, "dead_letters")
    assert {dict(k)["reason"]: v for k, v in dead.items()} == dict(expected_dlq)
    assert {dict(k)["stage"] for k in dead} >= {"parse", "decode"}
    # Cumulative buckets: the 12 photos at 30 ms, the 4 duplicates at 3 s; every bound exists.
    latency = {dict(k)["le"]: v for k, v in values(metrics, "latency").items()}
    assert set(latency) == {bucket_label(b) for b in LATENCY_BOUNDS_S} | {INF}
    for bound in LATENCY_BOUNDS_S:
        assert latency[bucket_label(bound)] == (bound >= 0.03) * len(photos) + (bound >= 3.0) * 4
    assert latency[INF] == n_scored
    # Rolling means over the last `window` served scores; a feature the version lacks is skipped.
    means = {tuple(dict(k)[x] for x in ("model", "feature")): v for k, v in values(metrics, "rolling_mean_e6").items()}
    assert set(means) == {("m", "mean_luma"), ("m", "sharpness"), ("m", SCORE)}
    last = served[-window:]
    names = list(FEATURE_NAMES)
    for feature in ("mean_luma", "sharpness"):
        expected = np.mean([f.values[names.index(feature)] for _, f in last])
        assert means[("m", feature)] == round(expected * GAUGE_SCALE)
    assert means[("m", SCORE)] == round(np.mean([row["score"] for row, _ in last]) * GAUGE_SCALE)
    # Bands: the champion's reference profile, for the exported features and the score.
    for name in ("band_low_e6", "band_high_e6"):
        bands = {dict(k)["feature"]: v for k, v in values(metrics, name).items()}
        assert set(bands) == {"mean_luma", "sharpness", SCORE}
        for feature, value in bands.items():
            low, high = model.profile.band(feature, window, 4.0)
            assert value == round((low if name == "band_low_e6" else high) * GAUGE_SCALE)
    snapshot = stream.snapshot()
    assert snapshot["band"][("m", "mean_luma")] == model.profile.band("mean_luma", window, 4.0)
    assert snapshot["rolling_mean"][("m", "mean_luma")] * GAUGE_SCALE == pytest.approx(means[("m", "mean_luma")], abs=1)


def test_a_dead_lettered_outcome_counts_its_reason_and_no_latency(corpus_dir, xgb):
    serving = ServingSet.alone(load_model("m", 1, xgb.bundle_dir, "native"))
    metrics: dict = {}
    stream = StreamMetrics(RecordingGroup(metrics), ["mean_luma"], 10, 4.0)
    outcome = process_message(encode_upload("gone", (corpus_dir / "nope.jpg").as_uri()), "t/0/0", serving, {}, LIMITS,
                              upload_intake(settings_for(corpus_dir)))
    assert [kind for kind, _ in outcome.records] == [DLQ]
    stream.finished(outcome, 0, [serving], 10)
    assert values(metrics, "dead_letters") == {(("reason", json.loads(outcome.records[0][1])["reason_code"]),
                                                ("stage", "read")): 1}
    assert set(values(metrics, "latency").values()) == {0}
    assert values(metrics, "rolling_mean_e6") == {}


def test_the_scraped_page_gives_the_headline_figures():
    """Flink's reporter's text format (labels escaped, one series per subtask) -> the figures
    `photoscore stream status` prints."""
    def line(metric, value, **labels):
        escaped = {k: v.replace("\\", "\\\\").replace('"', '\\"') for k, v in {**labels, "task_name": 'a "b"\\c'}.items()}
        text = ",".join(f'{k}="{v}"' for k, v in escaped.items())
        return f"{exported_name(metric)}{{{text}}} {value}"

    page = "\n".join([
        f"# HELP {exported_name('uploads')} uploads", f"# TYPE {exported_name('uploads')} gauge",
        line("uploads", 90.0, subtask_index="0"), line("uploads", 10.0, subtask_index="1"),
        line("scores", 80.0, model="m", version="1", role="served"),
        line("scores", 80.0, model="m", version="2", role="shadow"),
        line("dead_letters", 20.0, stage="parse", reason="malformed_message"),
        *(line("latency", 80.0 if b >= 0.1 else 40.0, le=bucket_label(b)) for b in LATENCY_BOUNDS_S),
        line("latency", 80.0, le=INF), "flink_jobmanager_numRunningJobs 1.0"])
    samples = parse_metrics(page)
    assert {labels["task_name"] for _, labels, _ in samples if labels} == {'a "b"\\c'}
    assert headline(samples) == {"uploads": 100, "scored": 80, "dead_lettered": 20, "p99_latency": "<=0.1s"}
    assert headline(parse_metrics(""))["p99_latency"] is None
