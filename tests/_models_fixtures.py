"""Shared data and bundles for the model tests.

The feature rows the suite trains on come from ONE fixture, `model_data`: the real corpus
features of tests/conftest.py (`corpus_features`, `corpus_labels`). `synthetic_frames` makes a
larger data set shaped like the real features for the few tests that need many distinct split
thresholds (the corpus fixture is 72 photos).

Bundles are built once per session per model type (small models: 40 trees of depth 5) and shared
by the test modules through `built_bundle`, which memoises on the session's tmp_path_factory.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from models.build import BuiltBundle, build_bundle
from models.data import TrainingData, load_training_data
from models.trainers import TrainParams
from udfs.bundle import C_SOURCE, CPP_SOURCE, JAVA_DIR, MODEL_TYPES, ONNX_FILE, PY_SOURCE, write_checksums
from udfs.features import FEATURE_NAMES, FEATURE_VERSION
from udfs.formats import get_format

SMALL = TrainParams(trees=40, depth=5, threads=2)
_CACHE: dict = {}


def synthetic_frames(n_sources: int = 120, variants: int = 4, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A features frame and a labels frame shaped like the real ones (the newest version's features).

    Each source photo has `variants` rows (like the corpus' degraded copies); `low_quality`
    depends on sharpness, exposure and noise with label noise, so models learn something real.
    """
    rng = np.random.default_rng(seed)
    n = n_sources * variants
    source = np.repeat([f"src{i:04d}" for i in range(n_sources)], variants)
    width = rng.choice([640, 1024, 1920, 3840], n).astype(np.float32)
    height = np.round(width * rng.choice([0.5625, 0.75, 1.0], n)).astype(np.float32)
    mp = width * height / 1e6
    file_bytes = np.round(mp * 1e6 * rng.uniform(0.1, 0.6, n)).astype(np.float32)
    cols = {
        "width": width, "height": height, "megapixels": mp, "file_bytes": file_bytes,
        "bytes_per_pixel": file_bytes / (width * height),
        "format_code": rng.choice([1, 2, 4], n), "is_progressive": rng.integers(0, 2, n),
        "mean_luma": rng.uniform(0, 255, n), "luma_std": rng.uniform(5, 90, n),
        "clipped_dark_frac": rng.beta(0.5, 8, n), "clipped_bright_frac": rng.beta(0.5, 8, n),
        "colourfulness": rng.gamma(2, 20, n), "mean_saturation": rng.uniform(0, 1, n),
        "sharpness": rng.lognormal(5, 1.2, n), "edge_density": rng.uniform(0, 0.4, n),
        "text_likeness": rng.beta(1, 5, n), "noise_sigma": rng.gamma(2, 2, n),
        "jpeg_quality": rng.integers(30, 100, n), "face_count": rng.poisson(0.5, n),
        "has_exif": rng.integers(0, 2, n),
        # feature version 2's measures (drawn after v1's, so v1's columns are as before)
        "luma_p05": rng.uniform(0, 0.3, n), "luma_p50": rng.uniform(0.2, 0.8, n),
        "luma_p95": rng.uniform(0.6, 1.0, n), "detail_ratio": rng.normal(-0.8, 0.4, n),
        "tile_detail_p50": rng.normal(-0.8, 0.4, n), "tile_detail_p90": rng.normal(-0.3, 0.4, n),
        "tile_sharpness_p90": rng.normal(0.5, 1.0, n), "edge_width": rng.uniform(1.5, 3.0, n),
        "detail_anisotropy": rng.gamma(2, 0.05, n), "noise_floor": rng.gamma(2, 0.4, n),
        "dct_hf_share": rng.beta(1, 20, n),
    }
    features = pd.DataFrame({name: np.asarray(cols[name], dtype=np.float32) for name in FEATURE_NAMES})
    logit = (-1.2 * (np.log(features["sharpness"]) - 5) + 0.03 * np.abs(features["mean_luma"] - 128)
             + 0.25 * features["noise_sigma"] - 3.0 + rng.normal(0, 0.7, n))
    photo_id = [f"p{i:05d}" for i in range(n)]
    features.insert(0, "photo_id", photo_id)
    features.insert(1, "content_sha256", [f"{i:064x}" for i in range(n)])
    features.insert(2, "feature_version", FEATURE_VERSION)
    labels = pd.DataFrame({"photo_id": photo_id, "low_quality": (logit > 0).astype(bool),
                           "source_photo": source, "duplicate_of": pd.NA})
    return features, labels


