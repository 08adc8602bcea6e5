"""The stream job's metrics (issue 22): what each finished upload adds to the counters and rolling
means the job exports to Prometheus (docs/streaming.md "Stream metrics and alerts").

Nothing here knows about Flink: `StreamMetrics` takes any metric group with Flink's Python API
(`add_group(key, value)`, `counter(name)` -> `inc(n)`, `gauge(name, fn)`), so the operators of
jobs/stream_score.py hand it `get_runtime_context().get_metrics_group()` and the unit tests a
recording one. Every metric sits under the group `photoscore`; labels are key/value groups.

Two limits of PyFlink's metrics shape what is exported:
- a Python gauge reaches the JVM as an int64 (Beam's user gauges keep `int(value)`), so means
  and bands are exported in millionths (`*_e6`: value * 10^6);
- a Python `distribution` reaches Prometheus as 0 (its gauge's value is not a number), so the
  end-to-end latency is one cumulative counter per bucket bound, labelled `le` like a Prometheus
  histogram's buckets: `histogram_quantile` works on them.
"""
from __future__ import annotations

import json
from collections import deque
from typing import Callable, Iterable, Optional, Sequence

from udfs.features import feature_set
from udfs.stream_scoring import DLQ

# Upper bounds (seconds) of the end-to-end latency buckets: upload's uploaded_at_ms -> score ready.
LATENCY_BOUNDS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
INF = "+Inf"
GAUGE_SCALE = 1_000_000  # gauges are int64: fractional values are exported as millionths
SCORE = "score"          # the `feature` label of the score's rolling mean and band (as ReferenceProfile.band)


def bucket_label(bound_s: float) -> str:
    """The `le` label of a bucket bound, as Prometheus client libraries write it ("0.005", "1.0")."""
    return repr(float(bound_s))


class RollingMean:
    """The mean of the last `window` values added, O(1) per value."""

    def __init__(self, window: int):
        self._values: deque[float] = deque(maxlen=window)
        self._total = 0.0
        self._added = 0

    def add(self, value: float) -> None:
        if len(self._values) == self._values.maxlen:
            self._total -= self._values[0]
        self._values.append(value)
        self._added += 1
        if self._added % self._values.maxlen == 0:
            self._total = sum(self._values)  # once per window: rounding errors never accumulate
        else:
            self._total += value

    @property
    def value(self) -> Optional[float]:
        """The mean, None before the first value."""
        return self._total / len(self._values) if self._values else None


def scaled(value: Optional[float]) -> int:
    """A gauge's int64 value: `value` in millionths (0 for None)."""
    return 0 if value is None else int(round(value * GAUGE_SCALE))


