"""`make demo`: the main job on the embedded default, step by step, through the same commands a
person would type (`photoscore corpus`, `photoscore features`, ...)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from jobs.cli import main as photoscore
from jobs.config import load_settings
from jobs.demo_monitor import run_monitor_demo
from jobs.demo_spark import run_spark_demo
from jobs.demo_stream import run_stream_demo
from models.corpus import LABEL_COLUMNS
from models.registry import list_versions

MODEL_NAME = "photo_quality"
# Demo-sized models keep `make demo` quick; `photoscore train` defaults to 300 trees x depth 8.
DEMO_MODEL_SIZE = ["--trees", "100", "--depth", "6"]

SUMMARY_FEATURES = {
    "blurred": "sharpness",
    "dark": "mean_luma",
    "overexposed": "clipped_bright_frac",
    "noisy": "noise_sigma",
    "has_text": "text_likeness",
}


def step(title: str, argv: list[str]) -> None:
    """Run one `photoscore` command, echoing it first; stop the demo if it fails."""
    print(f"\n== {title}\n$ photoscore {' '.join(argv)}", flush=True)
    started = time.monotonic()
    code = photoscore(argv)
    if code != 0:
        sys.exit(f"demo: `photoscore {' '.join(argv)}` failed with exit code {code}")
    print(f"({time.monotonic() - started:.1f} s)", flush=True)


def lifecycle_step(title: str, argv: list[str]) -> None:
    """`step` for the lifecycle DAG, whose run fails on purpose when a rollout stage's comparison
    does: the demo goes on when the audit trail's newest event is that stopped rollout (and shows
    it), and stops on any other failure."""
    print(f"\n== {title}\n$ photoscore {' '.join(argv)}", flush=True)
    started = time.monotonic()
    if photoscore(argv) != 0:
        from models.rollouts import history

        last = (history(load_settings(), MODEL_NAME) or [{}])[-1]
        if last.get("action") != "rollout_stop" or not str(last.get("who", "")).startswith("airflow:"):
            sys.exit(f"demo: `photoscore {' '.join(argv)}` failed")
        print(f"the staged rollout stopped the challenger: {last['why']}\n"
              f"(the champion stays v{last['to']}; `photoscore models --history` shows the trail)", flush=True)
    print(f"({time.monotonic() - started:.1f} s)", flush=True)


def feature_summary(features: pd.DataFrame, labels: pd.DataFrame, quarantine: pd.DataFrame) -> str:
    """Counts, quarantine reasons, and one telling feature per label: degraded vs clean medians."""
    joined = features.merge(labels, on="photo_id", how="inner")
    clean = joined[~joined["low_quality"]]
    lines = [f"featured {len(features)}, quarantined {len(quarantine)}"]
    for reason, count in quarantine["reason_code"].value_counts().sort_index().items():
        lines.append(f"  quarantined {reason}: {count}")
    lines.append(f"  {'label':12s} {'feature':20s} {'degraded (median)':>18s} {'clean (median)':>15s}")
    for label in LABEL_COLUMNS:
        feature = SUMMARY_FEATURES.get(label)
        if feature is None:
            continue
        degraded = joined[joined[label]]
        lines.append(f"  {label:12s} {feature:20s} {degraded[feature].median():18.4f} "
                     f"{clean[feature].median():15.4f}   (n={len(degraded)} vs {len(clean)})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="where the demo writes its data")
    parser.add_argument("--n", type=int, default=200, help="corpus size")
    args = parser.parse_args(argv)
    corpus, features_dir = args.dir / "corpus", args.dir / "features"

    step("1. A labelled corpus from real photos, plus broken files",
         ["corpus", "--out", str(corpus), "--n", str(args.n), "--seed", "1", "--broken", "--no-progress"])
    step("2. Features for every photo; broken files are quarantined with a reason",
         ["features", "--input", str(corpus / "photos"), str(corpus / "broken"), str(corpus / "oddities"),
          "--out", str(features_dir), "--workers", "2"])
    features = pd.read_parquet(features_dir / "features.parquet")
    quarantine = pd.read_parquet(features_dir / "quarantine.parquet")
    labels = pd.read_parquet(corpus / "labels.parquet")
    print(feature_summary(features, labels, quarantine))

    for model_type in ("xgboost", "lightgbm", "catboost", "logreg"):
        step(f"3. Train {model_type}, export it three ways, gate every export on parity, register it",
             ["train", "--features", str(features_dir / "features.parquet"), "--labels",
              str(corpus / "labels.parquet"), "--target", "low_quality", "--model", model_type,
              "--name", MODEL_NAME, *(DEMO_MODEL_SIZE if model_type != "logreg" else [])])
    latest = latest_versions(MODEL_NAME)
    step("4. Promote XGBoost to champion and LightGBM to challenger",
         ["promote", "--name", MODEL_NAME, "--version", str(latest["xgboost"]), "--alias", "champion"])
    photoscore(["promote", "--name", MODEL_NAME, "--version", str(latest["lightgbm"]), "--alias", "challenger"])
    step("5. The registry and the parity matrix", ["models", "--name", MODEL_NAME, "--parity"])
    step("6. Score every featured photo locally with the champion's compiled C export",
         ["score", "--model", f"models:/{MODEL_NAME}@champion", "--format", "code-c",
          "--features", str(features_dir / "features.parquet"), "--out", str(args.dir / "scores.parquet")])

    print("\n== 7. Spark: backfill features and scores with spark-submit (JVM-native scoring), "
          "then the 10 lowest-quality photos by Spark SQL", flush=True)
    run_spark_demo(load_settings(), corpus, args.dir / "tables",
                   model_uri=f"models:/{MODEL_NAME}@champion", export_format="code-java")

    print("\n== 8. Stream: broker, topics, the PyFlink job; upload the corpus, watch scores and "
          "dead letters arrive; then roll the challenger out on the running job: shadow, canary 30 %, "
          "promote, rollback", flush=True)
    run_stream_demo(load_settings(), corpus)

    lifecycle = {"features": str(features_dir / "features.parquet"), "labels": str(corpus / "labels.parquet"),
                 "model_types": ["lightgbm"], "approve": True, "tables": str(args.dir / "tables"),
                 "format": "native"}
    lifecycle_step("9. Airflow: the model lifecycle DAG (train, gate, compare with the champion on the held-out "
                   "split; a winner goes through shadow -> canary 5 % -> canary 50 % with a comparison after "
                   "each stage, then approval by param), run end to end with `airflow dags test`",
                   ["airflow", "test", "photoscore_model_lifecycle", "--conf", json.dumps(lifecycle)])
    backfill = {"input": [str(corpus / "photos")], "tables": str(args.dir / "tables"), "model":
                f"models:/{MODEL_NAME}@champion", "format": "m2cgen-java"}
    step("10. Airflow: the backfill DAG over the same photos (nothing new: nothing is decoded), then reconcile",
         ["airflow", "test", "photoscore_backfill", "--conf", json.dumps(backfill)])
    print("\n== 11. Monitor: the demo tables against the champion's reference profile (quiet), then a "
          "darkened batch (an alarm); each run writes drift.json and a self-contained report.html", flush=True)
    run_monitor_demo(load_settings(), corpus, args.dir / "tables", args.dir, f"models:/{MODEL_NAME}@champion")
    print("\nThe same DAGs on a real scheduler: `photoscore airflow up`, then open the printed URL "
          "(user admin, password printed); `photoscore airflow down` stops it.", flush=True)
    return 0


def latest_versions(name: str) -> dict[str, int]:
    """The newest registered version of `name` per model type."""
    latest: dict[str, int] = {}
    for row in list_versions(load_settings(), name):
        latest[row["model_type"]] = max(latest.get(row["model_type"], 0), row["version"])
    return latest


if __name__ == "__main__":
    sys.exit(main())
