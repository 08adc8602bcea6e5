"""The stream's work as pure functions the Flink operators call (and tests and the bench call
directly): upload -> bytes -> features (once per feature version) -> a score by every model, each
by its rollout plan (served, shadow), with a per-content cache. The models and their holders are
in udfs/stream_models.py, the canary guardrail in udfs/guardrail.py.

Nothing here knows about Flink: `jobs/stream_score.py` only wires these into operators, so the
in-process loop of `bench/stream.py` and the job run the same code, and the features and scores
are those of the batch path (`udfs.features.extract_features`, `udfs.scoring.score_frame`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from udfs.decode import DecodeLimits, PhotoRejected
from udfs.errors import PhotoscoreError
from udfs.features import FeatureRow, content_sha256, extract_features
from udfs.guardrail import Pair
from udfs.messages import Upload, encode_dlq, encode_score, parse_upload
from udfs.photo_io import PhotoReader, photo_reader
from udfs.quarantine import QuarantineRecord, now_ms
from udfs.rollout import assignments
from udfs.stream_models import LoadedModel, ServingSet

# Output kinds: served scores (kafka.topics.scores), a rollout's shadow scores and shadow failures
# (kafka.topics.scores_shadow), dead letters (kafka.topics.dlq).
SCORES, SHADOW, DLQ = "scores", "shadow", "dlq"


# ---------------------------------------------------------------- parse + read

@dataclass(frozen=True)
class PreparedPhoto:
    """An upload whose bytes were read and hashed: what the keyed scoring step receives."""

    ref: str                 # source topic/partition/offset
    photo_id: str
    uploaded_at_ms: int
    content_sha256: str      # of the bytes actually read (the message's claim is not trusted)
    data: bytes


@dataclass(frozen=True)
class Intake:
    """All an upload message can make the job read (README "Trust model"): a message of at most
    `max_message_bytes`, parsed, and a photo read by `reader`, from under the photo roots only."""

    reader: PhotoReader
    max_message_bytes: int


def upload_intake(settings) -> Intake:
    """The stream's Intake from config: `storage.photo_roots`, `kafka.max_message_bytes`. Messages
    never widen the roots."""
    return Intake(photo_reader(settings), settings.kafka.max_message_bytes)


def read_upload(upload: Upload, ref: str, limits: DecodeLimits, reader: PhotoReader) -> bytes | QuarantineRecord:
    """The photo bytes of an upload (inline first, else its URI), or a `read` QuarantineRecord.
    A TransientReadError (the store unreachable after the retries) propagates: the photo is not bad."""
    if upload.inline_b64 is not None:
        size = upload.inline_size()  # before decoding: the encoded length gives the decoded one
        if size > limits.max_file_bytes:
            return QuarantineRecord(ref, upload.photo_id, "read", "file_too_large",
                                    f"inline photo of {size} bytes > limit {limits.max_file_bytes}", now_ms())
        return upload.inline_bytes()
    try:
        return reader.read(upload.uri, limits.max_file_bytes)
    except PhotoRejected as exc:
        return QuarantineRecord(ref, upload.photo_id, exc.stage, exc.reason_code, exc.detail[:500], now_ms())


def prepare(raw: bytes | str | None, ref: str, limits: DecodeLimits,
            intake: Intake) -> tuple[PreparedPhoto | QuarantineRecord, Optional[int]]:
    """Parse, validate and read one upload message: (PreparedPhoto or QuarantineRecord, uploaded_at_ms)."""
    upload = parse_upload(raw, ref, intake.max_message_bytes)
    if isinstance(upload, QuarantineRecord):
        return upload, None
    data = read_upload(upload, ref, limits, intake.reader)
    if isinstance(data, QuarantineRecord):
        return data, upload.uploaded_at_ms
    return PreparedPhoto(ref, upload.photo_id, upload.uploaded_at_ms, content_sha256(data), data), upload.uploaded_at_ms


# ---------------------------------------------------------------- features + score with a cache


@dataclass(frozen=True)
class Features:
    """A content's feature vector of one feature version, as the keyed state keeps it."""

    content_sha256: str
    feature_version: int
    values: tuple           # float32 feature values as Python floats (state is pickled)
    fmt: str
    dhash: int

    def row(self, photo_id: str) -> FeatureRow:
        return FeatureRow(photo_id, self.content_sha256, self.fmt, self.dhash,
                          np.asarray(self.values, dtype=np.float32), self.feature_version)


