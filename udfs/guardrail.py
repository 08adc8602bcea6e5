"""The stream's canary guardrail: a sliding window of champion/challenger pairs per model, judged
with the same comparison and thresholds as `photoscore compare` (udfs/comparison.py, config
section `rollout`).

Pure: it only says "trip now, for these reasons"; the caller (udfs/stream_models.RolloutHolder)
ends the canary in the registry. Ground layer: no I/O.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional

from udfs.comparison import ArmCounts, Comparison, compare
from udfs.rollout import RolloutPlan


@dataclass(frozen=True)
class Pair:
    """One content scored by both the champion and the challenger of a model's rollout (canary or
    shadow arm). `challenger_score` None: the challenger failed on it."""

    model_name: str
    plan: RolloutPlan
    champion_score: float
    challenger_score: Optional[float]
    challenger_latency_ms: float


class CanaryGuardrail:
    """The newest `thresholds.guardrail_window` pairs of one model's current rollout.

    `observe` answers a failing Comparison at most once per rollout (challenger and salt): when at
    least min(min_pairs, window) pairs are in the window, a canary is running and the window fails
    the thresholds - challenger error rate, challenger p99 latency, divergence from the champion.
    A new rollout (another challenger or salt) starts an empty window.
    """

    def __init__(self, thresholds):
        self.thresholds = thresholds
        self.window: deque[Pair] = deque(maxlen=thresholds.guardrail_window)
        self.needed = min(thresholds.min_pairs, thresholds.guardrail_window)
        # A comparison (Spearman over the window) per pair would cost the stream more than the
        # challenger's tree; judging every tenth of the needed pairs trips at most that much later.
        self.every = max(1, self.needed // 10)
        self._rollout: tuple = ()
        self._since_judged = 0
        self.tripped: Optional[Comparison] = None

    def observe(self, pair: Pair) -> Optional[Comparison]:
        """Add one pair; the failing Comparison when this pair trips the guardrail, else None."""
        rollout = (pair.plan.challenger, pair.plan.salt)
        if rollout != self._rollout:
            self._rollout, self.tripped, self._since_judged = rollout, None, 0
            self.window.clear()
        self.window.append(pair)
        self._since_judged += 1
        if (self.tripped is not None or pair.plan.canary_percent <= 0 or len(self.window) < self.needed
                or self._since_judged < self.every):
            return None
        self._since_judged = 0
        verdict = self.judge()
        if verdict.passed:
            return None
        self.tripped = verdict
        return verdict

    def judge(self) -> Comparison:
        """The window's comparison: paired scores of the contents both scored, the challenger's
        failures and latencies over every content it tried."""
        scored = [p for p in self.window if p.challenger_score is not None]
        challenger = ArmCounts(tried=len(self.window), failed=len(self.window) - len(scored),
                               latencies_ms=tuple(p.challenger_latency_ms for p in self.window))
        # Enough evidence was checked by observe() (the window holds the needed pairs); a pair lost
        # to a challenger failure is judged by the error rate, not again as missing evidence.
        thresholds = self.thresholds.model_copy(update={"min_pairs": max(1, min(self.needed, len(scored)))})
        return compare([p.champion_score for p in scored], [p.challenger_score for p in scored], thresholds,
                       challenger_arm=challenger, check_latency=True)
