"""Feature extraction: every bad input gets its reason code, valid oddities are featured, features
are deterministic and mean something on real photos."""
from __future__ import annotations

import dataclasses
import io
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import udfs.features as features_module
from _photo_fixtures import reader_for
from jobs.local_features import extract_features_from_uri
from models import corpus
from udfs.decode import DecodeLimits, decode_photo
from udfs.errors import PhotoscoreError
from udfs.features import (
    FEATURE_NAMES,
    FEATURE_SETS,
    FEATURE_VERSION,
    FEATURE_VERSIONS,
    FeatureRow,
    dhash_distance,
    estimate_jpeg_quality,
    extract_batch,
    extract_features,
    feature_frame,
    feature_set,
)
from udfs.quarantine import QuarantineRecord


def _feature_dict(row: FeatureRow) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, row.values.tolist()))


@pytest.mark.parametrize("version", FEATURE_VERSIONS)
def test_every_bad_input_gets_its_reason_code(bad_inputs, corpus_dir, version):
    assert len(bad_inputs) >= 5
    reader = reader_for(corpus_dir)
    for path, expected in bad_inputs.items():
        result = extract_features_from_uri(path, reader, version=version)
        assert isinstance(result, QuarantineRecord), path
        assert result.reason_code == expected, (path, result)
        assert result.source_ref == path and result.photo_id == path
        assert result.detail


def test_unreadable_and_oversized_inputs_are_quarantined_at_read(tmp_path):
    reader = reader_for(tmp_path)
    missing = extract_features_from_uri(str(tmp_path / "gone.jpg"), reader)
    assert (missing.stage, missing.reason_code) == ("read", "unreadable_uri")
    assert "gone.jpg" in missing.detail
    folder = extract_features_from_uri(str(tmp_path), reader)
    assert folder.reason_code == "not_a_regular_file"
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * 2048)
    too_large = extract_features_from_uri(str(big), reader, limits=DecodeLimits(max_file_bytes=1024))
    assert (too_large.stage, too_large.reason_code) == ("read", "file_too_large")
    as_uri = extract_features_from_uri(f"file://{tmp_path / 'gone.jpg'}", reader)
    assert as_uri.reason_code == "unreadable_uri"


def test_batch_never_raises_and_accounts_for_every_input(bad_inputs, oddities, corpus_labels):
    paths = list(bad_inputs) + list(oddities) + list(corpus_labels["photo_id"][:5])
    blobs = [Path(p).read_bytes() for p in paths]
    result = extract_batch(paths, blobs)
    assert len(result.features) + len(result.quarantine) == len(paths)
    assert set(result.quarantine["photo_id"]) == set(bad_inputs)
    assert list(result.features.columns[:5]) == ["photo_id", "content_sha256", "feature_version", "format", "dhash"]
    assert list(result.features.columns[5:]) == list(FEATURE_NAMES)
    assert all(result.features[name].dtype == np.float32 for name in FEATURE_NAMES)


def test_valid_oddities_are_featured_upright(oddities, corpus_dir):
    # Decision for the borderline file (corrupt bytes mid-scan that libjpeg decodes with
    # warnings): it is featured as libjpeg renders it; only undecodable data is quarantined.
    rows = {}
    reader = reader_for(corpus_dir)
    for path, info in oddities.items():
        result = extract_features_from_uri(path, reader)
        assert isinstance(result, FeatureRow), (info["kind"], result)
        values = _feature_dict(result)
        assert (values["width"], values["height"]) == (info["width"], info["height"]), info["kind"]
        assert np.isfinite(result.values).all()
        rows[info["kind"]] = result
    gray = _feature_dict(rows["gray_jpeg"])
    # 16-bit samples are scaled, not clipped: same photo, same brightness as the 8-bit JPEG.
    assert abs(_feature_dict(rows["gray16_png"])["mean_luma"] - gray["mean_luma"]) < 0.02
    assert abs(_feature_dict(rows["rgb16_png"])["mean_luma"] - gray["mean_luma"]) < 0.02
    assert abs(_feature_dict(rows["cmyk_jpeg"])["mean_luma"] - gray["mean_luma"]) < 0.03
    # The animation's first frame is the photo; the third frame is its negative.
    assert abs(_feature_dict(rows["animated_gif"])["mean_luma"] - _feature_dict(rows["palette_png"])["mean_luma"]) < 0.01
    # EXIF orientation applied: the rotated file hashes like the upright photo.
    assert dhash_distance(rows["exif_rotated_jpeg"].dhash, rows["gray_jpeg"].dhash) <= 10
    # Alpha is composited over white: the transparent frame brightens the photo.
    assert _feature_dict(rows["rgba_png"])["clipped_bright_frac"] > 0.3