@dataclass(frozen=True)
class ContentCache:
    """What the keyed state remembers per content: its features per feature version computed (a
    model of one version never scores another's features; a plan that moves between models of two
    versions finds both) and each model identity's score (several models, and a rollout's champion
    and challenger, score one content)."""

    features: dict = field(default_factory=dict)   # feature version -> Features
    scores: dict = field(default_factory=dict)     # (name, version, export_format) -> score


@dataclass
class Outcome:
    """One prepared photo's result: records to emit as (kind, JSON), the content's new cache value
    (None: leave it as it was), the feature versions decoded for it, the champion/challenger
    pairs it gave the canary guardrails, and for the stream's metrics (udfs.stream_metrics) the
    score rows emitted (served and shadow, as dicts) and its features per feature version."""

    records: list
    cache: Optional[ContentCache]
    decoded: tuple = ()
    pairs: list = field(default_factory=list)
    scored: list = field(default_factory=list)
    features: dict = field(default_factory=dict)


def score_row(model: LoadedModel, photo_id: str, content_sha256: str, score: float, feature_version: int,
              scored_at_ms: int, from_cache: bool, role: str = "served") -> dict:
    """A stream score row (udfs.schemas.SCORE) by `model`."""
    return {"photo_id": photo_id, "content_sha256": content_sha256, "model_name": model.name,
            "model_version": model.version, "export_format": model.export_format, "role": role, "score": score,
            "feature_version": feature_version, "scored_at_ms": scored_at_ms, "source": "stream",
            "from_cache": from_cache}


def score_features(model: LoadedModel, row: FeatureRow, ref: str) -> dict | QuarantineRecord:
    """Score one photo's features: a score row (`score_row`), or the QuarantineRecord saying why not.

    The batch path's rules for one row without building DataFrames (a per-photo pandas round trip
    cost the stream as much as half of the feature extraction): the model's columns in its own
    order as float32, non-finite features refused, the scorer called through the same
    failure-isolating function as `udfs.scoring.score_frame`, so the score is bit-identical.
    """
    from udfs.scoring import score_isolating_failures

    if row.feature_version != model.feature_version:
        raise PhotoscoreError(f"model {model.name}/{model.version} was trained on feature version "
                              f"{model.feature_version} and cannot score features of version {row.feature_version}")
    seen = now_ms()
    x = np.asarray(row.values, dtype=np.float32)[list(model.columns)][None, :]
    if not np.isfinite(x).all():
        bad = [n for n, v in zip(model.schema.names, x[0]) if not np.isfinite(v)]
        return QuarantineRecord(ref, row.photo_id, "features", "non_finite_feature",
                                f"non-finite: {', '.join(bad)}", seen)
    scores, errors = score_isolating_failures(model.scorer, x)
    if errors[0] is not None:
        return QuarantineRecord(ref, row.photo_id, "score", "score_failed", errors[0][:500], seen)
    return score_row(model, row.photo_id, row.content_sha256, float(scores[0]), row.feature_version, seen, False)


