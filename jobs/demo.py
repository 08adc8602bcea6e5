"""`make demo`: the main job on the embedded default, step by step, through the same commands a
person would type (`photoscore corpus`, `photoscore features`, ...)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from jobs.cli import main as photoscore
from models.corpus import LABEL_COLUMNS

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
