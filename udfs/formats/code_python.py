"""The `code-python` format: the bundle's generated `score.py` (m2cgen's Python, or CatBoost's own
Python export), loaded from the file with importlib, never unpickled."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from udfs.bundle import PY_SOURCE
from udfs.formats import ExportFormat, as_matrix, bundle_file, export_cell, feature_count

ID = "code-python"


class CodePythonScorer:
    """Generated Python code; one interpreted call per row, so the slowest export."""

    format = ID

    def __init__(self, bundle_dir: Path):
        path = bundle_file(bundle_dir, PY_SOURCE, ID)
        self.n_features = feature_count(bundle_dir)
        # A unique module name per file: two bundles loaded side by side must not share a module.
        spec = importlib.util.spec_from_file_location(f"photoscore_generated_{abs(hash(str(path.resolve())))}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self._score_batch = module.score_batch

    def score(self, features: np.ndarray) -> np.ndarray:
        """float32 (n, d) -> float64 (n,) positive-class probability."""
        x = as_matrix(features, self.n_features, ID)
        return np.asarray(self._score_batch(x.astype(np.float64).tolist()), dtype=np.float64).reshape(len(x))


def export(bundle_dir: Path) -> dict:
    """Write `score.py` (codegen)."""

    def make() -> list[str]:
        from codegen import export_python

        return export_python(bundle_dir)

    return export_cell(make)


FORMAT = ExportFormat(
    id=ID,
    description="generated Python (m2cgen; CatBoost's own Python export), one call per row",
    files=(PY_SOURCE,),
    precision="float64",
    load=lambda bundle_dir, threads: CodePythonScorer(bundle_dir),
    export=export,
    aliases=("m2cgen-python",),
    cost="per_row",
    rank=20,
)
