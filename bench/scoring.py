"""Scoring throughput and latency of every export against the native library, single thread.

    .venv/bin/python bench/scoring.py [--features PATH.parquet] [--rows 100000]

Trains XGBoost and LightGBM with 300 trees of depth 8 (the training default) on synthetic 20-feature
data (or on the feature columns of a features parquet, with a synthetic label), writes a bundle,
runs every registered export format's build step (udfs/formats/) and times: rows/s at batch `--rows` (best of 3) and per-call latency at batch 1
and 100 (median of many calls). Everything runs on one thread (OMP/nthread/onnxruntime = 1).
A format that starts a process per call (the generated Java's batch harness: a JVM start per call)
includes that start and file I/O in its figure, and has no latency figure; Spark calls the jar
in-process. Interpreted and per-call formats are timed on smaller batches.
Ends with one `bench: name=scoring model=...` line per model.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy/xgboost/lightgbm/onnxruntime start their thread pools

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from udfs.bundle import write_checksums  # noqa: E402
from udfs.formats import all_formats, load_unchecked, reference_format  # noqa: E402

N_TREES, DEPTH = 300, 8
# Rows timed per export cost (udfs/formats/): interpreted per row, or a process started per call.
SAMPLE_ROWS = {"per_row": 2000, "per_call": 20000}


def load_features(path: str | None, n: int, seed: int) -> np.ndarray:
    """float32 (n, 20): synthetic, or rows resampled from a features parquet's feature columns."""
    rng = np.random.default_rng(seed)
    if path is None:
        return rng.normal(size=(n, 20)).astype(np.float32)
    import pandas as pd

    from udfs.features import FEATURE_NAMES

    frame = pd.read_parquet(path, columns=list(FEATURE_NAMES))
    x = frame.to_numpy(dtype=np.float32)
    return x[rng.integers(0, len(x), size=n)]


def synthetic_label(x: np.ndarray, seed: int) -> np.ndarray:
    """A nonlinear label over standardised features, so trees grow to full depth."""
    z = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-9)
    rng = np.random.default_rng(seed)
    logit = z[:, 0] + z[:, 1] * z[:, 2] + np.sin(2 * z[:, 3]) + 0.5 * z[:, 4] * z[:, 5]
    return (logit + rng.normal(size=len(z)) > 0).astype(int)


def write_bundle(bundle_dir: Path, model_type: str, x: np.ndarray, y: np.ndarray):
    """Train, save the native file and the manifests; returns a native `predict(x) -> p1`."""
    bundle_dir.mkdir(parents=True)
    if model_type == "xgboost":
        import xgboost as xgb

        model = xgb.XGBClassifier(n_estimators=N_TREES, max_depth=DEPTH, n_jobs=1).fit(x, y)
        native = "model.json"
        model.save_model(bundle_dir / native)

        def predict(rows):
            return model.predict_proba(rows)[:, 1]
    else:
        import lightgbm as lgb

        clf = lgb.LGBMClassifier(n_estimators=N_TREES, max_depth=DEPTH, num_leaves=2**DEPTH, n_jobs=1,
                                 verbose=-1).fit(x, y)
        native = "model.txt"
        clf.booster_.save_model(str(bundle_dir / native))
        booster = lgb.Booster(model_file=str(bundle_dir / native))

        def predict(rows):
            return booster.predict(rows, num_threads=1)
    width = x.shape[1]
    (bundle_dir / "bundle.json").write_text(json.dumps(
        {"bundle_version": 1, "model_type": model_type, "native_file": native, "exports": {}}))
    (bundle_dir / "feature_schema.json").write_text(json.dumps(
        {"feature_version": 1, "features": [{"name": f"f{i}", "dtype": "float32"} for i in range(width)]}))
    return predict


def rows_per_second(fn, x: np.ndarray, repeats: int = 3) -> float:
    """Best of `repeats` timed calls on the whole batch (after one warm-up)."""
    fn(x[: min(len(x), 1000)])
    best = min(_timed(fn, x) for _ in range(repeats))
    return len(x) / best


