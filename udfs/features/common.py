"""What every feature version shares: the FeatureSet contract, identity hashes, the JPEG quality
estimate, the face detector and the overlaid-text measure.

A helper here is part of every version that calls it: change what it computes and every such
version changes, so a changed measure goes into a new function the new version calls instead.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import pyarrow as pa

from udfs.decode import DecodedPhoto

FORMAT_CODES = {"JPEG": 1, "PNG": 2, "GIF": 3, "WEBP": 4, "BMP": 5, "TIFF": 6, "MPO": 7}

# IJG (libjpeg) standard luminance quantization table, natural order; quality 50 == this table.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.float64)

_thread_state = threading.local()
# Engines parallelise over photos (Spark tasks, Flink subtasks, worker processes); OpenCV's own
# thread pool on top of that would oversubscribe the cores.
cv2.setNumThreads(1)

Compute = Callable[[DecodedPhoto, int], "tuple[dict[str, float], int]"]


@dataclass(frozen=True)
class FeatureSet:
    """One feature version: its ordered names, row layout, decode working size and computation.

    `compute(decoded, file_bytes)` returns the values by name (before the float32 cast) and the
    photo's dHash; `decoded` is the photo decoded near `working_side` (udfs.decode.decode_photo).
    """

    version: int
    names: tuple[str, ...]
    layout: pa.Schema
    working_side: int
    compute: Compute


def header_facts(decoded: DecodedPhoto, file_bytes: int) -> dict[str, float]:
    """What the file and its header say, the same in every version: size, bytes, format, JPEG
    quality, progressive, EXIF."""
    pixels = decoded.width * decoded.height
    return {
        "width": float(decoded.width),
        "height": float(decoded.height),
        "megapixels": pixels / 1e6,
        "file_bytes": float(file_bytes),
        "bytes_per_pixel": file_bytes / float(pixels),
        "format_code": float(FORMAT_CODES.get(decoded.format, 0)),
        "is_progressive": float(decoded.is_progressive),
        "jpeg_quality": estimate_jpeg_quality(decoded.quantization),
        "has_exif": float(decoded.has_exif),
    }


def content_sha256(data: bytes) -> str:
    """Identity of a photo's content: sha256 hex of the whole byte string."""
    return hashlib.sha256(data).hexdigest()


def dhash64(gray: np.ndarray) -> int:
    """64-bit difference hash of a grayscale image, as a signed int64 (Parquet has no uint64)."""
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = np.packbits(small[:, 1:] > small[:, :-1])
    return int(bits.view(">i8")[0])


def dhash_distance(a: int, b: int) -> int:
    """Hamming distance between two dHashes."""
    return bin((a ^ b) & ((1 << 64) - 1)).count("1")


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


def haar_faces() -> cv2.CascadeClassifier:
    """This thread's frontal-face Haar cascade (OpenCV's own model file)."""
    # One classifier per thread: detectMultiScale keeps internal buffers.
    detector = getattr(_thread_state, "faces", None)
    if detector is None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        detector = cv2.CascadeClassifier(path)
        if detector.empty():
            raise RuntimeError(f"OpenCV Haar cascade missing at {path}; reinstall opencv-python-headless")
        _thread_state.faces = detector
    return detector


_TEXT_EDGE_LEVEL = 128   # colour contrast of overlaid glyph edges; most natural edges are softer
_TEXT_WINDOW = 24        # px of a row (working size) in which glyph strokes are counted
_TEXT_MIN_STROKES = 3
_GRADIENT_KERNEL = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))


def text_likeness(rgb: np.ndarray) -> float:
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
