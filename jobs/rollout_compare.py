"""`photoscore compare`: a rollout's champion vs its challenger on the same contents, read from the
score table (`read_table_scores`, pyarrow over Parquet: no Spark) or from the score topics
(`read_stream_scores`, read to their end), paired by `pairs_from_scores` and judged by
`udfs.comparison.compare` with the thresholds of the `rollout` config section.

Failures count against the version that failed: in the tables, quarantine rows whose source_ref is
`models:/N/V#...` with reason `score_failed` (a feature that is not finite is the photo's fault,
not the model's, and both arms see it alike); in the stream, the `score_failed` records the
stream writes to the shadow topic with the same source_ref.
"""
from __future__ import annotations

import json
from typing import Iterable, Mapping, NamedTuple

import numpy as np
import pandas as pd

from jobs.table_reader import read_dataset, table_filesystem
from udfs.comparison import ArmCounts, Comparison, compare
from udfs.errors import PhotoscoreError
from udfs.rollout import RolloutPlan
from udfs.schemas import QUARANTINE_TABLE, SCORE, without

SCORE_FAILED = "score_failed"


class Pairs(NamedTuple):
    """Champion and challenger scores of the same contents (index i: one content), and each arm's
    attempts (contents scored + failed, latencies when the source measures them)."""

    champion: np.ndarray
    challenger: np.ndarray
    champion_arm: ArmCounts
    challenger_arm: ArmCounts


def source_ref_prefix(name: str, version: int) -> str:
    """The source_ref prefix of one model version's quarantine rows and failure records."""
    return f"models:/{name}/{version}#"


def failures_by_version(source_refs: Iterable[str], name: str, versions: Iterable[int]) -> dict[int, int]:
    """How many failures each of `versions` has among `source_refs` (of score_failed rows)."""
    refs = list(source_refs)
    return {v: sum(1 for ref in refs if ref.startswith(source_ref_prefix(name, v))) for v in versions}


def require_challenger(plan: RolloutPlan) -> None:
    """Refuse a plan with no challenger, naming the command that starts a rollout."""
    if plan.challenger is None:
        raise PhotoscoreError(f"{plan.model_name!r} has no rollout to compare (no challenger): start one with "
                              f"`photoscore rollout set --name {plan.model_name} --shadow 100`")


def _latest(frame: pd.DataFrame, version: int) -> pd.DataFrame:
    # One score per content: a replayed stream or a rescore may hold several; the newest counts.
    rows = frame[frame["model_version"] == version]
    if "scored_at_ms" in rows:
        rows = rows.sort_values("scored_at_ms", kind="stable")
    return rows.drop_duplicates("content_sha256", keep="last").set_index("content_sha256")


def _arm(rows: pd.DataFrame, failed: int, latency: bool) -> ArmCounts:
    latencies = ()
    if latency and {"scored_at_ms", "uploaded_at_ms"} <= set(rows.columns):
        known = rows.dropna(subset=["uploaded_at_ms"])
        latencies = tuple((known["scored_at_ms"] - known["uploaded_at_ms"]).astype(float))
    return ArmCounts(tried=len(rows) + failed, failed=failed, latencies_ms=latencies)


def pairs_from_scores(frame: pd.DataFrame, plan: RolloutPlan, failed: Mapping[int, int] | None = None,
                      latency: bool = False) -> Pairs:
    """Pair the plan's champion and challenger scores in `frame` (columns content_sha256,
    model_version, score; scored_at_ms and uploaded_at_ms for `latency`) on content_sha256.

    `failed`: score failures per version (they count as tried and failed). Rows of other versions
    or models are ignored; a content scored twice by one version counts once, its newest score."""
    require_challenger(plan)
    failed = failed or {}
    if "model_name" in frame:
        frame = frame[frame["model_name"] == plan.model_name]
    ours = frame[np.isfinite(frame["score"].astype(float))]
    champion, challenger = _latest(ours, plan.champion), _latest(ours, plan.challenger)
    both = champion.index.intersection(challenger.index)
    return Pairs(champion.loc[both, "score"].to_numpy(float), challenger.loc[both, "score"].to_numpy(float),
                 _arm(champion, failed.get(plan.champion, 0), latency),
                 _arm(challenger, failed.get(plan.challenger, 0), latency))


def judge(pairs: Pairs, thresholds, check_latency: bool = False) -> Comparison:
    """The pairs against the `rollout` thresholds (fewer than `min_pairs` pairs fails)."""
    return compare(pairs.champion, pairs.challenger, thresholds, champion_arm=pairs.champion_arm,
                   challenger_arm=pairs.challenger_arm, check_latency=check_latency)


