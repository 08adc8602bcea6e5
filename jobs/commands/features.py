"""`photoscore features`: extract features from files and folders locally (no engine)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from jobs.local_features import extract_all, list_inputs
from jobs.progress import Progress
from jobs.tables import write_parquet_atomic
from udfs.features import FeatureRow, feature_frame
from udfs.quarantine import quarantine_frame
from udfs.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "features", help="extract photo features locally into DIR/features.parquet",
        description="Extract features from photo files and folders (recursively, hidden files "
                    "skipped). Every input ends in features.parquet or quarantine.parquet.",
    )
    parser.add_argument("--input", nargs="+", required=True, metavar="PATH", help="files and folders")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: one per core)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    uris = list_inputs(args.input)
    featured, quarantined = [], []
    with Progress(len(uris), "photos", "features") as progress:
        for result in extract_all(uris, args.workers, settings.features.limits()):
            (featured if isinstance(result, FeatureRow) else quarantined).append(result)
            progress.update()
    write_parquet_atomic(feature_frame(featured), args.out / "features.parquet")
    write_parquet_atomic(quarantine_frame(quarantined), args.out / "quarantine.parquet")
    print(f"inputs={len(uris)} featured={len(featured)} quarantined={len(quarantined)}")
    return 0
