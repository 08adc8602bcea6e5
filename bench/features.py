"""Feature extraction speed on 18 MP JPEGs and on small uploads, one core, in one run.

The photos: the photographic wallpapers of plasma-workspace-wallpapers (4 MP) enlarged to 18 MP
(5184 x 3456, a common camera size) with per-pixel grain, so the JPEG carries about as much entropy
as a camera's (the bytes per pixel are printed), saved at quality 90 as baseline and progressive.

(a) the limit: a bare libjpeg 1/8 DCT-scaled decode (Pillow draft mode; nothing else);
(b) photoscore's extractor: sha256 + bounded decode + all features (`udfs.features.extract_features`);
(c) the naive path: Pillow full decode + the same kind of features in numpy on the full image
    (without face detection, which would only make it slower).
Baseline and progressive JPEGs are reported separately: entropy decoding bounds progressive files.
The three are interleaved per photo and repeated, and medians are compared, so machine noise hits
all of them alike. (b) is the newest feature version; v1's extractor is timed beside it (b1).

Small uploads (the stream's photos, <= 0.5 MP: the same wallpapers at 0.3 and 0.5 MP, q90): (d) the
bare libjpeg decode to the working size (the DCT scale `udfs.decode` picks, nothing else) against
(b) and (b1), interleaved the same way.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from models.corpus import available_sources, load_source  # noqa: E402
from udfs.decode import dct_scale  # noqa: E402
from udfs.features import FEATURE_VERSION, extract_features, feature_set  # noqa: E402

PHOTOS_60B = 60e9
CAMERA_SIZE = (5184, 3456)
GRAIN_SIGMA = 2.5  # levels of per-pixel, per-channel sensor grain
SMALL_MEGAPIXELS = (0.3, 0.5)
V1 = 1


def make_bench_photos(out_dir: Path, count: int) -> list[str]:
    """18 MP q90 baseline and progressive JPEGs from real photos (cached in `out_dir`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = [s for s in available_sources() if s.kind == "wallpaper" and not s.flat][:count]
    if not sources:
        raise SystemExit("no photographic wallpaper found: install plasma-workspace-wallpapers")
    rng = np.random.default_rng(18)
    paths = []
    for source in sources:
        targets = [out_dir / f"{source.name}_18mp_{kind}.jpg" for kind in ("baseline", "progressive")]
        if not all(t.exists() for t in targets):
            image = ImageOps.fit(load_source(source).convert("RGB"), CAMERA_SIZE, Image.Resampling.BICUBIC)
            pixels = np.asarray(image, dtype=np.float32)
            pixels += rng.normal(0.0, GRAIN_SIGMA, pixels.shape).astype(np.float32)
            image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
            for target, progressive in zip(targets, (False, True)):
                image.save(target, "JPEG", quality=90, progressive=progressive)
        paths.extend(str(t) for t in targets)
    return paths


def make_small_photos(out_dir: Path, count: int) -> list[str]:
    """0.3 and 0.5 MP q90 baseline JPEGs of the same photographs (cached in `out_dir`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = [s for s in available_sources() if s.kind == "wallpaper" and not s.flat][:count]
    paths = []
    for source in sources:
        for mp in SMALL_MEGAPIXELS:
            target = out_dir / f"{source.name}_{mp}mp.jpg"
            if not target.exists():
                image = load_source(source).convert("RGB")
                f = (mp * 1e6 / (image.width * image.height)) ** 0.5
                image = image.resize((round(image.width * f), round(image.height * f)), Image.Resampling.LANCZOS)
                image.save(target, "JPEG", quality=90)
            paths.append(str(target))
    return paths


def decode_to_working_size(data: bytes) -> np.ndarray:
    """(d) libjpeg's decode at the DCT scale the extractor's decode picks, and nothing else."""
    image = Image.open(io.BytesIO(data))
    scale = dct_scale(max(image.size), feature_set(FEATURE_VERSION).working_side)
    image.draft("RGB", (image.width // scale, image.height // scale))
    return np.asarray(image)


def bare_decode(data: bytes) -> np.ndarray:
    """(a) libjpeg's 1/8 DCT-scaled decode and nothing else."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (image.width // 8, image.height // 8))
    return np.asarray(image)


def naive_features(data: bytes) -> list[float]:
    """(c) what a first version would do: decode everything, compute features on every pixel."""
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    gray = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    mx, mn = rgb.max(axis=2), rgb.min(axis=2)
    saturation = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    lap = gray[1:-1, :-2] + gray[1:-1, 2:] + gray[:-2, 1:-1] + gray[2:, 1:-1] - 4 * gray[1:-1, 1:-1]
    gx, gy = np.abs(np.diff(gray, axis=1))[:-1], np.abs(np.diff(gray, axis=0))[:, :-1]
    noise = (gray[:-2, :-2] - 2 * gray[:-2, 1:-1] + gray[:-2, 2:] - 2 * gray[1:-1, :-2] + 4 * gray[1:-1, 1:-1]
             - 2 * gray[1:-1, 2:] + gray[2:, :-2] - 2 * gray[2:, 1:-1] + gray[2:, 2:])
    small = np.asarray(Image.fromarray(gray.astype(np.uint8)).resize((9, 8)), dtype=np.int16)
    return [
        float(gray.mean()), float(gray.std()), float((gray <= 5).mean()), float((gray >= 250).mean()),
        float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())),
        float(saturation.mean()), float(lap.var()), float(((gx + gy) > 60).mean()),
        float(np.abs(noise).mean()), float(np.packbits(small[:, 1:] > small[:, :-1]).view(">i8")[0]),
    ]