# -- the score table -----------------------------------------------------------------------------

def read_table_scores(settings, plan: RolloutPlan, tables: str, since_ms: int | None = None) -> Pairs:
    """Pairs of the plan's champion and challenger from ROOT/scores, with each version's
    `score_failed` rows of ROOT/quarantine as its failures; `since_ms` keeps what was scored (or
    failed) from then on."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    require_challenger(plan)
    fs, root = table_filesystem(settings, tables)
    score_files = without(SCORE, ("model_name", "model_version"))
    frames = []
    for version in (plan.champion, plan.challenger):
        where = ds.field("scored_at_ms") >= since_ms if since_ms is not None else None
        rows = read_dataset(fs, f"{root}/scores/model_name={plan.model_name}/model_version={version}",
                             score_files, ["content_sha256", "score", "scored_at_ms"], where)
        frames.append(rows.assign(model_version=version))
    where = (ds.field("reason_code") == SCORE_FAILED) & pc.starts_with(
        ds.field("source_ref"), pattern=f"models:/{plan.model_name}/")
    if since_ms is not None:
        where = where & (ds.field("seen_at_ms") >= since_ms)
    failed = read_dataset(fs, f"{root}/quarantine", QUARANTINE_TABLE, ["source_ref"], where)
    return pairs_from_scores(pd.concat(frames, ignore_index=True), plan,
                             failures_by_version(failed["source_ref"], plan.model_name,
                                                 (plan.champion, plan.challenger)))


# -- the score topics ----------------------------------------------------------------------------

def stream_records(values: Iterable[bytes]) -> tuple[list[dict], list[str]]:
    """Topic values -> (score records, source_refs of score_failed records). A value that is not a
    JSON object is skipped: the comparison reads what the stream wrote, it does not judge it."""
    scores, failed = [], []
    for value in values:
        try:
            record = json.loads(value)
        except (TypeError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        if record.get("reason_code") == SCORE_FAILED and isinstance(record.get("source_ref"), str):
            failed.append(record["source_ref"])
        elif "score" in record and "content_sha256" in record:
            scores.append(record)
    return scores, failed


def pairs_from_stream(values: Iterable[bytes], plan: RolloutPlan, since_ms: int | None = None) -> Pairs:
    """Pairs (with latencies: scored_at_ms - uploaded_at_ms) from the records of the served and
    shadow score topics."""
    scores, failed = stream_records(values)
    columns = ["content_sha256", "model_name", "model_version", "score", "scored_at_ms", "uploaded_at_ms"]
    frame = pd.DataFrame([{c: r.get(c) for c in columns} for r in scores], columns=columns)
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    frame["uploaded_at_ms"] = pd.to_numeric(frame["uploaded_at_ms"], errors="coerce")
    if since_ms is not None:
        frame = frame[frame["scored_at_ms"] >= since_ms]
    return pairs_from_scores(frame, plan, failures_by_version(failed, plan.model_name,
                                                              (plan.champion, plan.challenger)), latency=True)


def read_stream_scores(settings, plan: RolloutPlan, since_ms: int | None = None) -> Pairs:
    """Pairs from `kafka.topics.scores` and `kafka.topics.scores_shadow`, read to their end."""
    from jobs.broker import fetch_wait_ms
    from jobs.topic_io import read_topic

    topics = settings.kafka.topics
    values = [value for topic in (topics.scores, topics.scores_shadow)
              for _, _, value in read_topic(settings.kafka.bootstrap, topic, fetch_wait_ms=fetch_wait_ms(settings))]
    return pairs_from_stream(values, plan, since_ms)


def run_compare(settings, name: str, *, tables: str | None = None, stream: bool = False,
                since_ms: int | None = None) -> tuple[RolloutPlan, Comparison]:
    """The registered model's plan and the comparison of its champion and challenger."""
    from models.rollouts import read_plan

    plan = read_plan(settings, name)
    require_challenger(plan)
    if stream:
        return plan, judge(read_stream_scores(settings, plan, since_ms), settings.rollout, check_latency=True)
    if not tables:
        raise PhotoscoreError("compare needs its evidence: --tables ROOT (the score table) or --stream")
    return plan, judge(read_table_scores(settings, plan, tables, since_ms), settings.rollout)


def report(plan: RolloutPlan, comparison: Comparison, source: str) -> dict:
    """The comparison as JSON-ready figures, with what was compared."""
    return {"model_name": plan.model_name, "champion": plan.champion, "challenger": plan.challenger,
            "source": source, **comparison.to_dict()}