@pytest.mark.parametrize("version", FEATURE_VERSIONS)
def test_non_finite_features_are_quarantined(monkeypatch, oddities, version):
    real = feature_set(version)

    def with_nan(decoded, file_bytes):
        values, dhash = real.compute(decoded, file_bytes)
        values["mean_luma"] = float("nan")
        return values, dhash

    monkeypatch.setitem(FEATURE_SETS, version, dataclasses.replace(real, compute=with_nan))
    path = next(iter(oddities))
    result = extract_features(Path(path).read_bytes(), path, version=version)
    assert isinstance(result, QuarantineRecord)
    assert (result.stage, result.reason_code) == ("features", "non_finite_feature")
    assert "mean_luma" in result.detail


def test_feature_versions_are_registered_and_an_unknown_one_is_refused(oddities):
    assert FEATURE_VERSIONS == tuple(sorted(FEATURE_SETS)) and FEATURE_VERSION == FEATURE_VERSIONS[-1]
    assert FEATURE_NAMES == feature_set(FEATURE_VERSION).names
    path = next(iter(oddities))
    rows = {v: extract_features(Path(path).read_bytes(), path, version=v) for v in FEATURE_VERSIONS}
    for version, row in rows.items():
        assert row.feature_version == version
        assert len(row.values) == len(feature_set(version).names)
        table = feature_frame([row], version)
        assert list(table.columns) == feature_set(version).layout.names
        assert (table["feature_version"] == version).all()
    with pytest.raises(PhotoscoreError, match=r"unknown feature version 99.*versions 1"):
        feature_set(99)
    with pytest.raises(PhotoscoreError, match="unknown feature version"):
        extract_features(Path(path).read_bytes(), path, version=99)
    with pytest.raises(ValueError, match="rows of feature version"):
        feature_frame([dataclasses.replace(rows[FEATURE_VERSION], feature_version=99)], FEATURE_VERSION)


def _extract_values(path: str) -> list[tuple[str, int, bytes]]:
    rows = [extract_features(Path(path).read_bytes(), path, version=v) for v in FEATURE_VERSIONS]
    return [(row.content_sha256, row.dhash, row.values.tobytes()) for row in rows]


def test_features_are_deterministic_across_processes(corpus_labels):
    paths = list(corpus_labels["photo_id"][:6])
    here = [_extract_values(p) for p in paths]
    assert here == [_extract_values(p) for p in paths]
    # A fresh interpreter (as a Spark or Flink worker is) gives the same bits.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.map(_extract_values, paths) == here


@pytest.mark.parametrize("version", FEATURE_VERSIONS)
def test_every_version_features_every_photo_finitely(corpus_labels, oddities, version):
    """Every corpus photo and valid oddity (tiny, 16-bit, CMYK, animated...) gets finite values."""
    paths = list(corpus_labels["photo_id"]) + list(oddities)
    result = extract_batch(paths, [Path(p).read_bytes() for p in paths], version=version)
    assert result.quarantine.empty, result.quarantine
    names = list(feature_set(version).names)
    assert np.isfinite(result.features[names].to_numpy()).all()
    assert (result.features["feature_version"] == version).all()


def test_large_jpegs_are_dct_scaled_not_fully_decoded(corpus_labels):
    big = corpus_labels[corpus_labels["megapixels"] >= 12.0]
    assert len(big) >= 1
    for path in big["photo_id"]:
        side = feature_set(FEATURE_VERSION).working_side
        decoded = decode_photo(Path(path).read_bytes(), side)
        assert max(decoded.rgb.shape[:2]) <= side * 2 ** 0.5
        assert decoded.width * decoded.height >= 12_000_000


