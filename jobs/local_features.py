"""Local feature extraction (no engine), behind `photoscore features` and `photoscore upload`:
what files a list of paths names, and reading (confined, bounded: udfs/photo_io.py) + extraction
over worker processes."""
from __future__ import annotations

import functools
import multiprocessing
import os
from pathlib import Path
from typing import Iterable, Iterator

from udfs.decode import DecodeLimits, PhotoRejected
from udfs.features import FEATURE_VERSION, FeatureRow, extract_features
from udfs.photo_io import PhotoReader
from udfs.quarantine import QuarantineRecord, now_ms


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


def extract_features_from_uri(uri: str, reader: PhotoReader, limits: DecodeLimits = DecodeLimits(),
                              version: int = FEATURE_VERSION) -> FeatureRow | QuarantineRecord:
    """Read the photo at `uri` through `reader` and extract its features of feature version
    `version` (photo_id: the URI); read failures are quarantined too, a TransientReadError (store
    unavailable) propagates."""
    try:
        data = reader.read(uri, limits.max_file_bytes)
    except PhotoRejected as exc:
        return QuarantineRecord(uri, uri, exc.stage, exc.reason_code, exc.detail, now_ms())
    return extract_features(data, uri, uri, limits, version=version)


def extract_all(uris: list[str], workers: int, limits: DecodeLimits, reader: PhotoReader,
                version: int) -> Iterator:
    """Extraction results (features of feature version `version`) in input order, from `workers`
    processes (1: in this process)."""
    work = functools.partial(extract_features_from_uri, reader=reader, version=version, limits=limits)
    if workers <= 1:
        yield from map(work, uris)
        return
    # spawn, not fork: the parent may hold threads (logging, JVM gateways) that fork would copy.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(work, uris, chunksize=4)
