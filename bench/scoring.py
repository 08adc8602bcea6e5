"""Scoring throughput and latency of every export against the native library, single thread.

    .venv/bin/python bench/scoring.py [--features PATH.parquet] [--rows 100000]

Trains XGBoost and LightGBM with 300 trees of depth 8 (the training default) on synthetic 20-feature
data (or on the feature columns of a features parquet, with a synthetic label), writes a bundle,
generates the exports and times: rows/s at batch `--rows` (best of 3) and per-call latency at batch 1
and 100 (median of many calls). Everything runs on one thread (OMP/nthread/onnxruntime = 1).
The Java cell goes through the batch harness (a JVM start per call), so its figure includes JVM start
and file I/O; Spark calls the jar in-process. Python's and Java's rows/s are measured on smaller batches.
Ends with one `bench: name=scoring model=...` line per model.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "PHOTOSCORE_SCORER_THREADS"):
    os.environ[_var] = "1"  # before numpy/xgboost/lightgbm/onnxruntime start their thread pools

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import codegen  # noqa: E402
from udfs.bundle import write_checksums  # noqa: E402
from udfs.scorers import load_scorer  # noqa: E402

N_TREES, DEPTH = 300, 8
PYTHON_ROWS = 2000
JAVA_ROWS = 20000


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


def onnx_export(bundle_dir: Path) -> str:
    """Write model.onnx with the models engineer's exporter if importable; returns how."""
    for module in ("models.export", "models.onnx_export"):
        try:
            export_onnx = __import__(module, fromlist=["export_onnx"]).export_onnx
        except (ImportError, AttributeError):
            continue
        export_onnx(bundle_dir)
        return module
    raise ImportError("no ONNX exporter (models.export / models.onnx_export) importable")


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
    exports = codegen.generate_exports(bundle_dir)
    t_gen = time.perf_counter() - t0
    try:
        onnx_how = onnx_export(bundle_dir)
    except Exception as exc:  # the ONNX cell is optional in this bench; say why it is missing
        onnx_how = f"unavailable ({exc})"
    write_checksums(bundle_dir)
    print(f"\n== {model_type}: {N_TREES} trees x depth {DEPTH}, {x.shape[1]} features; train {t_train:.1f}s, "
          f"codegen+builds {t_gen:.1f}s, onnx via {onnx_how}")

    cells = {"native": native}
    for fmt in ("onnx", "m2cgen-c", "m2cgen-python", "m2cgen-java"):
        if fmt == "onnx" and onnx_how.startswith("unavailable"):
            continue
        if fmt != "onnx" and not exports[fmt]["available"]:
            continue
        cells[fmt] = load_scorer(bundle_dir, fmt).score

    reference = native(x[:5000])
    rows = {}
    for name, fn in cells.items():
        sample = x[:PYTHON_ROWS] if name == "m2cgen-python" else x[:JAVA_ROWS] if name == "m2cgen-java" else x
        diff = float(np.abs(fn(x[:5000]) - reference).max())
        rps = rows_per_second(fn, sample, repeats=1 if name in ("m2cgen-python", "m2cgen-java") else 3)
        lat1 = lat100 = None
        if name != "m2cgen-java":
            lat1 = latency_us(fn, x, 1, 300 if name != "m2cgen-python" else 50)
            lat100 = latency_us(fn, x, 100, 100 if name != "m2cgen-python" else 5)
        rows[name] = (rps, lat1, lat100, diff, len(sample))

    base = rows["native"][0]
    print(f"{'export':<15}{'rows/s':>12}{'x native':>10}{'batch1 us':>12}{'batch100 us':>13}{'max|d|':>11}  rows")
    for name, (rps, l1, l100, diff, n) in rows.items():
        fmt_us = lambda v: f"{v:12.1f}" if v is not None else f"{'n/a':>12}"  # noqa: E731
        print(f"{name:<15}{rps:12.0f}{rps / base:10.2f}{fmt_us(l1)}{fmt_us(l100):>13}{diff:11.1e}  {n}")
    timed = {k: v for k, v in rows.items() if k != "native"}
    fastest = max(timed, key=lambda k: timed[k][0])
    latency_best = min(v[1] for v in rows.values() if v[1] is not None)
    return {
        "model": model_type,
        "fastest": fastest,
        "fastest_over_native": timed[fastest][0] / base,
        "onnx_over_native": rows["onnx"][0] / base if "onnx" in rows else float("nan"),
        "c_over_native": rows["m2cgen-c"][0] / base if "m2cgen-c" in rows else float("nan"),
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
        print(f"bench: name=scoring model={s['model']} fastest={s['fastest']} "
              f"fastest_over_native={s['fastest_over_native']:.2f} onnx_over_native={s['onnx_over_native']:.2f} "
              f"c_over_native={s['c_over_native']:.2f} batch1_us={s['batch1_us']:.1f} "
              f"native_rows_s={s['native_rows_s']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