@pytest.mark.parametrize("quality", [20, 50, 75, 95])
def test_jpeg_quality_is_estimated_from_quantization_tables(quality):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 80, 40)).save(buf, "JPEG", quality=quality)
    image = Image.open(io.BytesIO(buf.getvalue()))
    assert abs(estimate_jpeg_quality(image.quantization) - quality) <= 2
    assert estimate_jpeg_quality(None) == -1.0


def test_duplicates_share_identity_and_near_duplicates_share_dhash(corpus_features, corpus_labels):
    by_id = corpus_features.set_index("photo_id")
    exact = corpus_labels[corpus_labels["variant"] == "exact_duplicate"]
    near = corpus_labels[corpus_labels["variant"] == "near_duplicate"]
    assert len(exact) and len(near)
    for _, row in exact.iterrows():
        assert by_id.loc[row.photo_id, "content_sha256"] == by_id.loc[row.duplicate_of, "content_sha256"]
    for _, row in near.iterrows():
        assert by_id.loc[row.photo_id, "content_sha256"] != by_id.loc[row.duplicate_of, "content_sha256"]
        assert dhash_distance(int(by_id.loc[row.photo_id, "dhash"]), int(by_id.loc[row.duplicate_of, "dhash"])) <= 10


# (degradation, feature, +1 if the degraded photo must have more of it, -1 if less)
MEANINGS = [
    ("gaussian_blur", "sharpness", -1),
    ("motion_blur", "sharpness", -1),
    ("underexposure", "mean_luma", -1),
    ("overexposure", "mean_luma", +1),
    ("noise", "noise_sigma", +1),
    ("text", "text_likeness", +1),
]


@pytest.fixture(scope="module")
def degradation_pairs(corpus_labels):
    """Features of clean corpus photos and of each degradation applied to them (full strength range)."""
    clean = corpus_labels[(corpus_labels["variant"] == "clean") & (corpus_labels["megapixels"] < 12.0)]
    rng = np.random.default_rng(5)
    pairs = {name: [] for name, _, _ in MEANINGS}

    def features(image, photo_id):
        # Both sides of a pair go through the same encoder, so only the degradation differs (a
        # re-encode alone softens a strongly sharpened photo's halos, which text_likeness sees).
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        return {v: extract_features(buf.getvalue(), photo_id, version=v) for v in FEATURE_VERSIONS}

    for path in clean["photo_id"][:24]:
        image = Image.open(path).convert("RGB")
        source = features(image, path)
        for name, _, _ in MEANINGS:
            degraded, _ = corpus.DEGRADATIONS[name](image, rng, float(rng.uniform(0, 1)))
            pairs[name].append((source, features(degraded, f"{path}+{name}")))
    return pairs


def _values(row: FeatureRow) -> dict[str, float]:
    return dict(zip(feature_set(row.feature_version).names, row.values.tolist()))


@pytest.mark.parametrize("version", FEATURE_VERSIONS)
@pytest.mark.parametrize("degradation,feature,direction", MEANINGS)
def test_features_mean_something_on_real_photos(degradation_pairs, degradation, feature, direction, version):
    pairs = degradation_pairs[degradation]
    assert len(pairs) >= 15
    agree = [
        direction * (_values(after[version])[feature] - _values(before[version])[feature]) > 0
        for before, after in pairs
    ]
    assert np.mean(agree) >= 0.95, f"{degradation}: {feature} moved as expected in {np.mean(agree):.0%} of pairs"


