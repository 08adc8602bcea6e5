"""Rollouts: the pure arm assignment and comparison, then the plan and audit trail in a real
MLflow registry (SQLite)."""
from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from jobs.config import load_settings
from udfs.comparison import ArmCounts, compare, psi
from udfs.rollout import RolloutPlan, arm, assignments, new_salt, plan_from_tags, plan_tag

CONTENTS = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20_000)]


def plan(shadow=0.0, canary=0.0, salt="s1", champion=1, challenger=2) -> RolloutPlan:
    return RolloutPlan("pq", champion, challenger, shadow, canary, salt)


def test_arm_is_sticky_and_a_pure_function_of_content_and_salt():
    p = plan(shadow=50, canary=20)
    first = [arm(c, p) for c in CONTENTS[:2000]]
    again = [arm(c, RolloutPlan("pq", 1, 2, 50, 20, "s1")) for c in CONTENTS[:2000]]
    assert first == again


@pytest.mark.parametrize("shadow,canary", [(0, 30), (100, 30), (10, 5), (50, 50), (100, 0)])
def test_arms_are_uniform_within_one_point_over_20000_contents(shadow, canary):
    counts = Counter(arm(c, plan(shadow, canary)) for c in CONTENTS)
    share = {k: 100.0 * v / len(CONTENTS) for k, v in counts.items()}
    assert abs(share.get("canary", 0) - canary) <= 1.0
    assert abs(share.get("shadow", 0) - max(shadow - canary, 0)) <= 1.0
    assert abs(share.get("champion", 0) - (100 - max(shadow, canary))) <= 1.0


def test_a_new_salt_draws_a_new_sample_and_a_larger_canary_only_adds_contents():
    a = {c for c in CONTENTS if arm(c, plan(canary=10, salt="a")) == "canary"}
    b = {c for c in CONTENTS if arm(c, plan(canary=10, salt="b")) == "canary"}
    overlap = len(a & b) / len(a)
    assert 0.05 < overlap < 0.15  # independent 10 % samples share ~10 %
    grown = {c for c in CONTENTS if arm(c, plan(canary=50, salt="a")) == "canary"}
    assert a <= grown
    assert new_salt() != new_salt()


def test_assignments_serve_exactly_one_score_and_pair_every_canary_with_the_champion():
    p = plan(shadow=30, canary=10)
    for content in CONTENTS[:3000]:
        which = arm(content, p)
        got = assignments(content, p)
        assert [a.role for a in got].count("served") == 1
        if which == "champion":
            assert [(a.version, a.role) for a in got] == [(1, "served")]
        elif which == "shadow":
            assert [(a.version, a.role) for a in got] == [(1, "served"), (2, "shadow")]
        else:
            assert [(a.version, a.role) for a in got] == [(1, "shadow"), (2, "served")]
    assert assignments(CONTENTS[0], RolloutPlan("pq", None)) == ()
    # No challenger, the challenger is the champion, or zero shares: no rollout.
    for idle in (RolloutPlan("pq", 1), plan(canary=0, shadow=0), plan(canary=50, challenger=1)):
        assert not idle.active and all(arm(c, idle) == "champion" for c in CONTENTS[:500])


def test_the_plan_round_trips_through_its_tag_and_bad_shares_are_refused():
    p = RolloutPlan("pq", 3, 4, 100.0, 12.5, "abc", 1234)
    assert plan_from_tags("pq", 3, {"rollout": plan_tag(p)}) == p
    assert plan_from_tags("pq", 3, {}) == RolloutPlan("pq", 3)
    with pytest.raises(ValueError, match="malformed rollout plan"):
        plan_from_tags("pq", 3, {"rollout": "{not json"})
    for bad in (-1, 101, float("nan")):
        with pytest.raises(ValueError, match="canary_percent"):
            RolloutPlan("pq", 1, 2, 0, bad, "s")


@pytest.fixture(scope="module")
def thresholds():
    return load_settings([], env={}).rollout


def test_comparison_passes_a_faithful_challenger_and_fails_a_constant_or_failing_one(thresholds):
    rng = np.random.default_rng(0)
    champion = rng.uniform(0, 1, 1000)
    close = np.clip(champion + rng.normal(0, 0.01, 1000), 0, 1)
    ok = compare(champion, close, thresholds, champion_arm=ArmCounts(1000, 0), challenger_arm=ArmCounts(1000, 0))
    assert ok.passed, ok.failures
    assert ok.pairs == 1000 and ok.rank_correlation > 0.99 and ok.psi < 0.05

    constant = compare(champion, np.ones(1000), thresholds)
    assert not constant.passed
    assert any("rank correlation" in f for f in constant.failures)
    assert any("PSI" in f for f in constant.failures)

    failing = compare(champion, close, thresholds, challenger_arm=ArmCounts(1000, 200))
    assert [f for f in failing.failures if "error rate" in f]
    assert not compare(champion[:10], close[:10], thresholds).passed  # too few pairs
    slow = compare(champion, close, thresholds, challenger_arm=ArmCounts(1000, 0, tuple([500.0] * 1000)),
                   check_latency=True)
    assert any("latency" in f for f in slow.failures)
    assert ok.to_dict()["passed"] is True and ok.lines()[-1].endswith("PASS")


def test_psi_is_zero_on_the_same_distribution_and_large_on_a_shift():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 5000), rng.normal(0, 1, 5000)
    assert psi(a, b) < 0.02
    assert psi(a, b + 1.0) > 0.25
