"""Scorer for the `m2cgen-c` export: the bundle's `libscore.so`, one `score_batch` call per batch."""
from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from udfs.errors import PhotoscoreError
from udfs.scorers import register
from udfs.scorers.m2cgen_python import as_matrix, feature_count, require_file

FORMAT = "m2cgen-c"


@register(FORMAT)
class M2cgenCScorer:
    """ctypes over `void score_batch(const float *x, long n, long d, double *out)`."""

    format = FORMAT

    def __init__(self, bundle_dir: Path):
        path = require_file(bundle_dir, "libscore.so", FORMAT)
        self.n_features = feature_count(bundle_dir)
        # Load a private copy: the dynamic loader caches by path, and a rebuild of the bundle's .so
        # while it is mapped would change code under a running process.
        fd, private = tempfile.mkstemp(suffix=".so", prefix="photoscore-")
        os.close(fd)
        try:
            shutil.copyfile(path, private)
            try:
                self._lib = ctypes.CDLL(private)
            except OSError as exc:
                raise PhotoscoreError(
                    f"{path} does not load on this machine ({exc}); rebuild it here with codegen.build_c"
                ) from None
        finally:
            os.unlink(private)
        self._lib.score_batch.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_void_p]
        self._lib.score_batch.restype = None
        self._lib.score_n_features.restype = ctypes.c_long
        if self._lib.score_n_features() != self.n_features:
            raise PhotoscoreError(
                f"{path} expects {self._lib.score_n_features()} features, feature_schema.json lists {self.n_features}"
            )

    def score(self, features: np.ndarray) -> np.ndarray:
        """float32 (n, d) -> float64 (n,) positive-class probability."""
        x = as_matrix(features, self.n_features, FORMAT)
        out = np.empty(len(x), dtype=np.float64)
        self._lib.score_batch(x.ctypes.data, len(x), x.shape[1], out.ctypes.data)
        return out
