"""`photoscore features`: extract features from files and folders locally (no engine)."""
from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
from pathlib import Path
from typing import Iterable, Iterator

from udfs.settings import Settings
from jobs.progress import Progress
from jobs.tables import write_parquet_atomic
from udfs.decode import DecodeLimits
from udfs.features import FeatureRow, extract_features_from_uri, feature_frame
from udfs.quarantine import quarantine_frame


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


def list_inputs(paths: Iterable[str]) -> list[str]:
    """Every file under the given files and folders, absolute, sorted, hidden ones skipped.

    A path that does not exist is kept: it is an input, and it will be quarantined as unreadable.
    """
    found: set[str] = set()
    for raw in paths:
        path = Path(raw).expanduser().absolute()
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found.update(os.path.join(root, f) for f in files if not f.startswith("."))
        else:
            found.add(str(path))
    return sorted(found)


def extract_all(uris: list[str], workers: int, limits: DecodeLimits) -> Iterator:
    """Extraction results in input order, from `workers` processes (1: in this process)."""
    work = functools.partial(extract_features_from_uri, limits=limits)
    if workers <= 1:
        yield from map(work, uris)
        return
    # spawn, not fork: the parent may hold threads (logging, JVM gateways) that fork would copy.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(work, uris, chunksize=4)


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