def write_frames(features: pd.DataFrame, labels: pd.DataFrame, directory: Path) -> tuple[Path, Path]:
    """Both frames as parquet files, as `photoscore train` reads them."""
    directory.mkdir(parents=True, exist_ok=True)
    fp, lp = directory / "features.parquet", directory / "labels.parquet"
    features.to_parquet(fp, index=False)
    labels.to_parquet(lp, index=False)
    return fp, lp


@pytest.fixture(scope="session")
def model_frames(tmp_path_factory, corpus_features, corpus_labels) -> tuple[Path, Path]:
    """(features.parquet, labels.parquet) of the real corpus: THE data source of the model tests."""
    return write_frames(corpus_features, corpus_labels, tmp_path_factory.mktemp("model-frames"))


@pytest.fixture(scope="session")
def model_data(model_frames) -> TrainingData:
    features, labels = model_frames
    return load_training_data(features, labels, "low_quality", FEATURE_NAMES, FEATURE_VERSION)


@pytest.fixture(scope="session")
def versioned_frames(tmp_path_factory, corpus_labels, model_frames) -> dict[int, tuple[Path, Path]]:
    """{feature version: (features.parquet, labels.parquet)} of the real corpus, one per version this
    photoscore computes (the newest is `model_frames`)."""
    from udfs.features import FEATURE_VERSIONS, extract_batch

    ids = list(corpus_labels["photo_id"])
    blobs = [Path(p).read_bytes() for p in ids]
    frames = {FEATURE_VERSION: model_frames}
    for version in FEATURE_VERSIONS:
        if version != FEATURE_VERSION:
            result = extract_batch(ids, blobs, version=version)
            assert result.quarantine.empty, result.quarantine
            frames[version] = write_frames(result.features, corpus_labels,
                                           tmp_path_factory.mktemp(f"model-frames-v{version}"))
    return frames


def built_bundle(model_type: str, data: TrainingData, tmp_path_factory) -> BuiltBundle:
    """A small bundle of `model_type` trained on `data`, built once per session."""
    key = ("bundle", model_type, id(data), id(tmp_path_factory))
    if key not in _CACHE:
        _CACHE[key] = build_bundle(model_type, data, SMALL, tmp_path_factory.mktemp(f"bundle-{model_type}") / "b")
    return _CACHE[key]


@pytest.fixture(scope="session", params=MODEL_TYPES)
def bundle(request, model_data, tmp_path_factory) -> BuiltBundle:
    """One built bundle per model type (parametrised)."""
    return built_bundle(request.param, model_data, tmp_path_factory)


def copy_bundle(built: BuiltBundle, dest: Path) -> Path:
    """A private copy of a shared bundle that a test may alter."""
    shutil.copytree(built.bundle_dir, dest)
    return dest