def time_once(fn, data: bytes) -> float:
    start = time.perf_counter()
    fn(data)
    return time.perf_counter() - start


def measure(paths: list[str], repeats: int, small: bool = False) -> list[dict]:
    """Median ms per photo of each contender, interleaved per photo."""
    rows = []
    for path in paths:
        data = open(path, "rb").read()
        contenders = {
            "a": decode_to_working_size if small else bare_decode,
            "b": lambda d: extract_features(d, path),
            "b1": lambda d: extract_features(d, path, version=V1),
            **({} if small else {"c": naive_features}),
        }
        for fn in contenders.values():
            fn(data)  # warm caches and lazily loaded models (the face cascade)
        times = {k: [] for k in contenders}
        for _ in range(repeats):
            for key, fn in contenders.items():
                times[key].append(time_once(fn, data))
        with Image.open(path) as im:
            progressive = bool(im.info.get("progressive") or im.info.get("progression"))
            mp = im.width * im.height / 1e6
        rows.append({"path": path, "mp": mp, "progressive": progressive, "bpp": len(data) / (mp * 1e6),
                     **{k: statistics.median(v) * 1e3 for k, v in times.items()}})
    return rows


def summarize(rows: list[dict]) -> dict:
    a = statistics.fmean(r["a"] for r in rows)
    b = statistics.fmean(r["b"] for r in rows)
    b1 = statistics.fmean(r["b1"] for r in rows)
    c = statistics.fmean(r["c"] for r in rows) if "c" in rows[0] else float("nan")
    return {"n": len(rows), "a_ms": a, "b_ms": b, "b1_ms": b1, "c_ms": c, "b_over_a": b / a,
            "b1_over_a": b1 / a, "c_over_b": c / b, "pps_core": 1e3 / b,
            "core_hours_60b": PHOTOS_60B * b / 1e3 / 3600}


