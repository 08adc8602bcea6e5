"""Local feature extraction (no engine), behind `photoscore features` and `photoscore upload`:
what files a list of paths names, and extraction over worker processes."""
from __future__ import annotations

import functools
import multiprocessing
import os
from pathlib import Path
from typing import Iterable, Iterator

from udfs.decode import DecodeLimits
from udfs.features import extract_features_from_uri


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
