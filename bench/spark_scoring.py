"""Spark scoring bench: 1 M stored feature rows, one model (default 300 trees, depth 8), `local[2]`.

Rows/s of `mlflow.pyfunc.spark_udf` (the baseline a user would pick; warm) vs each of our paths,
one per registered export format (udfs/formats/) but the ones interpreted per row: a
scalar-iterator Arrow UDF in a Python worker, or, for a format with a JVM kernel, blocks of rows per
kernel call in the executors' JVM; a format whose JVM path has a switch (`spark.c_in_jvm`) also runs
as `<id>-python`, in a Python worker. Then the in-process rows/s of the same scorer x 2 cores (the
limit: Spark adding nothing), and an Arrow UDF that scores nothing (the transfer cost every Python
path pays on the same cores).
Each Spark path runs twice over a cached DataFrame and the second (warm) run is timed; output goes
to Spark's `noop` sink so no write cost is measured. Prints the 60-billion-row rescoring projection.

    .venv/bin/python bench/spark_scoring.py [--rows 1000000] [--trees 300] [--depth 8] [--model-type lightgbm] [--keep]
Last line: `bench: name=spark_scoring spark_udf_rps=... <path>_rps=... best=<path> best_over_spark_udf=...
best_over_limit=...`
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from jobs.config import load_settings
from udfs.features import FEATURE_NAMES, FEATURE_VERSION

CORES = 2
PROJECTION_ROWS = 60e9


def synthetic_features(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Feature rows shaped like the real table, and a label that depends on a few of them."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURE_NAMES))).astype(np.float32)
    X[:, 0] = rng.choice([640, 1024, 1920, 4000], n)
    X[:, 13] = rng.lognormal(5, 1.2, n)
    logit = -1.1 * (np.log(X[:, 13]) - 5) + 0.8 * X[:, 7] + 0.6 * X[:, 16] + rng.normal(0, 0.8, n)
    frame = pd.DataFrame(X, columns=list(FEATURE_NAMES))
    frame.insert(0, "photo_id", [f"b{i:08d}" for i in range(n)])
    frame.insert(1, "content_sha256", [f"{i:064x}" for i in range(n)])
    frame.insert(2, "feature_version", np.int32(FEATURE_VERSION))
    return frame, (logit > 0)


def register_model(settings, model_type: str, trees: int, depth: int, workdir: Path) -> str:
    """Train and register the bench model on 20 k synthetic rows; returns its models:/ URI."""
    from models.train import train_and_register
    from models.trainers import TrainParams

    frame, y = synthetic_features(20_000, seed=1)
    labels = pd.DataFrame({"photo_id": frame["photo_id"], "low_quality": y,
                           "source_photo": frame["photo_id"], "duplicate_of": pd.NA})
    frame.to_parquet(workdir / "train_features.parquet", index=False)
    labels.to_parquet(workdir / "train_labels.parquet", index=False)
    result = train_and_register(workdir / "train_features.parquet", workdir / "train_labels.parquet",
                                "low_quality", model_type, "bench_scoring", settings,
                                TrainParams(trees=trees, depth=depth))
    return f"models:/bench_scoring/{result.version}"


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def in_process_rps(scorer, X: np.ndarray) -> float:
    """Rows/s of `scorer` over all of `X` in this process, after a warm-up call."""
    scorer.score(X[:10_000])
    return len(X) / timed(lambda: scorer.score(X))


def warm_seconds(frame) -> float:
    """Second run of writing `frame` to the noop sink (the first warms workers and loads models)."""
    write = lambda: frame.write.format("noop").mode("overwrite").save()  # noqa: E731
    write()
    return timed(write)


def identity_arrays(batches):
    """Arrow UDF body doing no scoring (first feature as the score): the cost of moving features
    to Python and scores back, the floor under every Python path."""
    import numpy as np
    import pyarrow as pa

    for rows in batches:
        X = rows.flatten().to_numpy(zero_copy_only=False).reshape(len(rows), -1)
        yield pa.array(X[:, 0].astype(np.float64))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--trees", type=int, default=300)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--model-type", choices=("xgboost", "lightgbm"), default="xgboost",
                        help="tree library of the bench model (both have every export)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="settings override, e.g. spark.jvm_block_rows=4096")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (model, data) for a look")
    args = parser.parse_args(argv)

    from jobs.backfill_scores import score_frame_spark
    from jobs.spark_session import get_session
    from models.registry import resolve_bundle
    from udfs.bundle import read_feature_schema
    from udfs.formats import all_formats, load_scorer

    workdir = Path(tempfile.mkdtemp(prefix="photoscore-bench-scoring-"))
    try:
        os.environ["PHOTOSCORE_HOME"] = str(workdir / "home")
        settings = load_settings(args.overrides)
        print(f"training and registering {args.model_type} {args.trees} trees depth {args.depth} ...", flush=True)
        model_uri = register_model(settings, args.model_type, args.trees, args.depth, workdir)
        name, version, bundle = resolve_bundle(model_uri, settings)
        names = list(read_feature_schema(bundle).names)

        frame, _ = synthetic_features(args.rows, seed=2)
        data_path = workdir / "features.parquet"
        frame.to_parquet(data_path, index=False, row_group_size=100_000)
        X = frame[names].to_numpy(np.float32)

        # Interpreted-per-row formats would take hours over a million rows.
        path_formats = {}
        for fmt in all_formats():
            if fmt.cost != "per_row":
                path_formats[fmt.id] = (fmt.id, settings)
            if fmt.jvm_kernel is not None and fmt.jvm_switch:
                path_formats[f"{fmt.id}-python"] = (fmt.id, load_settings([*args.overrides, f"spark.{fmt.jvm_switch}=false"]))

        spark = get_session(settings.spark, "photoscore-bench-scoring", master=f"local[{CORES}]")
        results: dict[str, float] = {}
        try:
            df = spark.read.parquet(str(data_path)).repartition(CORES * 4).cache()
            df.count()
            import mlflow.pyfunc
            from pyspark.sql import functions as F

            from models.registry import _mlflow

            _mlflow(settings)
            udf = mlflow.pyfunc.spark_udf(spark, model_uri, result_type="double", env_manager="local")
            results["spark_udf"] = warm_seconds(df.select(udf(*[F.col(n) for n in names]).alias("score")))
            print(f"  spark_udf      {args.rows / results['spark_udf']:>12,.0f} rows/s", flush=True)
            for path, (fmt, cfg) in path_formats.items():
                scored = score_frame_spark(spark, cfg, df, bundle, names, fmt, name)
                results[path] = warm_seconds(scored)
                print(f"  {path:<15} {args.rows / results[path]:>12,.0f} rows/s", flush=True)
            from pyspark.sql.functions import ArrowUDFType, arrow_udf

            identity = arrow_udf(identity_arrays, "double", ArrowUDFType.SCALAR_ITER)
            transfer = args.rows / warm_seconds(df.select(
                "photo_id", "content_sha256", identity(F.array(*[F.col(n).cast("float") for n in names])).alias("score")))
            print(f"  {'arrow-identity':<14} {transfer:>12,.0f} rows/s (Arrow UDF that scores nothing)", flush=True)
        finally:
            spark.stop()

        rps = {k: args.rows / v for k, v in results.items()}
        paths = [k for k in rps if k != "spark_udf"]
        best = max(paths, key=rps.get)
        # Every in-process scorer alone, one thread each (the onnx path's ceiling is onnxruntime's
        # tree ensemble, next to the library's own predictor, which spark_udf runs).
        one_core = {f.id: in_process_rps(load_scorer(bundle, f.id), X) for f in all_formats() if f.cost == "batch"}
        # The limit: the best path's scorer in-process; a format that starts a process per call has
        # no in-process scorer, so the fastest one stands in for it.
        in_process_fmt = path_formats[best][0] if path_formats[best][0] in one_core else max(one_core, key=one_core.get)
        limit = CORES * one_core[in_process_fmt]
        print()
        print("in-process, 1 thread: " + ", ".join(f"{fmt} {v:,.0f} rows/s" for fmt, v in one_core.items()))
        print(f"{'path':<15} {'rows/s':>12} {'x spark_udf':>12} {'of limit':>9}")
        for key in ["spark_udf", *paths]:
            print(f"{key:<15} {rps[key]:>12,.0f} {rps[key] / rps['spark_udf']:>12.2f} {rps[key] / limit:>9.2f}")
        print(f"{'limit':<15} {limit:>12,.0f}   ({in_process_fmt} in-process x {CORES} cores)")
        # Transfer and scoring share the same cores: a Python path cannot beat 1 / (1/transfer + 1/limit).
        ceiling = 1 / (1 / transfer + 1 / limit)
        print(f"{'arrow-identity':<15} {transfer:>12,.0f}   (Arrow round trip alone; Python-path ceiling "
              f"1/(1/transfer + 1/limit) = {ceiling:,.0f} rows/s = {ceiling / limit:.2f} of the limit)")
        core_hours = PROJECTION_ROWS / (rps[best] / CORES) / 3600
        print(f"projection: rescoring 60 billion photos with {best} at {rps[best] / CORES:,.0f} rows/s per core "
              f"= {core_hours:,.0f} core-hours ({args.model_type} {args.trees} trees depth {args.depth})")
        print(f"bench: name=spark_scoring model={args.model_type} rows={args.rows} trees={args.trees} depth={args.depth} "
              f"spark_udf_rps={rps['spark_udf']:.0f} "
              + " ".join(f"{k.replace('-', '_')}_rps={rps[k]:.0f}" for k in paths)
              + f" limit_rps={limit:.0f} best={best} best_over_spark_udf={rps[best] / rps['spark_udf']:.2f} "
              f"best_over_limit={rps[best] / limit:.2f} "
              f"arrow_identity_rps={transfer:.0f} python_ceiling_over_limit={ceiling / limit:.2f} "
              + "".join(f"{fmt.replace('-', '_')}_1core_rps={v:.0f} " for fmt, v in one_core.items()) +
              f"rescoring_core_hours_60b={core_hours:.0f}")
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