def _timed(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def latency_us(fn, x: np.ndarray, batch: int, calls: int) -> float:
    """Median wall time of `calls` calls on `batch` rows, in microseconds."""
    fn(x[:batch])
    times = []
    for i in range(calls):
        start = (i * batch) % (len(x) - batch)
        rows = x[start:start + batch]
        t0 = time.perf_counter()
        fn(rows)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def bench_model(model_type: str, features: str | None, n_rows: int, workdir: Path) -> dict:
    """Figures for one model type; prints its table and returns the summary keys."""
    x_train = load_features(features, 20000, seed=0)
    y_train = synthetic_label(x_train, seed=1)
    x = load_features(features, n_rows, seed=2)
    bundle_dir = workdir / model_type
    t0 = time.perf_counter()
    native = write_bundle(bundle_dir, model_type, x_train, y_train)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    exports = {}
    for fmt in all_formats():
        if fmt.reference:
            continue
        try:
            exports[fmt.id] = fmt.export(bundle_dir)
        except Exception as exc:  # an export that cannot be made here is left out; say why
            exports[fmt.id] = {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    t_gen = time.perf_counter() - t0
    write_checksums(bundle_dir)
    missing = ", ".join(f"{k} ({v['reason']})" for k, v in exports.items() if not v["available"])
    print(f"\n== {model_type}: {N_TREES} trees x depth {DEPTH}, {x.shape[1]} features; train {t_train:.1f}s, "
          f"exports {t_gen:.1f}s" + (f"; unavailable: {missing}" if missing else ""))

    reference = reference_format().id
    cells = {reference: (native, "batch")}
    for fmt in all_formats():
        if not fmt.reference and exports[fmt.id]["available"]:
            # No parity report in a bench bundle: the bench measures the difference itself (max|d|).
            cells[fmt.id] = (load_unchecked(bundle_dir, fmt.id).score, fmt.cost)

    expected = native(x[:5000])
    rows = {}
    for name, (fn, cost) in cells.items():
        sample = x[:SAMPLE_ROWS.get(cost, len(x))]
        diff = float(np.abs(fn(x[:5000]) - expected).max())
        rps = rows_per_second(fn, sample, repeats=3 if cost == "batch" else 1)
        lat1 = lat100 = None
        if cost != "per_call":  # a JVM start per call is no latency figure
            lat1 = latency_us(fn, x, 1, 300 if cost == "batch" else 50)
            lat100 = latency_us(fn, x, 100, 100 if cost == "batch" else 5)
        rows[name] = (rps, lat1, lat100, diff, len(sample))

    base = rows[reference][0]
    print(f"{'export':<15}{'rows/s':>12}{'x native':>10}{'batch1 us':>12}{'batch100 us':>13}{'max|d|':>11}  rows")
    for name, (rps, l1, l100, diff, n) in rows.items():
        fmt_us = lambda v: f"{v:12.1f}" if v is not None else f"{'n/a':>12}"  # noqa: E731
        print(f"{name:<15}{rps:12.0f}{rps / base:10.2f}{fmt_us(l1)}{fmt_us(l100):>13}{diff:11.1e}  {n}")
    timed = {k: v for k, v in rows.items() if k != reference}
    fastest = max(timed, key=lambda k: timed[k][0])
    latency_best = min(v[1] for v in rows.values() if v[1] is not None)
    return {
        "model": model_type,
        "fastest": fastest,
        "fastest_over_native": timed[fastest][0] / base,
        "over_native": {k: v[0] / base for k, v in timed.items()},
        "batch1_us": rows[fastest][1] if rows[fastest][1] is not None else latency_best,
        "native_rows_s": base,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", help="features parquet (udfs.features columns) instead of synthetic data")
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the throughput batch")
    args = parser.parse_args(argv)
    summaries = []
    with tempfile.TemporaryDirectory(prefix="photoscore-bench-") as tmp:
        for model_type in ("xgboost", "lightgbm"):
            summaries.append(bench_model(model_type, args.features, args.rows, Path(tmp)))
    print()
    for s in summaries:
        per_format = " ".join(f"{k.replace('-', '_')}_over_native={v:.2f}" for k, v in s["over_native"].items())
        print(f"bench: name=scoring model={s['model']} fastest={s['fastest']} "
              f"fastest_over_native={s['fastest_over_native']:.2f} {per_format} batch1_us={s['batch1_us']:.1f} "
              f"native_rows_s={s['native_rows_s']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
