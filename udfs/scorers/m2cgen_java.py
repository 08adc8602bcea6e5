"""Scorer for the `m2cgen-java` export: the bundle's `score.jar` through its batch harness.

Each `score` call starts a JVM (`java -cp score.jar photoscore.generated.ScoreHarness ...`): right for
parity checks, not for serving; Spark calls `photoscore.generated.Score.score` in the jar directly.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from udfs.errors import PhotoscoreError
from udfs.scorers import register
from udfs.scorers.m2cgen_python import as_matrix, feature_count, require_file

FORMAT = "m2cgen-java"
HARNESS_CLASS = "photoscore.generated.ScoreHarness"


def java_tool(name: str) -> str:
    """Path of a JDK tool (`java`, `javac`, `jar`), preferring $JAVA_HOME/bin."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / name).is_file():
        return str(Path(home) / "bin" / name)
    found = shutil.which(name)
    if found is None:
        raise PhotoscoreError(f"`{name}` not found: install a JDK 17+ or set JAVA_HOME")
    return found


@register(FORMAT)
class M2cgenJavaScorer:
    """Runs the generated Java through a `java` subprocess per batch."""

    format = FORMAT

    def __init__(self, bundle_dir: Path):
        self.jar = require_file(bundle_dir, "score.jar", FORMAT)
        self.n_features = feature_count(bundle_dir)
        self.java = java_tool("java")

    def score(self, features: np.ndarray) -> np.ndarray:
        """float32 (n, d) -> float64 (n,) positive-class probability."""
        x = as_matrix(features, self.n_features, FORMAT)
        with tempfile.TemporaryDirectory(prefix="photoscore-java-") as tmp:
            src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
            x.astype("<f4").tofile(src)
            cmd = [self.java, "-cp", str(self.jar), HARNESS_CLASS, str(src), str(len(x)), str(x.shape[1]),
                   "float32", str(dst)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise PhotoscoreError(f"{FORMAT}: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
            out = np.fromfile(dst, dtype="<f8").astype(np.float64)
        if out.shape != (len(x),):
            raise PhotoscoreError(f"{FORMAT}: harness returned {out.shape[0]} scores for {len(x)} rows")
        return out
