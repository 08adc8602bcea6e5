"""The stream's rollouts as pure functions on the real corpus and real bundles: several models per
photo from one decode, the plan's arms (served / shadow), a failing challenger served by the
champion, the per-identity score cache, and the canary guardrail ending a bad canary by itself."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from _models_fixtures import built_bundle
from _photo_fixtures import settings_for
from jobs.supervise import wait_until
from udfs.decode import DecodeLimits
from udfs.guardrail import CanaryGuardrail, Pair
from udfs.messages import encode_upload
from udfs.rollout import RolloutPlan, arm
from udfs.stream_models import RolloutHolder, ServingSet, load_model
from udfs.stream_scoring import DLQ, SCORES, SHADOW, process_message, upload_intake

LIMITS = DecodeLimits()


class ConstantScorer:
    """A challenger whose scores are all 1.0 (a model trained on all-positive labels)."""

    format = "native"

    def score(self, X: np.ndarray) -> np.ndarray:
        return np.ones(len(X))


class RaisingScorer:
    """A challenger that cannot score anything."""

    format = "native"

    def score(self, X: np.ndarray) -> np.ndarray:
        raise RuntimeError("challenger export is broken")


@pytest.fixture(scope="module")
def models(model_data, tmp_path_factory):
    """quality v1 (xgboost, champion), quality v2 (logreg), text v1 (logreg): real loaded exports."""
    xgb = built_bundle("xgboost", model_data, tmp_path_factory)
    logreg = built_bundle("logreg", model_data, tmp_path_factory)
    return {"q1": load_model("quality", 1, xgb.bundle_dir, "native"),
            "q2": load_model("quality", 2, logreg.bundle_dir, "native"),
            "t1": load_model("text", 1, logreg.bundle_dir, "native")}


@pytest.fixture(scope="module")
def intake(corpus_dir):
    return upload_intake(settings_for(corpus_dir))


@pytest.fixture(scope="module")
def photos(corpus_features):
    return sorted(corpus_features["photo_id"])


def _rollout(models, challenger, shadow=0.0, canary=0.0, salt="salt1") -> ServingSet:
    plan = RolloutPlan("quality", 1, challenger.version, shadow, canary, salt)
    return ServingSet(plan, {1: models["q1"], challenger.version: challenger})


def _records(outcome) -> list[tuple[str, dict]]:
    return [(kind, json.loads(payload)) for kind, payload in outcome.records]


def _upload(path: str, i: int) -> bytes:
    return encode_upload(f"p{i}", Path(path).as_uri(), 1)


def test_two_models_per_photo_decode_once_and_cache_each_identity(models, photos, intake):
    servings = [ServingSet.alone(models["q1"]), ServingSet.alone(models["t1"])]
    cache: dict = {}
    first = process_message(_upload(photos[0], 0), "t/0/0", servings, cache, LIMITS, intake)
    assert len(first.decoded) == 1  # one decode for both models (same feature version)
    got = _records(first)
    assert [(k, r["model_name"], r["role"], r["from_cache"]) for k, r in got] == \
        [(SCORES, "quality", "served", False), (SCORES, "text", "served", False)]
    sha = got[0][1]["content_sha256"]
    assert set(cache[sha].scores) == {models["q1"].identity, models["t1"].identity}
    again = process_message(_upload(photos[0], 1), "t/0/1", servings, cache, LIMITS, intake)
    assert again.decoded == () and all(r["from_cache"] for _, r in _records(again))
    assert [r["score"] for _, r in _records(again)] == [r["score"] for _, r in got]
    # A rollout adds a version: only its identity is scored (from the cached features), the
    # champion's score is a cache hit.
    rolled = [_rollout(models, models["q2"], shadow=100), servings[1]]
    third = _records(process_message(_upload(photos[0], 2), "t/0/2", rolled, cache, LIMITS, intake))
    assert [(k, r["model_version"], r["role"], r["from_cache"]) for k, r in third if r["model_name"] == "quality"] == \
        [(SCORES, 1, "served", True), (SHADOW, 2, "shadow", False)]
    assert set(cache[sha].scores) == {models["q1"].identity, models["q2"].identity, models["t1"].identity}


def test_arms_are_respected_canary_serves_the_challenger_and_shadows_the_champion(models, photos, intake):
    serving = _rollout(models, models["q2"], shadow=60, canary=30)
    cache: dict = {}
    seen = Counter()
    for i, path in enumerate(photos):
        got = _records(process_message(_upload(path, i), f"t/0/{i}", serving, cache, LIMITS, intake))
        which = arm(got[0][1]["content_sha256"], serving.plan)
        seen[which] += 1
        shape = [(k, r["model_version"], r["role"]) for k, r in got]
        if which == "canary":
            assert shape == [(SHADOW, 1, "shadow"), (SCORES, 2, "served")]
        elif which == "shadow":
            assert shape == [(SCORES, 1, "served"), (SHADOW, 2, "shadow")]
        else:
            assert shape == [(SCORES, 1, "served")]
    assert all(seen[a] for a in ("canary", "shadow", "champion")), seen


def test_a_failing_challenger_is_served_by_the_champion_and_recorded_on_the_shadow_topic(models, photos, intake):
    broken = replace(models["q2"], scorer=RaisingScorer())
    serving = _rollout(models, broken, canary=100)
    cache: dict = {}
    out = process_message(_upload(photos[0], 7), "photos.uploaded/0/7", serving, cache, LIMITS, intake)
    (k1, served), (k2, failure) = _records(out)
    assert (k1, served["model_version"], served["role"]) == (SCORES, 1, "served")
    assert k2 == SHADOW and failure["source_ref"] == "models:/quality/2#photos.uploaded/0/7"
    assert (failure["stage"], failure["reason_code"]) == ("score", "score_failed")
    assert "challenger export is broken" in failure["detail"] and DLQ not in (k1, k2)
    (pair,) = out.pairs
    assert pair.challenger_score is None and pair.champion_score == served["score"]
    # Both fail: the served failure is dead-lettered (per model: uploads = served + dead-lettered).
    both = ServingSet(serving.plan, {1: replace(models["q1"], scorer=RaisingScorer()), 2: broken})
    kinds = [k for k, _ in _records(process_message(_upload(photos[1], 8), "t/0/8", both, {}, LIMITS, intake))]
    assert sorted(kinds) == sorted([DLQ, SHADOW])


def _pairs(plan, champion, challenger, latency=1.0):
    return [Pair("quality", plan, a, b, latency) for a, b in zip(champion, challenger)]


def test_the_guardrail_trips_once_per_rollout_and_only_while_a_canary_runs():
    settings = settings_for(overrides=("rollout.guardrail_window=50",))
    rng = np.random.default_rng(0)
    champion = rng.uniform(0, 1, 200)
    canary = RolloutPlan("quality", 1, 2, 0, 20, "a")
    guard = CanaryGuardrail(settings.rollout)
    assert guard.needed == 50
    # Shadow only: the window fills, nothing trips (there is no canary to end).
    shadow_only = replace(canary, canary_percent=0.0)
    assert not any(guard.observe(p) for p in _pairs(shadow_only, champion, np.ones(200)))
    # A canary of a faithful challenger: never trips.
    assert not any(guard.observe(p) for p in _pairs(replace(canary, salt="b"), champion, champion))
    # Constant 1.0: trips once, naming the divergence.
    verdicts = [guard.observe(p) for p in _pairs(replace(canary, salt="c"), champion, np.ones(200))]
    tripped = [v for v in verdicts if v is not None]
    assert len(tripped) == 1 and verdicts.index(tripped[0]) == 49
    assert any("mean |delta|" in f for f in tripped[0].failures)
    # A raising challenger: its error rate.
    raising = [guard.observe(p) for p in _pairs(replace(canary, salt="d"), champion, [None] * 200)]
    (verdict,) = [v for v in raising if v is not None]
    assert any("challenger error rate 1.0000" in f for f in verdict.failures)
    # A slow one: its p99 latency.
    slow = [guard.observe(p) for p in _pairs(replace(canary, salt="e"), champion, champion, latency=500.0)]
    (verdict,) = [v for v in slow if v is not None]
    assert [f for f in verdict.failures if "latency" in f] == verdict.failures


@pytest.mark.parametrize("scorer,trips", [(None, False), (ConstantScorer(), True), (RaisingScorer(), True)])
def test_a_bad_canary_ends_itself_through_the_holder(models, photos, intake, scorer, trips):
    """The whole path: photos scored with a canary of 100 %, the pairs fed to the model's holder,
    whose guardrail calls end_canary (once) with the comparison's failures."""
    settings = settings_for(overrides=("rollout.guardrail_window=40",))
    # Faithful: the champion's own export registered again as version 2.
    challenger = replace(models["q1"], version=2, scorer=scorer or models["q1"].scorer)
    serving = _rollout(models, challenger, canary=100)
    ended: list[str] = []
    holder = RolloutHolder("quality", lambda: serving.plan, lambda v: None, "native",
                           guardrail=CanaryGuardrail(settings.rollout), end_canary=ended.append)
    cache: dict = {}
    reasons = []
    for i, path in enumerate(photos):
        out = process_message(_upload(path, i), f"t/0/{i}", serving, cache, LIMITS, intake)
        reasons += [r for r in map(holder.observe, out.pairs) if r]
    wait_until(lambda: len(ended) == len(reasons), 10, 0.01, what="the guardrail's end_canary thread")
    assert len(reasons) == int(trips) and ended == reasons