def test_features_cli_reconciles_counts(corpus_dir, bad_inputs, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jobs.cli", "features", "--input", str(corpus_dir / "photos"),
           str(corpus_dir / "broken"), str(corpus_dir / "oddities"), "--out", str(out), "--workers", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    last = done.stdout.strip().splitlines()[-1]
    counts = dict(part.split("=") for part in last.split())
    n_photos = len(list((corpus_dir / "photos").iterdir()))
    n_odd = len(list((corpus_dir / "oddities").iterdir()))
    assert int(counts["inputs"]) == n_photos + len(bad_inputs) + n_odd
    assert int(counts["quarantined"]) == len(bad_inputs)
    assert int(counts["inputs"]) == int(counts["featured"]) + int(counts["quarantined"])
    features = pd.read_parquet(out / "features.parquet")
    quarantine = pd.read_parquet(out / "quarantine.parquet")
    assert len(features) == int(counts["featured"]) and len(quarantine) == len(bad_inputs)
    assert set(quarantine["reason_code"]) == set(bad_inputs.values())


def test_spark_decode_pass_decodes_each_content_once(corpus_labels, tmp_path):
    """The feature backfill's decode pass gets every copy of a content adjacent (sorted by
    content) and copies may straddle Arrow batches: one decode and one row per content."""
    from udfs.spark_udfs import extract_partitions

    class Counter:  # the Spark accumulator's interface
        value = 0

        def add(self, n):
            self.value += n

    paths = list(corpus_labels["photo_id"][:2])
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(Path(paths[1]).read_bytes())
    digests = [features_module.content_sha256(Path(p).read_bytes()) for p in paths]
    rows = sorted([(digests[0], "a", paths[0]), (digests[1], "b", paths[1]), (digests[1], "c", str(copy))])
    batches = [pd.DataFrame(rows[:2], columns=["content_sha256", "photo_id", "uri"]),
               pd.DataFrame(rows[2:], columns=["content_sha256", "photo_id", "uri"])]
    decodes, rows_done = Counter(), Counter()
    reader = reader_for(*{Path(p).parent for p in paths}, tmp_path)
    out = pd.concat(list(extract_partitions(DecodeLimits(), reader, decodes, rows_done)(iter(batches))))
    assert sorted(out["content_sha256"]) == sorted(digests)
    assert out["ok"].all()
    assert (decodes.value, rows_done.value) == (2, 3)
    # the first copy in sort order is the one decoded
    assert out.set_index("content_sha256").loc[digests[1], "photo_id"] == min(r[1] for r in rows if r[0] == digests[1])


# Feature version 2's measures, on the corpus sources (real photos) at three photo sizes, each
# degraded by the corpus degradations (scaled to the photo's size): (degradation, feature, direction).
V2_MEANINGS = [
    *[("gaussian_blur", f, -1) for f in ("detail_ratio", "tile_detail_p50", "tile_detail_p90",
                                         "tile_sharpness_p90", "dct_hf_share")],
    *[("motion_blur", f, -1) for f in ("detail_ratio", "tile_sharpness_p90", "dct_hf_share")],
    *[("noise", f, +1) for f in ("noise_floor", "noise_sigma")],
    *[("underexposure", f, -1) for f in ("luma_p05", "luma_p50", "luma_p95")],
    *[("overexposure", f, +1) for f in ("luma_p05", "luma_p50", "luma_p95")],
]
V2_SIZES_MP = (0.3, 1.0, 2.5)


@pytest.fixture(scope="module")
def v2_pairs() -> dict[str, list[tuple[dict, dict, float]]]:
    """{degradation: [(clean v2 features, degraded v2 features, megapixels)]} over the non-flat
    photographic wallpapers (4 MP sources, so every size is a downscale, as a camera photo's is)."""
    names = feature_set(2).names
    rng = np.random.default_rng(19)
    sources = [s for s in corpus.available_sources() if s.kind == "wallpaper" and not s.flat]
    pairs: dict[str, list] = {name: [] for name in dict.fromkeys(m[0] for m in V2_MEANINGS)}

    def features(image: Image.Image) -> dict[str, float]:
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        return dict(zip(names, extract_features(buf.getvalue(), "p", version=2).values.tolist()))

    for source in sources:
        photo = corpus.load_source(source).convert("RGB")
        for mp in V2_SIZES_MP:
            f = (mp * 1e6 / (photo.width * photo.height)) ** 0.5
            base = photo.resize((round(photo.width * f), round(photo.height * f)), Image.Resampling.LANCZOS)
            clean = features(base)
            for name in pairs:
                degraded, _ = corpus.DEGRADATIONS[name](base, rng, float(rng.uniform(0, 1)))
                pairs[name].append((clean, features(degraded), mp))
    return pairs


@pytest.mark.parametrize("degradation,feature,direction", V2_MEANINGS)
def test_v2_features_move_the_right_way_at_every_size(v2_pairs, degradation, feature, direction):
    pairs = v2_pairs[degradation]
    assert len(pairs) >= 15 and {mp for _, _, mp in pairs} == set(V2_SIZES_MP)
    agree = [direction * (after[feature] - before[feature]) > 0 for before, after, _ in pairs]
    assert np.mean(agree) >= 0.95, f"{degradation}: {feature} moved as expected in {np.mean(agree):.0%} of pairs"
