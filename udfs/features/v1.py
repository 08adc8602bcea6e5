"""Feature version 1: global statistics of the photo at a 512 px working size.

Frozen: these functions give the same floats, bit for bit, as when version 1 shipped (models trained
on v1 features keep scoring them). Improvements go into a new version.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from udfs.decode import DecodedPhoto
from udfs.features.common import FeatureSet, dhash64, haar_faces, header_facts, text_likeness
from udfs.schemas import feature_schema

VERSION = 1
# Longest side of the working image every pixel feature is computed on.
WORKING_SIDE = 512
# Face detection runs on a smaller copy: the Haar cascade's cost grows with area, and faces that
# matter for photo quality are not tiny.
FACE_SIDE = 160

NAMES: tuple[str, ...] = (
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

_DARK_LEVEL = 5
_BRIGHT_LEVEL = 250
# Immerkaer's noise-estimation mask: Laplacian differences cancel smooth image structure.
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def compute(decoded: DecodedPhoto, file_bytes: int) -> tuple[dict[str, float], int]:
    """The ordered v1 feature values (before the float32 cast) and the dHash of a decoded photo."""
    rgb = decoded.rgb
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    luma_mean, luma_std = (float(v[0, 0]) for v in cv2.meanStdDev(gray))

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
    faces = haar_faces().detectMultiScale(face_gray, scaleFactor=1.2, minNeighbors=4, minSize=(20, 20))

    values = {
        **header_facts(decoded, file_bytes),
        "mean_luma": luma_mean / 255.0,
        "luma_std": luma_std / 255.0,
        "clipped_dark_frac": float(np.count_nonzero(gray <= _DARK_LEVEL)) / gray.size,
        "clipped_bright_frac": float(np.count_nonzero(gray >= _BRIGHT_LEVEL)) / gray.size,
        "colourfulness": colourfulness,
        "mean_saturation": float(saturation.mean()) / 255.0,
        "sharpness": float(laplacian_std[0, 0]) ** 2,
        "edge_density": float(cv2.countNonZero(edges)) / edges.size,
        "text_likeness": text_likeness(rgb),
        "noise_sigma": noise_sigma,
        "face_count": float(len(faces)),
    }
    return values, dhash64(gray)


FEATURE_SET = FeatureSet(VERSION, NAMES, feature_schema(NAMES), WORKING_SIDE, compute)