def report_small(rows: list[dict]) -> dict:
    """Print the small-upload table; returns its summary."""
    print(f"{'small photo':34s} {'MP':>5s} {'(d) decode':>10s} {'(b) v' + str(FEATURE_VERSION):>9s} "
          f"{'(b1) v1':>9s} {'b/d':>5s} {'b1/d':>5s}")
    for r in rows:
        print(f"{Path(r['path']).name:34s} {r['mp']:5.2f} {r['a']:8.2f}ms {r['b']:7.2f}ms {r['b1']:7.2f}ms "
              f"{r['b'] / r['a']:5.2f} {r['b1'] / r['a']:5.2f}")
    s = summarize(rows)
    print(f"small uploads: (d) {s['a_ms']:.2f} ms, (b) v{FEATURE_VERSION} {s['b_ms']:.2f} ms = "
          f"{s['b_over_a']:.2f}x, (b1) v1 {s['b1_ms']:.2f} ms = {s['b1_over_a']:.2f}x  (goal: b/d <= 2.5)")
    return s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path,
                        default=Path(os.environ.get("PHOTOSCORE_HOME", ".photoscore")) / "bench" / "photos18mp")
    parser.add_argument("--sources", type=int, default=4, help="photographic sources (x2 files)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small-repeats", type=int, default=15, help="repeats per small photo")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    paths = make_bench_photos(args.dir, args.sources)
    small = report_small(measure(make_small_photos(args.dir.parent / "small", args.sources),
                                 args.small_repeats, small=True))
    print()
    rows = measure(paths, args.repeats)
    print(f"{'photo':34s} {'MP':>5s} {'B/px':>5s} {'kind':>5s} {'(a) limit':>10s} {'(b) ours':>9s} "
          f"{'(b1) v1':>9s} {'(c) naive':>10s} {'b/a':>5s} {'b1/a':>5s} {'c/b':>5s}")
    for r in rows:
        print(f"{Path(r['path']).name:34s} {r['mp']:5.1f} {r['bpp']:5.2f} {'prog' if r['progressive'] else 'base':>5s} "
              f"{r['a']:8.1f}ms {r['b']:7.1f}ms {r['b1']:7.1f}ms {r['c']:8.1f}ms {r['b'] / r['a']:5.2f} "
              f"{r['b1'] / r['a']:5.2f} {r['c'] / r['b']:5.1f}")
    groups = {kind: [r for r in rows if r["progressive"] == prog]
              for kind, prog in (("baseline", False), ("progressive", True))}
    summaries = {kind: summarize(g) for kind, g in groups.items() if g}
    print()
    print(f"{'kind':12s} {'n':>3s} {'(a) ms':>8s} {'(b) ms':>8s} {'(b1) ms':>8s} {'(c) ms':>8s} {'b/a':>5s} "
          f"{'b1/a':>5s} {'c/b':>6s} {'photos/s/core':>14s} {'core-h / 60 B':>14s}")
    for kind, s in summaries.items():
        print(f"{kind:12s} {s['n']:3d} {s['a_ms']:8.1f} {s['b_ms']:8.1f} {s['b1_ms']:8.1f} {s['c_ms']:8.1f} "
              f"{s['b_over_a']:5.2f} {s['b1_over_a']:5.2f} {s['c_over_b']:6.1f} {s['pps_core']:14.1f} "
              f"{s['core_hours_60b']:14.3g}")
    print("goals: b/a <= 1.3, c/b >= 5 (baseline photos; the last line reports baseline, the camera default); "
          "small uploads b/d <= 2.5")
    main_kind = summaries.get("baseline") or next(iter(summaries.values()))
    extra = ""
    if "progressive" in summaries:
        p = summaries["progressive"]
        extra = (f" progressive_ours_over_limit={p['b_over_a']:.2f} progressive_photos_per_s_core="
                 f"{p['pps_core']:.1f}")
    print(f"bench: name=features ours_over_limit={main_kind['b_over_a']:.2f} "
          f"naive_over_ours={main_kind['c_over_b']:.1f} photos_per_s_core={main_kind['pps_core']:.1f} "
          f"core_hours_60b={main_kind['core_hours_60b']:.4g}{extra} feature_version={FEATURE_VERSION} "
          f"v1_ours_over_limit={main_kind['b1_over_a']:.2f} small_ours_over_decode={small['b_over_a']:.2f} "
          f"small_v1_over_decode={small['b1_over_a']:.2f} small_decode_ms={small['a_ms']:.2f} "
          f"small_ours_ms={small['b_ms']:.2f}")


if __name__ == "__main__":
    main()