def perturb_onnx(bundle_dir: Path, delta: float = 0.5, reseal: bool = True) -> str:
    """Break `model.onnx` on purpose: shift tree 0's leaf weights (or a linear model's intercept).

    Every row passes through tree 0, so every score moves. With `reseal`, checksums are rewritten,
    as a buggy exporter would have produced it: only the parity gate can catch it then.
    """
    path = bundle_dir / ONNX_FILE
    model = onnx.load(str(path))
    for node in model.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type.startswith("TreeEnsemble"):
            prefix = "class" if "class_weights" in attrs else "target"
            trees = list(attrs[f"{prefix}_treeids"].ints)
            weights = list(attrs[f"{prefix}_weights"].floats)
            weights = [w + delta if t == trees[0] else w for w, t in zip(weights, trees)]
            del attrs[f"{prefix}_weights"].floats[:]
            attrs[f"{prefix}_weights"].floats.extend(weights)
            what = f"{node.op_type} tree {trees[0]} leaves +{delta}"
            break
        if node.op_type == "LinearClassifier":
            intercepts = [v + delta for v in attrs["intercepts"].floats]
            del attrs["intercepts"].floats[:]
            attrs["intercepts"].floats.extend(intercepts)
            what = f"LinearClassifier intercepts +{delta}"
            break
    else:
        raise AssertionError(f"no tree ensemble or linear classifier in {path}")
    onnx.save(model, str(path))
    if reseal:
        write_checksums(bundle_dir)
    return what


# Deliberate corruption of a generated-code export, for tests that a parity check catches it.
_NUM = r"-?(?:0x[0-9a-fA-F.]+p[-+]?\d+|[0-9][0-9.]*(?:[eE][-+]?\d+)?)f?"
# (generated file, pattern) in order of preference; group 2 is the number changed: the first tree's
# first leaf where there are trees, else the first coefficient of a linear model.
_LEAF_TARGETS = [
    (PY_SOURCE, rf"(leaf_values = \[\s*\[)({_NUM})"), (PY_SOURCE, rf"(var\d+ = )({_NUM})\n"),
    (PY_SOURCE, rf"(\* )({_NUM})"),
    (f"{JAVA_DIR}/ScorePart0.java", rf"(var\d+ = )({_NUM});"), (f"{JAVA_DIR}/ScorePart0.java", rf"(\* )({_NUM})"),
    (CPP_SOURCE, rf"(LeafValues\[\d+\]\[\d+\] = \{{\s*\{{)({_NUM})"),
    (C_SOURCE, rf"(ps_leaf\[\d+\]\[\d+\] = \{{\n  \{{)({_NUM})"), (C_SOURCE, rf"(\* )({_NUM})"),
]


def _shift(literal: str, delta: float) -> str:
    suffix = "f" if literal.endswith("f") and "x" in literal else ""
    body = literal[: -len(suffix)] if suffix else literal
    value = float.fromhex(body) if "x" in body else float(body)
    return (value + delta).hex() + suffix if "x" in body else repr(value + delta)


def _format_sources(bundle_dir: Path, format_id: str) -> set[str]:
    """The generated source files of an export, from its format's `files` (udfs/formats/)."""
    found = set()
    for entry in get_format(format_id).files:
        for name in entry.split(" | "):
            found.update(p.relative_to(bundle_dir).as_posix() for p in bundle_dir.glob(name))
    return found


def perturb_leaf(bundle_dir: Path, format_id: str, delta: float = 0.5) -> str:
    """Add `delta` to one leaf (or coefficient) in the generated source of `format_id` and rebuild
    it; rows reaching that leaf move. Returns a description of the change."""
    import codegen

    bundle_dir = Path(bundle_dir)
    sources = _format_sources(bundle_dir, format_id)
    for rel, pattern in _LEAF_TARGETS:
        if rel not in sources:
            continue
        path = bundle_dir / rel
        text = path.read_text()
        match = re.search(pattern, text)
        if match is None:
            continue
        new = _shift(match.group(2), delta)
        path.write_text(text[: match.start(2)] + new + text[match.end(2):])
        if rel in (C_SOURCE, CPP_SOURCE):
            codegen.build_c(bundle_dir)
        elif rel.endswith(".java"):
            codegen.build_java(bundle_dir)
        return f"{rel}: {match.group(2)} -> {new}"
    raise AssertionError(f"perturb_leaf: no leaf found in the {format_id} sources of {bundle_dir}")