class _FeatureSource:
    """A photo's features per feature version, decoded at most once each (from the cache when it
    holds them); a decode failure is dead-lettered once, however many models needed that version."""

    def __init__(self, photo: PreparedPhoto, cached: dict, limits: DecodeLimits, records: list):
        self.photo, self.limits, self.records = photo, limits, records
        self.features = dict(cached)
        self.decoded: list[int] = []
        self.failed: set[int] = set()

    def row(self, version: int) -> Optional[FeatureRow]:
        """The features of `version`, or None when the photo cannot be featured (dead-lettered)."""
        if version in self.failed:
            return None
        if version in self.features:
            return self.features[version].row(self.photo.photo_id)
        result = extract_features(self.photo.data, self.photo.photo_id, self.photo.ref, self.limits, version)
        self.decoded.append(version)
        if isinstance(result, QuarantineRecord):
            self.failed.add(version)
            self.records.append((DLQ, encode_dlq(result, self.photo.uploaded_at_ms)))
            return None
        self.features[version] = Features(self.photo.content_sha256, version, tuple(float(v) for v in result.values),
                                          result.format, int(result.dhash))
        return result


@dataclass(frozen=True)
class _Scored:
    model: LoadedModel
    row: Optional[dict]                  # None: failed
    failure: Optional[QuarantineRecord]
    latency_ms: float
    fresh: bool                          # scored now (not a cached score)


def _score_one(model: LoadedModel, photo: PreparedPhoto, source: _FeatureSource, scores: dict) -> Optional[_Scored]:
    """`model`'s score of the photo: cached for its identity, else scored now (and cached); None
    when the photo's features cannot be computed (already dead-lettered)."""
    cached = scores.get(model.identity)
    if cached is not None:
        row = score_row(model, photo.photo_id, photo.content_sha256, cached, model.feature_version, now_ms(), True)
        return _Scored(model, row, None, 0.0, False)
    features = source.row(model.feature_version)
    if features is None:
        return None
    started = time.perf_counter()
    try:
        scored = score_features(model, features, photo.ref)
    except Exception as exc:  # noqa: BLE001 - one model's failure never costs the others' scores
        scored = QuarantineRecord(photo.ref, photo.photo_id, "score", "score_failed",
                                  f"{type(exc).__name__}: {exc}"[:500], now_ms())
    latency_ms = (time.perf_counter() - started) * 1000.0
    if isinstance(scored, QuarantineRecord):
        return _Scored(model, None, scored, latency_ms, True)
    scores[model.identity] = scored["score"]
    return _Scored(model, scored, None, latency_ms, True)


def shadow_failure(model: LoadedModel, photo: PreparedPhoto, failure: QuarantineRecord) -> QuarantineRecord:
    """The shadow topic's record of a score that failed where it was not served (a canary's
    challenger served by the champion instead, a shadow arm): the quarantine layout, its source_ref
    `models:/NAME/V#<upload ref>` naming the version that failed (`photoscore compare --stream`
    counts these as that arm's failures)."""
    return QuarantineRecord(f"models:/{model.name}/{model.version}#{photo.ref}", photo.photo_id, "score",
                            "score_failed", f"{failure.reason_code}: {failure.detail}"[:500], failure.seen_at_ms)


def _score_model(photo: PreparedPhoto, serving: Optional[ServingSet], source: _FeatureSource, scores: dict,
                 out: Outcome) -> None:
    """One model's assignments for the photo (udfs.rollout.assignments): the served score (or its
    DLQ record), shadow scores and failures, and the champion/challenger pair."""
    if serving is None or serving.plan.champion not in serving.models:
        what = f"model {serving.plan.model_name} has no champion" if serving else "no model version could be loaded yet"
        rec = QuarantineRecord(photo.ref, photo.photo_id, "score", "unknown_model", f"{what} (see the job log)",
                               now_ms())
        out.records.append((DLQ, encode_dlq(rec, photo.uploaded_at_ms)))
        return
    plan = serving.plan
    assigned = assignments(photo.content_sha256, plan)
    results = {}
    for a in assigned:
        result = _score_one(serving.models[a.version], photo, source, scores)
        if result is None:
            return  # the photo cannot be featured: dead-lettered by the source, once
        results[a.version] = result
    served = next(a for a in assigned if a.role == "served")
    champion = results[plan.champion]
    # A canary content whose challenger failed is served by the champion: the user still gets a score.
    fallback = results[served.version].row is None and served.version != plan.champion and champion.row is not None
    for a in assigned:
        result = results[a.version]
        role = ("served" if a.version == plan.champion else "shadow") if fallback else a.role
        if result.row is not None:
            kind = SCORES if role == "served" else SHADOW
            row = {**result.row, "role": role}
            out.scored.append(row)
            out.records.append((kind, encode_score(row, photo.uploaded_at_ms, photo.ref)))
        elif role == "served":
            out.records.append((DLQ, encode_dlq(result.failure, photo.uploaded_at_ms)))
        else:
            out.records.append((SHADOW, encode_dlq(shadow_failure(result.model, photo, result.failure),
                                                   photo.uploaded_at_ms)))
    if len(assigned) == 2 and champion.row is not None:
        challenger = results[plan.challenger]
        if challenger.fresh:  # a cached pair was judged when it was made
            out.pairs.append(Pair(plan.model_name, plan, champion.row["score"],
                                  None if challenger.row is None else challenger.row["score"], challenger.latency_ms))


