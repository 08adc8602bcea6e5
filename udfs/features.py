"""Photo features: bytes -> a named, ordered, finite float32 vector, or a quarantine record.

The same functions run in the local CLI, Spark executors and Flink workers, so a photo gets the
same feature vector (bit for bit) whichever engine computes it. Everything that decides a feature's
value is fixed by FEATURE_VERSION; change any of it and the version changes.
"""
from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import cv2
import numpy as np
import pandas as pd

from udfs.decode import DecodedPhoto, DecodeLimits, PhotoRejected, decode_photo
from udfs.photo_io import read_photo_bytes
from udfs.quarantine import QuarantineRecord, now_ms, quarantine_frame
from udfs.schemas import feature_schema, frame

FEATURE_VERSION = 1
# Longest side of the working image every pixel feature is computed on (v1).
WORKING_SIDE = 512
# Face detection runs on a smaller copy: the Haar cascade's cost grows with area, and faces that
# matter for photo quality are not tiny.
FACE_SIDE = 160

FEATURE_NAMES: tuple[str, ...] = (
    "width",
    "height",
    "megapixels",
    "file_bytes",
    "bytes_per_pixel",
    "format_code",
    "is_progressive",
    "mean_luma",
    "luma_std",
    "clipped_dark_frac",
    "clipped_bright_frac",
    "colourfulness",
    "mean_saturation",
    "sharpness",
    "edge_density",
    "text_likeness",
    "noise_sigma",
    "jpeg_quality",
    "face_count",
    "has_exif",
)
# The feature row of this version (the features table, `photoscore features`): udfs/schemas.py.
FEATURES = feature_schema(FEATURE_NAMES)

FORMAT_CODES = {"JPEG": 1, "PNG": 2, "GIF": 3, "WEBP": 4, "BMP": 5, "TIFF": 6, "MPO": 7}

# IJG (libjpeg) standard luminance quantization table, natural order; quality 50 == this table.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.float64)

_DARK_LEVEL = 5
_BRIGHT_LEVEL = 250
# Immerkaer's noise-estimation mask: Laplacian differences cancel smooth image structure.
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_thread_state = threading.local()
# Engines parallelise over photos (Spark tasks, Flink subtasks, worker processes); OpenCV's own
# thread pool on top of that would oversubscribe the cores.
cv2.setNumThreads(1)


def content_sha256(data: bytes) -> str:
    """Identity of a photo's content: sha256 hex of the whole byte string."""
    return hashlib.sha256(data).hexdigest()


def _face_detector() -> cv2.CascadeClassifier:
    # One classifier per thread: detectMultiScale keeps internal buffers.
    detector = getattr(_thread_state, "faces", None)
    if detector is None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        detector = cv2.CascadeClassifier(path)
        if detector.empty():
            raise RuntimeError(f"OpenCV Haar cascade missing at {path}; reinstall opencv-python-headless")
        _thread_state.faces = detector
    return detector


def estimate_jpeg_quality(quantization: dict | None) -> float:
    """IJG quality (1-100) that would produce the luminance table, or -1 when not a JPEG."""
    if not quantization or 0 not in quantization:
        return -1.0
    table = np.asarray(quantization[0], dtype=np.float64)
    if table.size != 64:
        return -1.0
    # Pillow gives tables in zigzag order; compare sums, which do not depend on the order.
    scale = 100.0 * table.sum() / _IJG_LUMA.sum()
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return float(min(100.0, max(1.0, quality)))


def dhash64(gray: np.ndarray) -> int:
    """64-bit difference hash of a grayscale image, as a signed int64 (Parquet has no uint64)."""
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = np.packbits(small[:, 1:] > small[:, :-1])
    return int(bits.view(">i8")[0])


def dhash_distance(a: int, b: int) -> int:
    """Hamming distance between two dHashes."""
    return bin((a ^ b) & ((1 << 64) - 1)).count("1")


_TEXT_EDGE_LEVEL = 128   # colour contrast of overlaid glyph edges; most natural edges are softer
_TEXT_WINDOW = 24        # px of a row (working size) in which glyph strokes are counted
_TEXT_MIN_STROKES = 3
_GRADIENT_KERNEL = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))


