"""`photoscore compare`'s library: pairing champion and challenger scores, failures per version,
`--since`, and the score table read with pyarrow in its real partition layout (no Spark)."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.config import load_settings
from jobs.table_reader import parse_since
from jobs.rollout_compare import (failures_by_version, judge, pairs_from_scores, pairs_from_stream,
                                  read_table_scores, source_ref_prefix)
from udfs.errors import PhotoscoreError
from udfs.rollout import RolloutPlan
from udfs.schemas import QUARANTINE_TABLE, SCORE, without

PLAN = RolloutPlan("pq", 1, 2, 100.0, 0.0, "salt")
CONTENTS = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(400)]


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return load_settings([f"home={tmp_path_factory.mktemp('home')}"], env={})


def score_frame(versions_scores: dict[int, np.ndarray], contents=CONTENTS, scored_at_ms=1_000) -> pd.DataFrame:
    return pd.concat([pd.DataFrame({"content_sha256": contents[:len(s)], "model_name": "pq", "model_version": v,
                                    "score": s, "scored_at_ms": scored_at_ms})
                      for v, s in versions_scores.items()], ignore_index=True)


def test_pairs_are_the_contents_both_scored_newest_score_first_other_models_ignored():
    rng = np.random.default_rng(0)
    champion, challenger = rng.uniform(0, 1, 400), rng.uniform(0, 1, 300)
    frame = score_frame({1: champion, 2: challenger, 7: champion})
    stale = score_frame({2: np.zeros(10)}, scored_at_ms=10)  # older scores of the same contents
    other = score_frame({2: np.ones(400)}).assign(model_name="other")
    pairs = pairs_from_scores(pd.concat([stale, frame, other]), PLAN, failed={2: 6, 1: 0})
    assert len(pairs.champion) == len(pairs.challenger) == 300
    np.testing.assert_array_equal(pairs.champion, champion[:300])
    np.testing.assert_array_equal(pairs.challenger, challenger)
    assert (pairs.champion_arm.tried, pairs.champion_arm.failed) == (400, 0)
    assert (pairs.challenger_arm.tried, pairs.challenger_arm.failed) == (306, 6)
    with pytest.raises(PhotoscoreError, match="no challenger.*rollout set --name pq"):
        pairs_from_scores(frame, RolloutPlan("pq", 1))


def test_judge_passes_a_faithful_challenger_and_fails_a_constant_one_or_too_few_pairs(settings):
    rng = np.random.default_rng(1)
    champion = rng.uniform(0, 1, 400)
    close = np.clip(champion + rng.normal(0, 0.01, 400), 0, 1)
    assert judge(pairs_from_scores(score_frame({1: champion, 2: close}), PLAN), settings.rollout).passed
    constant = judge(pairs_from_scores(score_frame({1: champion, 2: np.ones(400)}), PLAN), settings.rollout)
    assert not constant.passed and any("rank correlation" in f for f in constant.failures)
    few = judge(pairs_from_scores(score_frame({1: champion, 2: close[:50]}), PLAN), settings.rollout)
    assert few.failures == [f"50 pairs < min_pairs {settings.rollout.min_pairs}"]


def test_failures_count_against_the_version_named_in_their_source_ref():
    refs = [f"{source_ref_prefix('pq', 2)}abc", "models:/pq/2#def", "models:/pq/1#x", "models:/pq/21#y",
            "models:/other/2#z"]
    assert failures_by_version(refs, "pq", (1, 2)) == {1: 1, 2: 2}


def test_since_accepts_a_span_ago_or_an_iso_time():
    now = 10_000_000_000
    assert parse_since("30m", now) == now - 30 * 60_000
    assert parse_since("2h", now) == now - 7_200_000
    assert parse_since("1.5d", now) == now - 129_600_000
    utc = int(datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc).timestamp() * 1000)
    assert parse_since("2026-12-01T10:00", now) == utc
    assert parse_since("2026-12-01T11:00+01:00", now) == utc
    with pytest.raises(PhotoscoreError, match="neither an ISO time"):
        parse_since("yesterday", now)


def test_stream_records_pair_across_topics_with_latency_and_failures(settings):
    rng = np.random.default_rng(2)
    champion = rng.uniform(0, 1, 300)

    def record(content, version, score, role, latency):
        return json.dumps({"content_sha256": content, "model_name": "pq", "model_version": version, "score": score,
                           "role": role, "scored_at_ms": 5_000 + latency, "uploaded_at_ms": 5_000}).encode()

    values = [record(c, 1, s, "served", 20) for c, s in zip(CONTENTS, champion)]
    values += [record(c, 2, s, "shadow", 30) for c, s in zip(CONTENTS, champion)]
    values += [json.dumps({"source_ref": "models:/pq/2#uploads/0/7", "reason_code": "score_failed",
                           "stage": "score"}).encode(), b"not json", b"[1]"]
    pairs = pairs_from_stream(values, PLAN)
    assert len(pairs.champion) == 300 and pairs.challenger_arm.failed == 1 and pairs.challenger_arm.tried == 301
    assert set(pairs.challenger_arm.latencies_ms) == {30.0} and set(pairs.champion_arm.latencies_ms) == {20.0}
    result = judge(pairs, settings.rollout, check_latency=True)
    assert result.challenger_latency_p99_ms == 30.0 and result.passed, result.failures
    assert pairs_from_stream(values, PLAN, since_ms=6_000).champion.size == 0


def write_score_file(root, version, run_id, rows: pd.DataFrame, with_role=True, name="pq"):
    """One score file in the real layout: scores/model_name=M/model_version=V/run_id=R/part-0.parquet."""
    layout = without(SCORE, ("model_name", "model_version"))
    if not with_role:  # written before `role` existed
        layout = without(layout, ("role",))
    table = pa.Table.from_pandas(rows[[f.name for f in layout]], schema=layout, preserve_index=False)
    out = root / "scores" / f"model_name={name}" / f"model_version={version}" / f"run_id={run_id}"
    out.mkdir(parents=True)
    pq.write_table(table, out / "part-0.parquet")


def score_rows(contents, scores, version, role, scored_at_ms=1_000):
    return pd.DataFrame({"photo_id": [f"p{i}" for i in range(len(contents))], "content_sha256": contents,
                         "export_format": "native", "score": scores, "feature_version": 2,
                         "scored_at_ms": scored_at_ms, "source": "batch", "from_cache": False, "role": role})


def write_quarantine(root, refs, seen_at_ms=2_000):
    rows = pd.DataFrame({"source_ref": refs, "photo_id": None, "stage": "score", "reason_code": "score_failed",
                         "detail": "raised", "seen_at_ms": seen_at_ms, "content_sha256": None,
                         "feature_version": 2})
    out = root / "quarantine" / "run_id=r9"
    out.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(rows, schema=QUARANTINE_TABLE, preserve_index=False), out / "part-0.parquet")


def test_the_score_table_is_read_in_its_partition_layout_with_old_files_and_quarantine(settings, tmp_path):
    rng = np.random.default_rng(3)
    champion = rng.uniform(0, 1, 400)
    write_score_file(tmp_path, 1, "r1", score_rows(CONTENTS[:200], champion[:200], 1, None), with_role=False)
    write_score_file(tmp_path, 1, "r2", score_rows(CONTENTS[200:], champion[200:], 1, "served"))
    write_score_file(tmp_path, 2, "r3", score_rows(CONTENTS[:250], champion[:250] + 0.001, 2, "shadow",
                                                   scored_at_ms=5_000))
    write_quarantine(tmp_path, ["models:/pq/2#aa", "models:/pq/2#bb", "models:/pq/1#cc"])
    (tmp_path / "scores" / "_staging").mkdir()  # invisible to readers, like Spark's
    pairs = read_table_scores(settings, PLAN, str(tmp_path))
    assert len(pairs.champion) == 250 and pairs.challenger_arm.failed == 2 and pairs.champion_arm.failed == 1
    np.testing.assert_allclose(pairs.challenger - pairs.champion, 0.001)
    assert read_table_scores(settings, PLAN, tmp_path.as_uri()).champion.size == 250
    later = read_table_scores(settings, PLAN, str(tmp_path), since_ms=3_000)
    assert later.champion.size == 0 and later.challenger_arm.failed == 0
    # A challenger that never scored: no pairs (the comparison fails on min_pairs), not an error.
    absent = read_table_scores(settings, RolloutPlan("pq", 1, 3, 100, 0, "s"), str(tmp_path))
    assert absent.champion.size == 0 and absent.champion_arm.tried == 401