def process_photo(photo: PreparedPhoto, servings: Sequence[Optional[ServingSet]], cached: Optional[ContentCache],
                  limits: DecodeLimits) -> Outcome:
    """Score one photo with every model (`servings`: one ServingSet per registered model, None for
    one not loaded yet), each by its rollout plan, from features computed once per feature version.

    Per model exactly one of: a served score (`scores`) or a DLQ record; plus shadow scores and
    shadow failures (`shadow`). A score already cached for a model identity is reused
    (`from_cache=True`)."""
    cached = cached or ContentCache()
    out = Outcome([], None)
    source = _FeatureSource(photo, cached.features, limits, out.records)
    scores = dict(cached.scores)
    for serving in servings:
        _score_model(photo, serving, source, scores, out)
    out.decoded = tuple(source.decoded)
    out.features = source.features
    if source.features or scores:
        out.cache = ContentCache(source.features, scores)
    return out


def process_keyed(photo: PreparedPhoto, key: str, servings: Sequence[Optional[ServingSet]],
                  cached: Optional[ContentCache], limits: DecodeLimits) -> Outcome:
    """`process_photo` for a photo routed by `key`, the content_sha256 its message claimed (or that
    an earlier read hashed). The keyed state of `key` is used and replaced only when the bytes read
    now hash to `key`: a wrong claim, or a file rewritten since it was hashed, is scored from its
    own bytes and cached nowhere (`Outcome.cache` None), so it can never poison another content."""
    if photo.content_sha256 == key:
        return process_photo(photo, servings, cached, limits)
    outcome = process_photo(photo, servings, None, limits)
    outcome.cache = None
    return outcome


def as_servings(models: LoadedModel | ServingSet | Sequence[Optional[ServingSet]] | None) -> list:
    """What `process_message` scores with: a LoadedModel alone (as a champion without a rollout), one
    ServingSet, or one per registered model; None: nothing loaded yet."""
    if models is None or isinstance(models, ServingSet):
        return [models]
    if isinstance(models, LoadedModel):
        return [ServingSet.alone(models)]
    return list(models)


def process_message(raw: bytes | str | None, ref: str, models, cache: dict, limits: DecodeLimits,
                    intake: Intake) -> Outcome:
    """The whole stream path for one message with a plain dict (content_sha256 -> ContentCache) as
    the cache: what the Flink job does across two operators, in one call (the bench's in-process
    limit, tests). `models`: see `as_servings`."""
    prepared, uploaded = prepare(raw, ref, limits, intake)
    if isinstance(prepared, QuarantineRecord):
        return Outcome([(DLQ, encode_dlq(prepared, uploaded))], None)
    outcome = process_photo(prepared, as_servings(models), cache.get(prepared.content_sha256), limits)
    if outcome.cache is not None:
        cache[prepared.content_sha256] = outcome.cache
    return outcome
