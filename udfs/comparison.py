"""Champion vs challenger on the same contents: the figures that gate a promotion (`photoscore
compare`) and that the stream's canary guardrail checks on a sliding window.

Pure functions over arrays: the batch compare reads pairs from the score table, the stream's from
its topics or its own window, and both judge them here with the thresholds of the `rollout`
config section.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

PSI_BINS = 10
# Share floor of an empty bin in the PSI: the usual guard against log(0) (a bin no score fell in).
_PSI_EPSILON = 1e-4


def psi(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of `current` against `reference` over the reference's decile
    bins. Written here because neither scipy nor numpy has it; it is one line of arithmetic over
    numpy's histogram."""
    reference, current = np.asarray(reference, float), np.asarray(current, float)
    if reference.size == 0 or current.size == 0:
        return float("nan")
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:  # a constant reference: one bin, and whatever left it
        edges = np.array([edges[0] - 1e-9, edges[0] + 1e-9])
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.maximum(np.histogram(reference, edges)[0] / reference.size, _PSI_EPSILON)
    actual = np.maximum(np.histogram(current, edges)[0] / current.size, _PSI_EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile of `values`, None when there are none."""
    return float(np.percentile(np.asarray(values, float), q)) if len(values) else None


@dataclass(frozen=True)
class ArmCounts:
    """One arm's attempts: contents it tried to score, how many failed, and (stream) latencies."""

    tried: int = 0
    failed: int = 0
    latencies_ms: tuple = ()

    @property
    def error_rate(self) -> float:
        return self.failed / self.tried if self.tried else 0.0


@dataclass(frozen=True)
class Comparison:
    """The figures and the verdict: `failures` names each threshold missed (empty: passed)."""

    pairs: int
    mean_abs_delta: float
    rank_correlation: float
    flips: int
    flip_share: float
    psi: float
    champion_error_rate: float
    challenger_error_rate: float
    champion_latency_p50_ms: float | None
    champion_latency_p99_ms: float | None
    challenger_latency_p50_ms: float | None
    challenger_latency_p99_ms: float | None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        """JSON-ready figures (NaN as None) with the verdict."""
        out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}
        return {**out, "passed": self.passed}

    def lines(self) -> list[str]:
        """The figures as aligned `name  value` lines, then the verdict."""
        rows = [(k, v) for k, v in self.to_dict().items() if k not in ("failures", "passed")]
        width = max(len(k) for k, _ in rows)
        text = [f"{k:<{width}}  {'-' if v is None else (f'{v:.4f}' if isinstance(v, float) else v)}" for k, v in rows]
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.failures)
        return [*text, f"{'verdict':<{width}}  {verdict}"]


def compare(champion: Sequence[float], challenger: Sequence[float], thresholds, *,
            champion_arm: ArmCounts = ArmCounts(), challenger_arm: ArmCounts = ArmCounts(),
            check_latency: bool = False) -> Comparison:
    """Compare paired scores (champion[i] and challenger[i] score the same content) against the
    `rollout` thresholds (udfs.settings.RolloutSettings). Latency is judged only when
    `check_latency` (the stream measures it; the batch has none)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(champion, float), np.asarray(challenger, float)
    if a.shape != b.shape:
        raise ValueError(f"pairs differ in length: {a.size} champion vs {b.size} challenger scores")
    n = int(a.size)
    cut = thresholds.decision_threshold
    flips = int(np.count_nonzero((a >= cut) != (b >= cut)))
    # A constant side has no ranks to correlate (spearmanr warns and answers NaN): that is a failure
    # to track the champion unless both sides are the same constant.
    if n >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0:
        rank = float(spearmanr(a, b).statistic)
    else:
        rank = 1.0 if n and np.array_equal(a, b) else float("nan")
    result = Comparison(
        pairs=n, mean_abs_delta=float(np.mean(np.abs(a - b))) if n else float("nan"), rank_correlation=rank,
        flips=flips, flip_share=flips / n if n else float("nan"), psi=psi(a, b),
        champion_error_rate=champion_arm.error_rate, challenger_error_rate=challenger_arm.error_rate,
        champion_latency_p50_ms=percentile(champion_arm.latencies_ms, 50),
        champion_latency_p99_ms=percentile(champion_arm.latencies_ms, 99),
        challenger_latency_p50_ms=percentile(challenger_arm.latencies_ms, 50),
        challenger_latency_p99_ms=percentile(challenger_arm.latencies_ms, 99))
    return _judge(result, thresholds, check_latency)


def _judge(c: Comparison, t, check_latency: bool) -> Comparison:
    failures = []
    if c.challenger_error_rate > t.max_error_rate:
        failures.append(f"challenger error rate {c.challenger_error_rate:.4f} > {t.max_error_rate:g}")
    if c.pairs < t.min_pairs:
        failures.append(f"{c.pairs} pairs < min_pairs {t.min_pairs}")
    else:
        if not c.mean_abs_delta <= t.max_mean_abs_delta:
            failures.append(f"mean |delta| {c.mean_abs_delta:.4f} > {t.max_mean_abs_delta:g}")
        if not c.rank_correlation >= t.min_rank_correlation:
            failures.append(f"rank correlation {c.rank_correlation:.4f} < {t.min_rank_correlation:g}")
        if not c.flip_share <= t.max_flip_share:
            failures.append(f"flip share {c.flip_share:.4f} > {t.max_flip_share:g}")
        if not c.psi <= t.max_psi:
            failures.append(f"PSI {c.psi:.4f} > {t.max_psi:g}")
    if check_latency and c.challenger_latency_p99_ms is not None and c.challenger_latency_p99_ms > t.max_latency_p99_ms:
        failures.append(f"challenger p99 latency {c.challenger_latency_p99_ms:.1f} ms > {t.max_latency_p99_ms:g} ms")
    return Comparison(**{**asdict(c), "failures": failures})
