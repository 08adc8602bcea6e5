"""Tests of the labelled corpus builder (models/corpus/) and `photoscore corpus`."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from jobs.cli import main as cli_main
from models import corpus as C
from models.corpus import degradations as D
from udfs.errors import PhotoscoreError
from udfs.quarantine import REASON_CODES

N = 40


def _build(root: Path, n: int, seed: int, broken: bool = False) -> tuple[Path, pd.DataFrame]:
    out = root / f"n{n}_s{seed}_{'b' if broken else 'p'}"
    frame = C.build_corpus(out, n, seed, broken=broken, progress=False)
    return out, frame


@pytest.fixture(scope="module")
def corpus_a(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("a"), N, 3, broken=True)


@pytest.fixture(scope="module")
def corpus_b(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("b"), N, 3, broken=True)


@pytest.fixture(scope="module")
def corpus_other_seed(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("c"), N, 4)


def _relative_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != "labels.parquet"}


def _relative_labels(out: Path, frame: pd.DataFrame) -> pd.DataFrame:
    prefix = str(out.resolve()) + "/"
    rel = frame.copy()
    for col in ("photo_id", "duplicate_of"):
        rel[col] = rel[col].str.replace(prefix, "", regex=False)
    return rel


def _rel_json(out: Path, name: str) -> dict:
    prefix = str(out.resolve()) + "/"
    return {k.replace(prefix, ""): v for k, v in json.loads((out / name).read_text()).items()}


# --- reproducibility ------------------------------------------------------------------------

def test_same_seed_gives_identical_bytes_and_labels(corpus_a, corpus_b):
    (out_a, labels_a), (out_b, labels_b) = corpus_a, corpus_b
    files_a, files_b = _relative_files(out_a), _relative_files(out_b)
    assert len(files_a) >= N
    assert files_a.keys() == files_b.keys()
    differing = [k for k in files_a if files_a[k] != files_b[k] and not k.endswith(".json")]
    assert differing == []
    pd.testing.assert_frame_equal(_relative_labels(out_a, labels_a),
                                  _relative_labels(out_b, labels_b))
    # The parquet round trip gives the same table as the returned frame.
    on_disk = pd.read_parquet(out_a / "labels.parquet")
    pd.testing.assert_frame_equal(on_disk.reset_index(drop=True),
                                  labels_a.reset_index(drop=True), check_dtype=False)
    assert _rel_json(out_a, "broken.json") == _rel_json(out_b, "broken.json")
    assert _rel_json(out_a, "oddities.json") == _rel_json(out_b, "oddities.json")


def test_different_seed_gives_different_corpus(corpus_a, corpus_other_seed):
    (out_a, labels_a), (out_c, labels_c) = corpus_a, corpus_other_seed
    files_a = _relative_files(out_a / "photos")
    files_c = _relative_files(out_c / "photos")
    same = [k for k in files_a if files_c.get(k) == files_a[k]]
    assert len(same) < len(files_a) // 4
    assert not _relative_labels(out_a, labels_a)[["source_photo", "variant"]].equals(
        _relative_labels(out_c, labels_c)[["source_photo", "variant"]])


# --- labels ------------------------------------------------------------------------------------

def test_label_columns_and_dtypes(corpus_a):
    out, _ = corpus_a
    labels = pd.read_parquet(out / "labels.parquet")
    expected = ["photo_id", "blurred", "dark", "overexposed", "noisy", "has_text", "low_quality",
                "source_photo", "duplicate_of"]
    assert list(labels.columns[: len(expected)]) == expected
    for col in C.LABEL_COLUMNS:
        assert labels[col].dtype == bool, col
    assert labels["photo_id"].is_unique
    assert len(labels) == N
    for pid in labels["photo_id"]:
        assert Path(pid).is_absolute() and Path(pid).is_file()
        assert Path(pid).parent == (out / "photos").resolve()
    assert labels["duplicate_of"].isna().sum() == N - (labels["variant"].str.endswith("duplicate")).sum()
    for col in C.LABEL_COLUMNS:
        assert labels[col].any(), f"no photo labelled {col} in a {N}-photo corpus"


def test_low_quality_is_any_degradation(corpus_a):
    _, labels = corpus_a
    degraded = labels[["blurred", "dark", "overexposed", "noisy", "has_text",
                       "heavy_compression"]].any(axis=1)
    assert (labels["low_quality"] == degraded).all()
    # Originals are encoded at quality 5-15; a near-duplicate of one is re-encoded higher but keeps
    # the blocking, and the label.
    heavy = labels[labels["heavy_compression"] & labels["duplicate_of"].isna()]
    assert len(heavy) >= 1 and (heavy["jpeg_quality"] <= 15).all()
    clean_fraction = (~labels["low_quality"]).mean()
    assert 0.35 <= clean_fraction <= 0.6


def test_recorded_sizes_and_formats_match_files(corpus_a):
    _, labels = corpus_a
    for row in labels.itertuples():
        with Image.open(row.photo_id) as im:
            assert im.size == (row.width, row.height)
            assert im.format == row.format
            if im.format == "JPEG":
                assert bool(im.info.get("progressive", 0) or im.info.get("progression", 0)) == \
                    row.progressive
        assert Path(row.photo_id).stat().st_size == row.file_bytes
    assert (labels["format"] == "JPEG").mean() > 0.8


def test_exact_duplicates_are_byte_identical(corpus_a):
    _, labels = corpus_a
    exact = labels[labels["variant"] == "exact_duplicate"]
    assert len(exact) >= 1
    for row in exact.itertuples():
        assert row.photo_id != row.duplicate_of
        assert Path(row.photo_id).read_bytes() == Path(row.duplicate_of).read_bytes()
        original = labels.set_index("photo_id").loc[row.duplicate_of]
        assert original["source_photo"] == row.source_photo
        for col in C.LABEL_COLUMNS:
            assert original[col] == getattr(row, col)


def test_near_duplicates_are_similar_but_not_identical(corpus_a):
    _, labels = corpus_a
    near = labels[labels["variant"] == "near_duplicate"]
    assert len(near) >= 1
    for row in near.itertuples():
        a, b = Path(row.photo_id).read_bytes(), Path(row.duplicate_of).read_bytes()
        assert a != b
        small = (64, 64)
        pa = np.asarray(Image.open(io.BytesIO(a)).convert("L").resize(small), np.float32)
        pb = np.asarray(Image.open(io.BytesIO(b)).convert("L").resize(small), np.float32)
        assert np.abs(pa - pb).mean() < 6, "a near-duplicate must look like its original"
        original = labels.set_index("photo_id").loc[row.duplicate_of]
        for col in C.LABEL_COLUMNS:
            assert original[col] == getattr(row, col)
    # Duplicates always come after the photo they copy.
    assert all(Path(r.duplicate_of).name < Path(r.photo_id).name
               for r in labels.dropna(subset=["duplicate_of"]).itertuples())


def test_at_least_one_large_photo(corpus_a):
    _, labels = corpus_a
    big = labels[labels["megapixels"] >= 12.0]
    assert len(big) >= 1
    assert (big["duplicate_of"].isna()).all()


# --- planning (cheap: no pixels) ---------------------------------------------------------------

def _fake_sources() -> list[C.Source]:
    return ([C.Source(f"sk{i}", "skimage", f"sk{i}") for i in range(4)]
            + [C.Source(f"wp{i}", "wallpaper", f"/x/wp{i}.jpg", flat=(i == 0)) for i in range(6)])


def test_plan_mix_for_a_larger_corpus():
    specs = C.plan_corpus(400, 11, _fake_sources())
    assert [s.index for s in specs] == list(range(400))
    big = [s for s in specs if s.big]
    assert len(big) >= 3 and all(s.source.startswith("wp") for s in big)
    assert {s.extra["progressive"] for s in big} == {True, False}
    originals = [s for s in specs if s.role == "original"]
    clean = sum(not s.degradations for s in originals) / len(originals)
    assert 0.4 <= clean <= 0.55
    doubles = [s for s in originals if len(s.degradations) == 2]
    assert len(doubles) >= 0.2 * sum(bool(s.degradations) for s in originals)
    assert not any({"underexposure", "overexposure"} <= set(s.degradations) for s in specs)
    strengths = [x for s in originals for x in s.strengths]
    assert min(strengths) < 0.3 and max(strengths) > 0.7, "degradations must vary in strength"
    # A flat (featureless) source is never given a blur label.
    assert not any(s.source == "wp0" and any("blur" in d for d in s.degradations) for s in specs)
    for s in specs:
        if s.role != "original":
            assert s.duplicate_of < s.index and specs[s.duplicate_of].role == "original"
    assert any(s.fmt == "PNG" for s in specs)


def test_plan_is_deterministic():
    a = C.plan_corpus(100, 5, _fake_sources())
    b = C.plan_corpus(100, 5, _fake_sources())
    c = C.plan_corpus(100, 6, _fake_sources())
    key = lambda specs: [(s.source, s.role, s.degradations, s.strengths, s.fmt) for s in specs]
    assert key(a) == key(b)
    assert key(a) != key(c)


# --- degradations ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photo():
    sources = C.available_sources()
    source = next((s for s in sources if s.name == "astronaut"), sources[0])
    img = C.load_source(source).convert("RGB")
    return ImageOps.fit(img, (400, 300))


def _sharpness(img: Image.Image) -> float:
    import cv2

    return float(cv2.Laplacian(np.asarray(img.convert("L"), np.float32), cv2.CV_32F).var())


def _mean(img: Image.Image) -> float:
    return float(np.asarray(img.convert("L"), np.float32).mean())


@pytest.mark.parametrize("fn", [D.apply_gaussian_blur, D.apply_motion_blur])
def test_blur_reduces_sharpness_more_when_stronger(photo, fn):
    weak, _ = fn(photo, np.random.default_rng(0), 0.0)
    strong, _ = fn(photo, np.random.default_rng(0), 1.0)
    assert weak.size == photo.size and weak.mode == photo.mode
    assert _sharpness(strong) < _sharpness(weak) < _sharpness(photo)


@pytest.mark.parametrize("fn, key", [(D.apply_gaussian_blur, "sigma"), (D.apply_motion_blur, "length")])
def test_blur_is_scaled_to_the_longest_side(photo, fn, key):
    """The same draw on a photo twice as large blurs twice as many pixels: a blur means the same at
    every size, so a model cannot learn one size as what "blurred" looks like."""
    # Strengths whose blur stays above the 1 px floor on the 400 px photo.
    big = photo.resize((photo.width * 3, photo.height * 3), Image.Resampling.LANCZOS)
    for strength in (0.6, 1.0):
        _, small_params = fn(photo, np.random.default_rng(4), strength)
        _, big_params = fn(big, np.random.default_rng(4), strength)
        assert big_params[key] == pytest.approx(3 * small_params[key], rel=0.02)


def test_parameters_are_drawn_from_their_ranges(photo):
    sigmas = [D.apply_gaussian_blur(photo, np.random.default_rng(i), 0.5)[1]["sigma"] for i in range(20)]
    r = D.PARAMETER_RANGES["blur_sigma"]
    mid = D._loglerp(r.subtle, r.strong, 0.5) * max(photo.size)
    assert len(set(sigmas)) > 10, "one strength must still give varied parameters"
    assert all(mid * (1 - r.jitter) <= s <= mid * (1 + r.jitter) for s in sigmas)
    gammas = {D.apply_underexposure(photo, np.random.default_rng(i), 0.5)[1]["gamma"] for i in range(10)}
    assert len(gammas) > 5


def test_camera_look_varies_clean_photos_within_well_exposed(photo):
    looks = [D.apply_camera_look(photo, np.random.default_rng(i)) for i in range(12)]
    means = [_mean(img) for img, _ in looks]
    assert max(means) - min(means) > 10, "clean photos must vary in brightness"
    dark, _ = D.apply_underexposure(photo, np.random.default_rng(0), 0.0)
    assert _mean(dark) < min(means), "the subtlest under-exposure is darker than any clean look"
    a, pa = D.apply_camera_look(photo, np.random.default_rng(3))
    b, pb = D.apply_camera_look(photo, np.random.default_rng(3))
    assert a.tobytes() == b.tobytes() and pa == pb


def _fine_detail(img: Image.Image) -> float:
    gray = np.asarray(img.convert("L"), np.float32)
    return float(np.square(np.diff(gray, axis=1)).mean())


def test_camera_look_sharpens_most_photos_and_only_adds_detail(photo):
    looks = [D.apply_camera_look(photo, np.random.default_rng(i)) for i in range(60)]
    share = np.mean(["sharpen" in params for _, params in looks])
    assert abs(share - D.LOOK_SHARPEN_SHARE) < 0.15, share
    sharpened = D._unsharp_mask(photo, 1.5, 1.0)
    assert _fine_detail(sharpened) > 1.3 * _fine_detail(photo)
    # Same mean brightness: sharpening is not an exposure change.
    assert abs(_mean(sharpened) - _mean(photo)) < 2
    gray = D._unsharp_mask(photo.convert("L"), 1.0, 0.8)
    assert gray.mode == "L" and gray.size == photo.size


def test_exposure_moves_brightness_the_right_way(photo):
    dark, p = D.apply_underexposure(photo, np.random.default_rng(0), 0.5)
    bright, q = D.apply_overexposure(photo, np.random.default_rng(0), 0.5)
    assert _mean(dark) < 0.7 * _mean(photo) and p["exposure"] < 1
    assert _mean(bright) > _mean(photo) and q["exposure"] > 1
    clipped = (np.asarray(bright.convert("L")) >= 254).mean()
    assert clipped > (np.asarray(photo.convert("L")) >= 254).mean()


def test_noise_is_per_channel_and_grows_with_strength(photo):
    base = np.asarray(photo, np.float32)
    weak = np.asarray(D.apply_sensor_noise(photo, np.random.default_rng(0), 0.0)[0], np.float32)
    strong = np.asarray(D.apply_sensor_noise(photo, np.random.default_rng(0), 1.0)[0], np.float32)
    assert 0 < (weak - base).std() < (strong - base).std()
    diff = strong - base
    assert not np.allclose(diff[..., 0], diff[..., 1]), "noise must differ between channels"
    gray = photo.convert("L")
    assert D.apply_sensor_noise(gray, np.random.default_rng(0), 0.5)[0].mode == "L"


def test_text_overlay_draws_latin_or_cyrillic_lines(photo):
    out, params = D.apply_text_overlay(photo, np.random.default_rng(1), 0.9)
    assert out.size == photo.size
    assert len(params["lines"]) >= 2
    assert all(line["text"] in D.SPAM_LINES_LATIN + D.SPAM_LINES_CYRILLIC
               for line in params["lines"])
    changed = (np.abs(np.asarray(out, np.int16) - np.asarray(photo, np.int16)).max(axis=2) > 0)
    assert 0.005 < changed.mean() < 0.6
    gray_out, _ = D.apply_text_overlay(photo.convert("L"), np.random.default_rng(1), 0.1)
    assert gray_out.mode == "RGB"


def test_motion_blur_kernel_is_normalised():
    for length, angle in [(3, 0), (7.5, 33), (25, 90), (12, 135)]:
        k = D.motion_blur_kernel(length, angle)
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        assert abs(k.sum() - 1) < 1e-5 and (k >= 0).all()


def test_degrading_is_deterministic_for_a_seed(photo):
    for name, fn in C.DEGRADATIONS.items():
        a, pa = fn(photo, np.random.default_rng(9), 0.6)
        b, pb = fn(photo, np.random.default_rng(9), 0.6)
        assert a.tobytes() == b.tobytes() and pa == pb, name


# --- bad inputs and oddities ---------------------------------------------------------------------

def test_broken_inputs_exist_and_fail_as_labelled(corpus_a):
    out, _ = corpus_a
    broken = json.loads((out / "broken.json").read_text())
    assert set(broken.values()) == {"empty_file", "truncated_image", "not_an_image",
                                    "decompression_bomb", "dimensions_out_of_range"}
    for path, reason in broken.items():
        p = Path(path)
        assert p.is_absolute() and p.is_file() and p.parent == (out / "broken").resolve()
        assert reason in REASON_CODES
        if reason == "empty_file":
            assert p.stat().st_size == 0
        elif reason == "dimensions_out_of_range":
            with Image.open(p) as im:
                assert max(im.size) > 30000 and im.size[0] * im.size[1] <= 100_000_000
        elif reason == "decompression_bomb":
            assert p.stat().st_size < 10_000
            with pytest.raises(Image.DecompressionBombError):  # Pillow's own check agrees
                Image.open(p)
        else:
            with pytest.raises((OSError, Image.UnidentifiedImageError)):
                with Image.open(p) as im:
                    im.load()


def test_bomb_header_claims_huge_size(tmp_path):
    bad = C.write_bad_inputs(tmp_path)
    bomb = next(Path(p) for p, r in bad.items() if r == "decompression_bomb")
    data = bomb.read_bytes()
    import struct
    import zlib

    width, height = struct.unpack(">II", data[16:24])
    assert width * height > 100_000_000 and max(width, height) <= 30000
    crc = struct.unpack(">I", data[29:33])[0]
    assert crc == zlib.crc32(data[12:29]) & 0xFFFFFFFF, "IHDR CRC must stay valid"


def test_oddities_are_valid_and_described(corpus_a):
    out, _ = corpus_a
    odd = json.loads((out / "oddities.json").read_text())
    kinds = {e["kind"] for e in odd.values()}
    assert {"cmyk_jpeg", "gray16_png", "palette_png", "animated_gif", "exif_rotated_jpeg",
            "gray_jpeg", "rgba_png", "one_pixel_png", "corrupt_entropy_jpeg"} <= kinds
    for path, entry in odd.items():
        with Image.open(path) as im:
            upright = ImageOps.exif_transpose(im)
            upright.load()
            assert upright.size == (entry["width"], entry["height"]), entry["kind"]
            assert im.mode == entry["mode"]
        assert entry["borderline"] == (entry["kind"] == "corrupt_entropy_jpeg")
        assert "featured" in entry["allowed_outcomes"]
    by_kind = {e["kind"]: Path(p) for p, e in odd.items()}
    with Image.open(by_kind["exif_rotated_jpeg"]) as im:
        assert im.size == (odd[str(by_kind["exif_rotated_jpeg"])]["height"],
                           odd[str(by_kind["exif_rotated_jpeg"])]["width"])
        upright = np.asarray(ImageOps.exif_transpose(im).convert("L"), np.float32)
    reference = np.asarray(Image.open(by_kind["gray_jpeg"]), np.float32)
    assert np.abs(upright - reference).mean() < 5, "EXIF rotation must restore the upright photo"
    with Image.open(by_kind["animated_gif"]) as gif:
        assert gif.n_frames == 3
        frames = []
        for i in range(3):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB")))
    assert not np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[1], frames[2])
    with Image.open(by_kind["gray16_png"]) as im:
        assert im.mode == "I;16"
    with Image.open(by_kind["one_pixel_png"]) as im:
        assert im.size == (1, 1)
    with Image.open(by_kind["corrupt_entropy_jpeg"]) as im:
        im.load()  # libjpeg decodes it (with warnings)


# --- errors and CLI ------------------------------------------------------------------------------

def test_no_sources_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.data", None)  # makes `import skimage.data` fail
    with pytest.raises(PhotoscoreError, match="plasma-workspace-wallpapers"):
        C.available_sources(tmp_path / "no-wallpapers")


def test_refuses_to_clear_a_directory_that_is_not_a_corpus(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(PhotoscoreError, match="not empty"):
        C.build_corpus(tmp_path, 3, 0, progress=False)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_cli_builds_and_prints_summary(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["corpus", "--out", str(out), "--n", "12", "--seed", "1", "--no-progress"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"corpus {out.resolve()}: 12 photos, clean ")
    for col in C.LABEL_COLUMNS:
        assert f" {col} " in line
    labels = pd.read_parquet(out / "labels.parquet")
    assert len(labels) == 12 and len(list((out / "photos").iterdir())) == 12
    # Rebuilding a smaller corpus in place leaves no stale photos behind.
    assert cli_main(["corpus", "--out", str(out), "--n", "5", "--no-progress"]) == 0
    assert len(list((out / "photos").iterdir())) == 5
    assert not (out / "broken.json").exists()


def test_cli_error_exits_1(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("x")
    assert cli_main(["corpus", "--out", str(tmp_path), "--n", "3", "--no-progress"]) == 1
    assert "not empty" in capsys.readouterr().err