class StreamMetrics:
    """The metrics of one operator subtask. Each upload is counted once, by the operator that
    finished it (`dead_lettered` or `finished`), so the sum of `uploads` over the job's operators
    is the number of messages handled.

    Exported (names under `photoscore`, labels in braces):
      uploads; dead_letters{stage, reason}; scores{model, version, role}; cache_hits (score rows
      reused from the content-hash cache); latency{le} (cumulative, the served scores' uploads);
      rolling_mean_e6{model, feature}, band_low_e6 / band_high_e6{model, feature} (the serving
      champion's reference band, udfs.reference_profile.ReferenceProfile.band), for
      `features` and "score", over the last `window` served scores of the model.
    """

    def __init__(self, group, features: Sequence[str], window: int, z: float):
        self._group = group.add_group("photoscore")
        self._features, self._window, self._z = tuple(features), int(window), float(z)
        self._counters: dict = {}
        self._means: dict[tuple[str, str], RollingMean] = {}
        self._bands: dict[tuple[str, str], tuple[float, float]] = {}
        self._banded: dict[str, tuple] = {}         # model -> champion identity its bands are of
        self._band_gauges: set[tuple[str, str]] = set()
        self._feature_index: dict[int, list[tuple[str, int]]] = {}
        self._uploads = self._counter("uploads")
        self._cache_hits = self._counter("cache_hits")
        # Every bucket exists from the start (at 0): a quantile over a missing bucket is wrong.
        self._latency = [(bound, self._counter("latency", le=bucket_label(bound))) for bound in LATENCY_BOUNDS_S]
        self._latency_inf = self._counter("latency", le=INF)

    def _labelled(self, labels: dict):
        group = self._group
        for key, value in labels.items():
            group = group.add_group(key, str(value))
        return group

    def _counter(self, name: str, **labels):
        key = (name, *labels.items())
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self._labelled(labels).counter(name)
        return counter

    def _gauge(self, name: str, value: Callable[[], int], **labels) -> None:
        self._labelled(labels).gauge(name, value)

    def dead_lettered(self, stage: str, reason: str) -> None:
        """An upload finished as one dead letter (before it could be scored)."""
        self._uploads.inc()
        self._counter("dead_letters", stage=stage, reason=reason).inc()

    def finished(self, outcome, uploaded_at_ms: Optional[int], servings: Iterable, now_ms: int) -> None:
        """An upload finished with `outcome` (udfs.stream_scoring.Outcome), scored with `servings`
        (one ServingSet per model, None for one not loaded), at `now_ms`."""
        self._uploads.inc()
        for kind, payload in outcome.records:
            if kind == DLQ:
                # Parsed back rather than carried: dead letters are the rare path.
                record = json.loads(payload)
                self._counter("dead_letters", stage=record["stage"], reason=record["reason_code"]).inc()
        served = False
        for row in outcome.scored:
            self._counter("scores", model=row["model_name"], version=row["model_version"], role=row["role"]).inc()
            if row["from_cache"]:
                self._cache_hits.inc()
            if row["role"] == "served":
                served = True
                self._observe(row, outcome.features.get(row["feature_version"]))
        if served and uploaded_at_ms is not None:
            self._observe_latency((now_ms - uploaded_at_ms) / 1000.0)
        for serving in servings:
            if serving is not None:
                self._update_bands(serving)

    def _observe(self, row: dict, features) -> None:
        model = row["model_name"]
        self._mean(model, SCORE).add(row["score"])
        if features is not None:
            for name, index in self._indices(features.feature_version):
                self._mean(model, name).add(features.values[index])

    def _indices(self, version: int) -> list[tuple[str, int]]:
        indices = self._feature_index.get(version)
        if indices is None:
            names = feature_set(version).names
            indices = self._feature_index[version] = [(f, names.index(f)) for f in self._features if f in names]
        return indices

    def _mean(self, model: str, feature: str) -> RollingMean:
        mean = self._means.get((model, feature))
        if mean is None:
            mean = self._means[(model, feature)] = RollingMean(self._window)
            self._gauge("rolling_mean_e6", lambda: scaled(mean.value), model=model, feature=feature)
        return mean

    def _observe_latency(self, seconds: float) -> None:
        for bound, counter in self._latency:
            if seconds <= bound:
                counter.inc()
        self._latency_inf.inc()

    def _update_bands(self, serving) -> None:
        """The bands of the model's champion, recomputed when the champion changes."""
        champion = serving.models.get(serving.plan.champion)
        model = serving.plan.model_name
        if champion is None or self._banded.get(model) == champion.identity:
            return
        self._banded[model] = champion.identity
        profile = champion.profile
        for feature in (*self._features, SCORE):
            band = None
            if profile is not None and (feature == SCORE or feature in profile.feature_names):
                band = profile.band(feature, self._window, self._z)
            key = (model, feature)
            if band is None:  # a champion without a profile: its band gauges read 0 .. 0 (no band)
                self._bands.pop(key, None)
                continue
            if key not in self._band_gauges:
                self._register_band(key)
            self._bands[key] = band

    def _register_band(self, key: tuple[str, str]) -> None:
        self._band_gauges.add(key)
        model, feature = key
        for side, name in enumerate(("band_low_e6", "band_high_e6")):
            self._gauge(name, lambda side=side: scaled(self._bands.get(key, (None, None))[side]),
                        model=model, feature=feature)

    def snapshot(self) -> dict:
        """The gauges' values unscaled (the counts live in the metric group):
        {"rolling_mean": {(model, feature): mean}, "band": {(model, feature): (low, high)}}."""
        return {"rolling_mean": {k: m.value for k, m in self._means.items()}, "band": dict(self._bands)}


def stream_metrics(group, monitor) -> Optional[StreamMetrics]:
    """The operator's StreamMetrics from `monitor` (udfs.settings.MonitorSettings); None when
    `monitor.metrics` is off."""
    if not monitor.metrics:
        return None
    return StreamMetrics(group, monitor.stream_features, monitor.stream_window, monitor.band_z)


# ---------------------------------------------------------------- reading the scraped page

# Flink's Prometheus reporter names an operator's metric by its logical scope, the generic group
# `photoscore` and the keys of its key/value groups, which become labels.
SCOPE = "flink_taskmanager_job_task_operator_photoscore_"
# Label keys per metric, in the order StreamMetrics adds their groups.
KEYS = {"uploads": (), "cache_hits": (), "dead_letters": ("stage", "reason"), "scores": ("model", "version", "role"),
        "latency": ("le",), "rolling_mean_e6": ("model", "feature"), "band_low_e6": ("model", "feature"),
        "band_high_e6": ("model", "feature")}

def exported_name(metric: str) -> str:
    """The Prometheus name of one of StreamMetrics' metrics (e.g. "scores")."""
    return SCOPE + "_".join((*KEYS[metric], metric))


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of each sample of a Prometheus text-format page (prometheus_client's
    parser: the main environment has it; the Flink workers never parse a page)."""
    from prometheus_client.parser import text_string_to_metric_families

    return [(sample.name, dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text) for sample in family.samples]


def metric_values(samples, metric: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every series of one of StreamMetrics' metrics, over all subtasks."""
    name = exported_name(metric)
    return [(labels, value) for n, labels, value in samples if n == name]


def headline(samples) -> dict:
    """The few figures `photoscore stream status` prints: uploads, served scores, dead letters,
    and the latency bucket holding the 99th percentile ("<=0.1s"; None before any score)."""
    buckets: dict[str, float] = {}
    for labels, value in metric_values(samples, "latency"):
        buckets[labels["le"]] = buckets.get(labels["le"], 0.0) + value
    total = buckets.get(INF, 0.0)
    p99 = next((f"<={bucket_label(b)}s" for b in LATENCY_BOUNDS_S if total and buckets.get(bucket_label(b), 0) >= 0.99 * total),
               f">{bucket_label(LATENCY_BOUNDS_S[-1])}s" if total else None)
    return {"uploads": int(sum(v for _, v in metric_values(samples, "uploads"))),
            "scored": int(sum(v for labels, v in metric_values(samples, "scores") if labels.get("role") == "served")),
            "dead_lettered": int(sum(v for _, v in metric_values(samples, "dead_letters"))),
            "p99_latency": p99}
