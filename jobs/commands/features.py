"""`photoscore features`: extract features from files and folders locally (no engine)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from jobs.local_features import extract_all, list_inputs
from jobs.progress import Progress
from jobs.tables import write_parquet_atomic
from udfs.features import FeatureRow, feature_frame, feature_set
from udfs.photo_io import photo_reader
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
    parser.add_argument("--feature-version", type=int, default=None, metavar="N",
                        help="feature version to compute (default: config features.version)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    version = (settings.features.feature_version() if args.feature_version is None
               else feature_set(args.feature_version).version)
    uris = list_inputs(args.input)
    # The paths named on --input are the operator's choice: readable for this run besides
    # storage.photo_roots; a symlink inside them that leads out of both is refused.
    reader = photo_reader(settings, args.input)
    featured, quarantined = [], []
    with Progress(len(uris), "photos", "features") as progress:
        for result in extract_all(uris, args.workers, settings.features.limits(), reader, version):
            (featured if isinstance(result, FeatureRow) else quarantined).append(result)
            progress.update()
    write_parquet_atomic(feature_frame(featured, version), args.out / "features.parquet")
    write_parquet_atomic(quarantine_frame(quarantined), args.out / "quarantine.parquet")
    print(f"inputs={len(uris)} featured={len(featured)} quarantined={len(quarantined)} feature_version={version}")
    return 0
