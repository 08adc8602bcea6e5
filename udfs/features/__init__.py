"""Photo features: bytes -> a named, ordered, finite float32 vector, or a quarantine record.

The same functions run in the local CLI, Spark executors and Flink workers, so a photo gets the
same feature vector (bit for bit) whichever engine computes it. Everything that decides a feature's
value is fixed by its feature version (one module per version, registered in FEATURE_SETS); change
any of it and the version changes. Several versions live side by side: a model records the version
it was trained on and is scored on features of that version.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from udfs.decode import DecodeLimits, PhotoRejected, decode_photo
from udfs.errors import PhotoscoreError
from udfs.features import v1, v2
from udfs.features.common import (
    FeatureSet,
    content_sha256,
    dhash64,
    dhash_distance,
    estimate_jpeg_quality,
)
from udfs.quarantine import QuarantineRecord, now_ms, quarantine_frame
from udfs.schemas import frame

__all__ = [
    "FEATURES", "FEATURE_NAMES", "FEATURE_SETS", "FEATURE_VERSION", "FEATURE_VERSIONS", "ExtractResult",
    "FeatureRow", "FeatureSet", "content_sha256", "dhash64", "dhash_distance", "estimate_jpeg_quality",
    "extract_batch", "extract_features", "feature_frame", "feature_set",
]

FEATURE_SETS: dict[int, FeatureSet] = {fs.version: fs for fs in (v1.FEATURE_SET, v2.FEATURE_SET)}
FEATURE_VERSIONS: tuple[int, ...] = tuple(sorted(FEATURE_SETS))
# The newest version: what new feature tables and models use unless told otherwise.
FEATURE_VERSION: int = FEATURE_VERSIONS[-1]
# The newest version's names and row layout (the features table, `photoscore features`).
FEATURE_NAMES: tuple[str, ...] = FEATURE_SETS[FEATURE_VERSION].names
FEATURES = FEATURE_SETS[FEATURE_VERSION].layout


def feature_set(version: int) -> FeatureSet:
    """The registered feature version `version`, or a PhotoscoreError naming the known ones."""
    try:
        return FEATURE_SETS[version]
    except (KeyError, TypeError):
        known = ", ".join(str(v) for v in FEATURE_VERSIONS)
        raise PhotoscoreError(
            f"unknown feature version {version!r}: this photoscore computes feature versions {known}"
        ) from None


@dataclass(frozen=True)
class FeatureRow:
    """One featured photo: identity, the ordered float32 feature vector and its feature version."""

    photo_id: str
    content_sha256: str
    format: str
    dhash: int
    values: np.ndarray  # float32, in the order of feature_set(feature_version).names
    feature_version: int


def extract_features(
    data: bytes,
    photo_id: str,
    source_ref: Optional[str] = None,
    limits: DecodeLimits = DecodeLimits(),
    version: int = FEATURE_VERSION,
) -> FeatureRow | QuarantineRecord:
    """Bytes -> FeatureRow of feature version `version`, or a QuarantineRecord with the stage and
    reason code. Never raises for a bad photo (an unknown version is a PhotoscoreError)."""
    features = feature_set(version)
    source_ref = source_ref if source_ref is not None else photo_id
    try:
        digest = content_sha256(data)
        decoded = decode_photo(data, features.working_side, limits)
        values, dhash = features.compute(decoded, len(data))
    except PhotoRejected as exc:
        return QuarantineRecord(source_ref, photo_id, exc.stage, exc.reason_code, exc.detail, now_ms())
    except MemoryError:
        return QuarantineRecord(source_ref, photo_id, "decode", "decompression_bomb",
                                "ran out of memory decoding", now_ms())
    except Exception as exc:  # noqa: BLE001 - one photo must never stop the batch
        return QuarantineRecord(source_ref, photo_id, "features", "not_an_image",
                                f"{type(exc).__name__}: {exc}", now_ms())
    vector = np.array([values[name] for name in features.names], dtype=np.float32)
    bad = [name for name, v in zip(features.names, vector) if not np.isfinite(v)]
    if bad:
        return QuarantineRecord(source_ref, photo_id, "features", "non_finite_feature",
                                f"non-finite: {', '.join(bad)}", now_ms())
    return FeatureRow(photo_id, digest, decoded.format, dhash, vector, features.version)


@dataclass(frozen=True)
class ExtractResult:
    """A batch's featured rows and quarantined inputs; len(features) + len(quarantine) == inputs."""

    features: pd.DataFrame
    quarantine: pd.DataFrame


def feature_frame(rows: Iterable[FeatureRow], version: int = FEATURE_VERSION) -> pd.DataFrame:
    """FeatureRows of feature version `version` as a DataFrame of that version's layout."""
    features = feature_set(version)
    rows = list(rows)
    stray = sorted({r.feature_version for r in rows} - {version})
    if stray:
        raise ValueError(f"feature_frame of version {version} got rows of feature version(s) {stray}")
    matrix = (np.vstack([r.values for r in rows]) if rows
              else np.empty((0, len(features.names)), dtype=np.float32))
    return frame(features.layout, {
        "photo_id": [r.photo_id for r in rows],
        "content_sha256": [r.content_sha256 for r in rows],
        "feature_version": np.full(len(rows), version),
        "format": [r.format for r in rows],
        "dhash": [r.dhash for r in rows],
        **dict(zip(features.names, matrix.T)),
    })


def extract_batch(
    photo_ids: Sequence[str],
    blobs: Sequence[bytes],
    source_refs: Optional[Sequence[str]] = None,
    limits: DecodeLimits = DecodeLimits(),
    version: int = FEATURE_VERSION,
) -> ExtractResult:
    """`extract_features` over a batch, as two frames: every input ends in exactly one of them."""
    if len(photo_ids) != len(blobs):
        raise ValueError(f"{len(photo_ids)} photo ids but {len(blobs)} blobs")
    feature_set(version)  # an unknown version fails before any photo is decoded
    refs = source_refs if source_refs is not None else photo_ids
    featured, quarantined = [], []
    for photo_id, data, ref in zip(photo_ids, blobs, refs):
        result = extract_features(data, photo_id, ref, limits, version)
        (featured if isinstance(result, FeatureRow) else quarantined).append(result)
    return ExtractResult(feature_frame(featured, version), quarantine_frame(quarantined))
