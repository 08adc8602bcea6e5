"""Feature version 2: quality measures that hold across photo sizes and content (issue 19).

v1 measured sharpness as one global variance of the Laplacian: a sky and a field of foliage differ
far more in it than a blurred and a sharp photo do. v2 measures detail *relative to the photo
itself*: fine-scale against coarse-scale energy (a blur removes the fine scale first, whatever the
content), per tile (a blurred photo has no sharp tile), edge widths, noise where the photo is flat
(so texture does not read as noise), the high-frequency share of 8x8 block DCTs and the luma
histogram's quantiles. Every v1 feature is kept by name; docs/features.md says how each is computed
and why.

Cost: every measure is computed from one gray image and one half-size copy of it, both at the
decode's working size (the DCT-scaled decode already did the big reduction); the face detector runs
on a copy reduced from the half-size one.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from udfs.decode import DecodedPhoto
from udfs.features.common import FeatureSet, dhash64, haar_faces, header_facts, text_likeness
from udfs.schemas import feature_schema

VERSION = 2
# Same decode as v1: one decode can serve both versions.
WORKING_SIDE = 512
# Faces are counted on an 80 px copy with coarse scale steps: the cascade's cost grows with area and
# with the number of scales, and faces that matter for a photo's quality are not tiny (>= ~1/4 of
# the longest side: the cascade's window is 24 px). About 1/15 of v1's 160 px, 1.2-step search.
FACE_SIDE = 80
FACE_SCALE_STEP = 1.5
# Tiles for the per-region measures: a grid of TILE_GRID x TILE_GRID over the working image.
TILE_GRID = 6

NAMES: tuple[str, ...] = (
    # v1's names, same meaning (sharpness and edge_density are computed more cheaply: see docs)
    "width", "height", "megapixels", "file_bytes", "bytes_per_pixel", "format_code", "is_progressive",
    "mean_luma", "luma_std", "clipped_dark_frac", "clipped_bright_frac", "colourfulness",
    "mean_saturation", "sharpness", "edge_density", "text_likeness", "noise_sigma", "jpeg_quality",
    "face_count", "has_exif",
    # v2's measures
    "luma_p05", "luma_p50", "luma_p95",
    "detail_ratio", "tile_detail_p50", "tile_detail_p90", "tile_sharpness_p90",
    "edge_width", "detail_anisotropy", "noise_floor", "dct_hf_share",
)

_DARK_LEVEL = 5
_BRIGHT_LEVEL = 250
# Immerkaer's noise-estimation mask: Laplacian differences cancel smooth image structure.
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_NOISE_SCALE = math.sqrt(math.pi / 2.0) / 6.0  # mean |mask response| -> Gaussian sigma
# Energies below this (gray levels squared) are flat: ratios of two such energies are noise.
_ENERGY_FLOOR = 1.0
# A pixel is on an edge when its Sobel magnitude (4x the per-pixel step) exceeds this: a step of
# about 25 gray levels per pixel, what v1's Canny thresholds kept.
_EDGE_LEVEL = 100.0
# Sobel's response to a unit step per pixel.
_SOBEL_GAIN = 4.0
_RANGE_KERNEL = cv2.getStructuringElement(cv2.MORPH_RECT, (7, 7))
_DCT_HIGH = np.add.outer(np.arange(8), np.arange(8)) >= 6   # "high" frequencies: u + v >= 6
_DCT_AC = np.add.outer(np.arange(8), np.arange(8)) >= 1
# The orthonormal 8-point DCT-II matrix (row k: frequency k), as JPEG uses: 1-D DCTs of the unit vectors.
_DCT_BASIS = np.ascontiguousarray(cv2.dct(np.eye(8, dtype=np.float32), flags=cv2.DCT_ROWS).T)


def _log_ratio(a: float, b: float) -> float:
    return math.log((a + _ENERGY_FLOOR) / (b + _ENERGY_FLOOR))


def _tile_means(image: np.ndarray) -> np.ndarray:
    """Mean of `image` over each tile of a TILE_GRID x TILE_GRID grid (the last rows and columns
    that do not fill a tile are left out). Reshaped sums: a tenth of cv2.resize(INTER_AREA)'s cost."""
    h, w = image.shape
    th, tw = max(1, h // TILE_GRID), max(1, w // TILE_GRID)
    rows, cols = min(TILE_GRID, h), min(TILE_GRID, w)
    cropped = image[:th * rows, :tw * cols].astype(np.float32, copy=False)
    sums = cropped.reshape(rows, th, tw * cols).sum(axis=1).reshape(rows, cols, tw).sum(axis=2)
    return sums.ravel() / float(th * tw)


def _quantile(values: np.ndarray, q: float) -> float:
    """Nearest-rank quantile of a few dozen values (np.quantile's overhead is 50x the sort here)."""
    ordered = np.sort(values)
    return float(ordered[round(q * (len(ordered) - 1))])


def _directional_energy(gx: np.ndarray, gy: np.ndarray) -> tuple[float, float, float, float]:
    """Mean squared derivative along x, y and the two diagonals (up to a common factor 2)."""
    n = float(gx.size)
    xx, yy = cv2.norm(gx, cv2.NORM_L2SQR) / n, cv2.norm(gy, cv2.NORM_L2SQR) / n
    xy = float(np.vdot(gx, gy)) / n
    return xx, yy, (xx + yy + 2 * xy) / 2, (xx + yy - 2 * xy) / 2


def _luma(gray: np.ndarray) -> dict[str, float]:
    hist = cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel()
    cdf = np.cumsum(hist) / gray.size
    mean, std = (float(v[0, 0]) for v in cv2.meanStdDev(gray))
    quantile = {q: float(np.searchsorted(cdf, q)) / 255.0 for q in (0.05, 0.5, 0.95)}
    return {
        "mean_luma": mean / 255.0,
        "luma_std": std / 255.0,
        "clipped_dark_frac": float(cdf[_DARK_LEVEL]),
        "clipped_bright_frac": float(1.0 - cdf[_BRIGHT_LEVEL - 1]),
        "luma_p05": quantile[0.05], "luma_p50": quantile[0.5], "luma_p95": quantile[0.95],
    }


def _colour(rgb_half: np.ndarray) -> dict[str, float]:
    r, g, b = cv2.split(rgb_half.astype(np.int16))
    rg_mean, rg_std = (float(v[0, 0]) for v in cv2.meanStdDev(r - g))
    # yb = (r + g) / 2 - b, kept in integers as 2 * yb and halved after the statistics.
    yb2_mean, yb2_std = (float(v[0, 0]) for v in cv2.meanStdDev(r + g - 2 * b))
    # Hasler & Suesstrunk colourfulness, scaled to roughly [0, 1].
    colourfulness = (math.hypot(rg_std, yb2_std / 2.0) + 0.3 * math.hypot(rg_mean, yb2_mean / 2.0)) / 255.0
    saturation = cv2.cvtColor(rgb_half, cv2.COLOR_RGB2HSV)[:, :, 1]
    return {"colourfulness": colourfulness, "mean_saturation": float(saturation.mean()) / 255.0}


def _detail(gray: np.ndarray, gray_half: np.ndarray) -> dict[str, float]:
    """Fine- against coarse-scale detail, globally and per tile: a blur lowers the ratio whatever
    the content, and a blurred photo has no sharp tile."""
    fine = np.square(cv2.Laplacian(gray, cv2.CV_16S, ksize=1).astype(np.float32))
    coarse = np.square(cv2.Laplacian(gray_half, cv2.CV_16S, ksize=1).astype(np.float32))
    fine_tiles, coarse_tiles = _tile_means(fine), _tile_means(coarse)
    tile_ratio = np.log((fine_tiles + _ENERGY_FLOOR) / (coarse_tiles + _ENERGY_FLOOR))
    # Contrast-normalised sharpness: fine energy against the tile's own variance at coarse scale.
    half = gray_half.astype(np.float32)
    variance = _tile_means(np.square(half)) - np.square(_tile_means(half))
    tile_sharp = np.log((fine_tiles + _ENERGY_FLOOR) / (np.maximum(variance, 0.0) + _ENERGY_FLOOR))
    fine_energy = float(fine.mean())
    return {
        "sharpness": fine_energy,
        "detail_ratio": _log_ratio(fine_energy, float(coarse.mean())),
        "tile_detail_p50": _quantile(tile_ratio, 0.5),
        "tile_detail_p90": _quantile(tile_ratio, 0.9),
        "tile_sharpness_p90": _quantile(tile_sharp, 0.9),
    }


def _edges(gray: np.ndarray, gray_half: np.ndarray) -> dict[str, float]:
    """Edge density, edge width and the direction dependence of fine detail (camera shake blurs
    along one direction)."""
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = cv2.magnitude(gx, gy)
    # Sums over edge pixels through thresholded copies: cv2.mean with a mask costs 5x more.
    _, edge_magnitude = cv2.threshold(magnitude, _EDGE_LEVEL, 0.0, cv2.THRESH_TOZERO)
    _, on_edge = cv2.threshold(edge_magnitude, 0.0, 1.0, cv2.THRESH_BINARY)
    n_edge = cv2.countNonZero(on_edge)
    if n_edge:
        # A step of height H blurred over w pixels has a slope of H / w: width = local range / slope
        # (ratio of the sums over edge pixels: a median costs ten times more).
        local_range = cv2.morphologyEx(gray, cv2.MORPH_GRADIENT, _RANGE_KERNEL)
        range_sum = cv2.sumElems(cv2.multiply(local_range, on_edge, dtype=cv2.CV_32F))[0]
        edge_width = _SOBEL_GAIN * range_sum / cv2.sumElems(edge_magnitude)[0]
    else:
        edge_width = 0.0
    hx = cv2.Sobel(gray_half, cv2.CV_32F, 1, 0, ksize=3)
    hy = cv2.Sobel(gray_half, cv2.CV_32F, 0, 1, ksize=3)
    # Fine/coarse energy along x, along y and along the two diagonals; the diagonals' energies
    # E[(gx +- gy)^2] = E[gx^2] + E[gy^2] +- 2 E[gx gy] need no image of their own.
    fine, coarse = _directional_energy(gx, gy), _directional_energy(hx, hy)
    ratios = [_log_ratio(f, c) for f, c in zip(fine, coarse)]
    return {
        "edge_density": n_edge / float(gray.size),
        "edge_width": float(edge_width),
        "detail_anisotropy": max(ratios) - min(ratios),
    }


def _noise(gray: np.ndarray) -> dict[str, float]:
    """Noise overall (v1's estimate) and in the flattest tiles, where texture cannot pass for it."""
    response = np.abs(cv2.filter2D(gray, cv2.CV_16S, _NOISE_KERNEL, borderType=cv2.BORDER_REFLECT))
    tiles = _tile_means(response)
    return {
        "noise_sigma": _NOISE_SCALE * cv2.norm(response, cv2.NORM_L1) / float(response.size),
        "noise_floor": _NOISE_SCALE * _quantile(tiles, 0.1),
    }


def _dct_hf_share(gray: np.ndarray) -> float:
    """Share of the 8x8 block DCTs' AC energy in the high frequencies (u + v >= 6): blur and heavy
    compression both empty them. Pillow does not expose the JPEG's own coefficients, so the blocks
    are transformed here: two batched matrix products (rows, then columns of every block), a
    third of the cost of one cv2.dct call per block. A quarter of the blocks is enough for a
    share of energy and quarters the cost."""
    h, w = (d - d % 16 for d in gray.shape)
    if h == 0 or w == 0:
        return 0.0
    # Every other block of every other block row: a quarter of the blocks, evenly spread.
    blocks = gray[:h, :w].reshape(h // 16, 16, w // 16, 16)[:, :8, :, :8].reshape(h // 2, w // 2)
    rows = blocks.astype(np.float32).reshape(h // 2, w // 16, 8) @ _DCT_BASIS.T
    coefficients = rows.reshape(h // 16, 8, w // 16, 8).transpose(0, 2, 3, 1) @ _DCT_BASIS.T
    energy = np.square(coefficients).sum(axis=(0, 1))  # [u (x), v (y)]
    ac = float(energy[_DCT_AC].sum())
    return float(energy[_DCT_HIGH].sum()) / ac if ac > 0 else 0.0


def _face_count(gray_half: np.ndarray) -> float:
    h, w = gray_half.shape
    scale = min(1.0, FACE_SIDE / max(h, w))
    small = cv2.resize(gray_half, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1.0 else gray_half
    faces = haar_faces().detectMultiScale(small, scaleFactor=FACE_SCALE_STEP, minNeighbors=4, minSize=(20, 20))
    return float(len(faces))


def compute(decoded: DecodedPhoto, file_bytes: int) -> tuple[dict[str, float], int]:
    """The v2 feature values (before the float32 cast) and the dHash of a decoded photo."""
    rgb = decoded.rgb
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    # The one reduced copy: colour statistics, the coarse scale and the face search all use it.
    # (bilinear at exactly half the size averages 2x2 blocks, at a tenth of INTER_AREA's cost).
    rgb_half = cv2.resize(rgb, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_LINEAR)
    gray_half = cv2.cvtColor(rgb_half, cv2.COLOR_RGB2GRAY)
    values = {
        **header_facts(decoded, file_bytes),
        **_luma(gray),
        **_colour(rgb_half),
        **_detail(gray, gray_half),
        **_edges(gray, gray_half),
        "text_likeness": text_likeness(rgb),
        **_noise(gray),
        "face_count": _face_count(gray_half),
        "dct_hf_share": _dct_hf_share(gray),
    }
    return values, dhash64(gray)


FEATURE_SET = FeatureSet(VERSION, NAMES, feature_schema(NAMES), WORKING_SIDE, compute)