def _text_likeness(rgb: np.ndarray) -> float:
    """Fraction of pixels on hard colour edges that come in dense runs of strokes along a row.

    Rendered text has very high-contrast edges (often colour-only contrast, hence the per-channel
    maximum), and its glyphs put several separate strokes in any short stretch of a text line;
    natural hard edges are mostly isolated contours.
    """
    h, w = rgb.shape[:2]
    gradient = None
    for channel in cv2.split(rgb):
        g = cv2.morphologyEx(channel, cv2.MORPH_GRADIENT, _GRADIENT_KERNEL)
        gradient = g if gradient is None else cv2.max(gradient, g)
    hard = (gradient > _TEXT_EDGE_LEVEL).astype(np.uint8)
    run_starts = np.zeros_like(hard)
    run_starts[:, 1:] = hard[:, 1:] & (1 - hard[:, :-1])
    strokes = cv2.boxFilter(run_starts, cv2.CV_16U, (_TEXT_WINDOW, 1), normalize=False)
    text_edges = (strokes >= _TEXT_MIN_STROKES).astype(np.uint8) & hard
    return float(cv2.countNonZero(text_edges)) / float(h * w)


def compute_features(decoded: DecodedPhoto, file_bytes: int) -> tuple[dict[str, float], int]:
    """The ordered feature values (before the float32 cast) and the dHash of a decoded photo."""
    rgb = decoded.rgb
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    luma_mean, luma_std = (float(v[0, 0]) for v in cv2.meanStdDev(gray))
    pixels = decoded.width * decoded.height

    # Colour statistics do not need every pixel: a 2x-reduced copy halves their cost.
    colour = cv2.resize(rgb, (max(1, rgb.shape[1] // 2), max(1, rgb.shape[0] // 2)), interpolation=cv2.INTER_AREA)
    r, g, b = cv2.split(colour.astype(np.int16))
    rg_mean, rg_std = cv2.meanStdDev(r - g)
    # yb = (r + g) / 2 - b, kept in integers as 2 * yb and halved after the statistics.
    yb2_mean, yb2_std = cv2.meanStdDev(r + g - 2 * b)
    rg_mean, rg_std = float(rg_mean[0, 0]), float(rg_std[0, 0])
    yb_mean, yb_std = float(yb2_mean[0, 0]) / 2.0, float(yb2_std[0, 0]) / 2.0
    # Hasler & Suesstrunk colourfulness, scaled to roughly [0, 1].
    colourfulness = (math.hypot(rg_std, yb_std) + 0.3 * math.hypot(rg_mean, yb_mean)) / 255.0
    saturation = cv2.cvtColor(colour, cv2.COLOR_RGB2HSV)[:, :, 1]

    _, laplacian_std = cv2.meanStdDev(cv2.Laplacian(gray, cv2.CV_32F, ksize=1))
    edges = cv2.Canny(gray, 100, 200)
    noise = cv2.filter2D(gray, cv2.CV_32F, _NOISE_KERNEL, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
    noise_sigma = math.sqrt(math.pi / 2.0) * float(np.abs(noise).mean()) / 6.0 if noise.size else 0.0

    face_w, face_h = gray.shape[1], gray.shape[0]
    if max(face_w, face_h) > FACE_SIDE:
        scale = FACE_SIDE / max(face_w, face_h)
        face_gray = cv2.resize(gray, (max(1, round(face_w * scale)), max(1, round(face_h * scale))),
                               interpolation=cv2.INTER_AREA)
    else:
        face_gray = gray
    faces = _face_detector().detectMultiScale(face_gray, scaleFactor=1.2, minNeighbors=4, minSize=(20, 20))

    values = {
        "width": float(decoded.width),
        "height": float(decoded.height),
        "megapixels": pixels / 1e6,
        "file_bytes": float(file_bytes),
        "bytes_per_pixel": file_bytes / float(pixels),
        "format_code": float(FORMAT_CODES.get(decoded.format, 0)),
        "is_progressive": float(decoded.is_progressive),
        "mean_luma": luma_mean / 255.0,
        "luma_std": luma_std / 255.0,
        "clipped_dark_frac": float(np.count_nonzero(gray <= _DARK_LEVEL)) / gray.size,
        "clipped_bright_frac": float(np.count_nonzero(gray >= _BRIGHT_LEVEL)) / gray.size,
        "colourfulness": colourfulness,
        "mean_saturation": float(saturation.mean()) / 255.0,
        "sharpness": float(laplacian_std[0, 0]) ** 2,
        "edge_density": float(cv2.countNonZero(edges)) / edges.size,
        "text_likeness": _text_likeness(rgb),
        "noise_sigma": noise_sigma,
        "jpeg_quality": estimate_jpeg_quality(decoded.quantization),
        "face_count": float(len(faces)),
        "has_exif": float(decoded.has_exif),
    }
    return values, dhash64(gray)


@dataclass(frozen=True)
class FeatureRow:
    """One featured photo: identity, version, and the ordered float32 feature vector."""

    photo_id: str
    content_sha256: str
    format: str
    dhash: int
    values: np.ndarray  # float32, FEATURE_NAMES order


def extract_features(
    data: bytes,
    photo_id: str,
    source_ref: Optional[str] = None,
    limits: DecodeLimits = DecodeLimits(),
) -> FeatureRow | QuarantineRecord:
    """Bytes -> FeatureRow, or a QuarantineRecord with the stage and reason code. Never raises."""
    source_ref = source_ref if source_ref is not None else photo_id
    try:
        digest = content_sha256(data)
        decoded = decode_photo(data, WORKING_SIDE, limits)
        values, dhash = compute_features(decoded, len(data))
    except PhotoRejected as exc:
        return QuarantineRecord(source_ref, photo_id, exc.stage, exc.reason_code, exc.detail, now_ms())
    except MemoryError:
        return QuarantineRecord(source_ref, photo_id, "decode", "decompression_bomb",
                                "ran out of memory decoding", now_ms())
    except Exception as exc:  # noqa: BLE001 - one photo must never stop the batch
        return QuarantineRecord(source_ref, photo_id, "features", "not_an_image",
                                f"{type(exc).__name__}: {exc}", now_ms())
    vector = np.array([values[name] for name in FEATURE_NAMES], dtype=np.float32)
    bad = [name for name, v in zip(FEATURE_NAMES, vector) if not np.isfinite(v)]
    if bad:
        return QuarantineRecord(source_ref, photo_id, "features", "non_finite_feature",
                                f"non-finite: {', '.join(bad)}", now_ms())
    return FeatureRow(photo_id, digest, decoded.format, dhash, vector)


def extract_features_from_uri(
    uri: str, photo_id: Optional[str] = None, limits: DecodeLimits = DecodeLimits()
) -> FeatureRow | QuarantineRecord:
    """Read the photo at `uri` and extract its features; read failures are quarantined too."""
    photo_id = uri if photo_id is None else photo_id
    try:
        data = read_photo_bytes(uri, limits.max_file_bytes)
    except PhotoRejected as exc:
        return QuarantineRecord(uri, photo_id, exc.stage, exc.reason_code, exc.detail, now_ms())
    return extract_features(data, photo_id, uri, limits)


@dataclass(frozen=True)
class ExtractResult:
    """A batch's featured rows and quarantined inputs; len(features) + len(quarantine) == inputs."""

    features: pd.DataFrame
    quarantine: pd.DataFrame


def feature_frame(rows: Iterable[FeatureRow]) -> pd.DataFrame:
    """FeatureRows as a DataFrame of the FEATURES layout (columns and dtypes)."""
    rows = list(rows)
    matrix = (np.vstack([r.values for r in rows]) if rows
              else np.empty((0, len(FEATURE_NAMES)), dtype=np.float32))
    return frame(FEATURES, {
        "photo_id": [r.photo_id for r in rows],
        "content_sha256": [r.content_sha256 for r in rows],
        "feature_version": np.full(len(rows), FEATURE_VERSION),
        "format": [r.format for r in rows],
        "dhash": [r.dhash for r in rows],
        **dict(zip(FEATURE_NAMES, matrix.T)),
    })


def extract_batch(
    photo_ids: Sequence[str],
    blobs: Sequence[bytes],
    source_refs: Optional[Sequence[str]] = None,
    limits: DecodeLimits = DecodeLimits(),
) -> ExtractResult:
    """`extract_features` over a batch, as two frames: every input ends in exactly one of them."""
    if len(photo_ids) != len(blobs):
        raise ValueError(f"{len(photo_ids)} photo ids but {len(blobs)} blobs")
    refs = source_refs if source_refs is not None else photo_ids
    featured, quarantined = [], []
    for photo_id, data, ref in zip(photo_ids, blobs, refs):
        result = extract_features(data, photo_id, ref, limits)
        (featured if isinstance(result, FeatureRow) else quarantined).append(result)
    return ExtractResult(feature_frame(featured), quarantine_frame(quarantined))
