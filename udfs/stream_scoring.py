"""The stream's work as pure functions the Flink operators call (and tests and the bench call
directly): upload -> bytes -> features -> score, with a per-content cache entry and a model holder
that swaps versions atomically.

Nothing here knows about Flink: `jobs/stream_score.py` only wires these into operators, so the
in-process loop of `bench/stream.py` and the job run the same code, and the features and scores
are those of the batch path (`udfs.features.extract_features`, `udfs.scoring.score_frame`).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from udfs.decode import DecodeLimits, PhotoRejected
from udfs.errors import PhotoscoreError
from udfs.features import FeatureRow, content_sha256, extract_features, feature_set
from udfs.messages import Upload, encode_dlq, encode_score, parse_upload
from udfs.photo_io import PhotoReader, photo_reader
from udfs.quarantine import QuarantineRecord, now_ms

log = logging.getLogger(__name__)

SCORES, DLQ = "scores", "dlq"


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


# ---------------------------------------------------------------- models

@dataclass(frozen=True)
class LoadedModel:
    """One loaded export of one model version; immutable, so swapping the reference is atomic."""

    name: str
    version: int
    export_format: str
    scorer: object
    schema: object  # udfs.bundle.FeatureSchema
    columns: tuple = ()  # positions of schema.names in its feature version's names

    @property
    def feature_version(self) -> int:
        """The feature version the model was trained on: the one the stream computes for it."""
        return self.schema.feature_version

    @property
    def identity(self) -> tuple[str, int, str]:
        return (self.name, self.version, self.export_format)


def load_model(name: str, version: int, bundle_dir: Path, export_format: str, threads: int = 1) -> LoadedModel:
    """Load (checksums verified) one export of a resolved bundle, with the positions of its
    features in the rows of the feature version it was trained on (which this photoscore must
    compute: a PhotoscoreError otherwise)."""
    from udfs.bundle import read_feature_schema
    from udfs.formats import load_scorer

    scorer = load_scorer(bundle_dir, export_format, threads=threads)
    schema = read_feature_schema(bundle_dir)
    names = feature_set(schema.feature_version).names
    unknown = [n for n in schema.names if n not in names]
    if unknown:
        raise PhotoscoreError(f"{bundle_dir}: the model needs features {unknown} that "
                              f"feature version {schema.feature_version} does not compute")
    return LoadedModel(name, int(version), scorer.format, scorer, schema,  # the id, not an old alias
                       tuple(names.index(n) for n in schema.names))


class ModelHolder:
    """The current champion, re-resolved every `poll_interval_s` in a background thread.

    `probe()` is a cheap "which version does the alias point at now" call; only when it answers
    a different version is `resolve(version)` (download + checksum verification) and the load
    done, off the scoring thread. The swap is one reference assignment, so a batch scored with
    `current()` is scored by exactly one version, and the next batch by the new one.
    """

    def __init__(self, probe: Callable[[], int], resolve: Callable[[int], tuple[str, int, Path]],
                 export_format: str, poll_interval_s: float = 5.0, threads: int = 1):
        self._probe, self._resolve = probe, resolve
        self.export_format = export_format
        self.threads = threads
        self.poll_interval_s = float(poll_interval_s)
        self._model: Optional[LoadedModel] = None
        self._last_poll = 0.0
        self._polling = threading.Lock()
        self.last_error: Optional[str] = None
        self.swaps = 0

    def current(self) -> Optional[LoadedModel]:
        """The model to score the next batch with (None until one could be loaded)."""
        return self._model

    def refresh(self) -> Optional[LoadedModel]:
        """Probe the alias now and swap when it moved; errors keep the current model (and are kept
        in `last_error`), so a registry outage never stops scoring."""
        if not self._polling.acquire(blocking=False):
            return self._model  # another poll is running
        try:
            self._last_poll = time.monotonic()
            version = int(self._probe())
            if self._model is None or version != self._model.version:
                name, resolved, bundle_dir = self._resolve(version)
                model = load_model(name, resolved, bundle_dir, self.export_format, self.threads)
                previous, self._model = self._model, model
                self.swaps += previous is not None
                log.info("model %s version %s (%s) now scores (was %s)", name, resolved,
                         self.export_format, previous.version if previous else None)
            self.last_error = None
        except Exception as exc:  # noqa: BLE001 - keep scoring with what we have
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("model poll failed (keeping version %s): %s",
                        self._model.version if self._model else None, self.last_error)
        finally:
            self._polling.release()
        return self._model

    def maybe_refresh(self) -> None:
        """Start a background poll when the interval has elapsed (never blocks scoring)."""
        if time.monotonic() - self._last_poll >= self.poll_interval_s and not self._polling.locked():
            self._last_poll = time.monotonic()
            threading.Thread(target=self.refresh, name="model-poll", daemon=True).start()


def registry_holder(settings) -> ModelHolder:
    """A ModelHolder on the configured MLflow alias (`mlflow.model_name`@`mlflow.alias`), scoring with
    `scoring.format` and polling the alias every `flink.model_poll_interval_ms`.

    The probe is one registry call (`get_model_version_by_alias`); resolution goes through
    `models.registry.resolve_bundle` by version number, which downloads once and verifies checksums.
    Both need only mlflow-skinny and a tracking URI the process can reach (an HTTP server for a
    Flink worker; see docs/streaming.md).
    """
    from models.registry import client, resolve_bundle

    name, alias = settings.mlflow.model_name, settings.mlflow.alias

    def probe() -> int:
        return int(client(settings).get_model_version_by_alias(name, alias).version)

    def resolve(version: int):
        return resolve_bundle(f"models:/{name}/{version}", settings)

    return ModelHolder(probe, resolve, settings.scoring.format, settings.flink.model_poll_interval_ms / 1000.0,
                       settings.scoring.threads)


# ---------------------------------------------------------------- features + score with a cache

@dataclass(frozen=True)
class CacheEntry:
    """What the keyed state remembers per content: its features and the last score made from them."""

    content_sha256: str
    feature_version: int
    values: tuple           # float32 feature values as Python floats (state is pickled)
    fmt: str
    dhash: int
    model: Optional[tuple]  # (name, version, export_format) of `score`
    score: Optional[float]

    def row(self, photo_id: str) -> FeatureRow:
        return FeatureRow(photo_id, self.content_sha256, self.fmt, self.dhash,
                          np.asarray(self.values, dtype=np.float32), self.feature_version)


# What the cache holds per content: its entry of each feature version computed (a model of one
# version never scores another's features, and an alias that moves between models of two versions
# finds both cached). The stream's keyed state value: the cache is keyed by (content, version).
ContentCache = dict[int, CacheEntry]


@dataclass
class Outcome:
    """One prepared photo's result: records to emit as (kind, JSON) and the content's new cache
    value (None: leave it as it was)."""

    records: list
    cache: Optional[ContentCache]
    decoded: bool


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


def process_photo(photo: PreparedPhoto, model: Optional[LoadedModel], cached: Optional[ContentCache],
                  limits: DecodeLimits) -> Outcome:
    """Features of the model's feature version (decoded, or from the content's cache) and a score
    (from the cache when this content was already scored by this very model version and format:
    `from_cache=True`)."""
    if model is None:
        rec = QuarantineRecord(photo.ref, photo.photo_id, "score", "unknown_model",
                               "no model version could be loaded yet (see the job log)", now_ms())
        return Outcome([(DLQ, encode_dlq(rec, photo.uploaded_at_ms))], None, False)
    version = model.feature_version
    entries = cached or {}
    cached = entries.get(version)
    if cached is not None:
        if cached.model == model.identity and cached.score is not None:
            row = score_row(model, photo.photo_id, photo.content_sha256, cached.score, cached.feature_version,
                            now_ms(), True)
            return Outcome([(SCORES, encode_score(row, photo.uploaded_at_ms, photo.ref))], entries, False)
        feature_row, decoded = cached.row(photo.photo_id), False
    else:
        result = extract_features(photo.data, photo.photo_id, photo.ref, limits, version)
        if isinstance(result, QuarantineRecord):
            return Outcome([(DLQ, encode_dlq(result, photo.uploaded_at_ms))], None, True)
        feature_row, decoded = result, True
    scored = score_features(model, feature_row, photo.ref)
    entry = CacheEntry(photo.content_sha256, version, tuple(float(v) for v in feature_row.values),
                       feature_row.format, int(feature_row.dhash), None, None)
    if isinstance(scored, QuarantineRecord):
        return Outcome([(DLQ, encode_dlq(scored, photo.uploaded_at_ms))], {**entries, version: entry}, decoded)
    entry = CacheEntry(entry.content_sha256, entry.feature_version, entry.values, entry.fmt, entry.dhash,
                       model.identity, scored["score"])
    return Outcome([(SCORES, encode_score(scored, photo.uploaded_at_ms, photo.ref))], {**entries, version: entry},
                   decoded)


def process_keyed(photo: PreparedPhoto, key: str, model: Optional[LoadedModel], cached: Optional[ContentCache],
                  limits: DecodeLimits) -> Outcome:
    """`process_photo` for a photo routed by `key`, the content_sha256 its message claimed (or that
    an earlier read hashed). The keyed state of `key` is used and replaced only when the bytes read
    now hash to `key`: a wrong claim, or a file rewritten since it was hashed, is scored from its
    own bytes and cached nowhere (`Outcome.cache` None), so it can never poison another content."""
    if photo.content_sha256 == key:
        return process_photo(photo, model, cached, limits)
    outcome = process_photo(photo, model, None, limits)
    return Outcome(outcome.records, None, outcome.decoded)


def process_message(raw: bytes | str | None, ref: str, model: Optional[LoadedModel],
                    cache: dict, limits: DecodeLimits, intake: Intake) -> Outcome:
    """The whole stream path for one message with a plain dict (content_sha256 -> ContentCache) as
    the cache: what the Flink job does across two operators, in one call (the bench's in-process
    limit, tests)."""
    prepared, uploaded = prepare(raw, ref, limits, intake)
    if isinstance(prepared, QuarantineRecord):
        return Outcome([(DLQ, encode_dlq(prepared, uploaded))], None, False)
    outcome = process_photo(prepared, model, cache.get(prepared.content_sha256), limits)
    if outcome.cache is not None:
        cache[prepared.content_sha256] = outcome.cache
    return outcome
