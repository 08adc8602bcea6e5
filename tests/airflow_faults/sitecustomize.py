"""Fault injection for the lifecycle DAG test, loaded by the `airflow dags test` subprocess only
(its PYTHONPATH starts with this folder, then tests/): each bundle's generated Python export is
corrupted right after it is written (one leaf moved by 0.5), so the parity gate must fail it."""
from __future__ import annotations

import models.build
from _models_fixtures import perturb_leaf

_write_exports = models.build.write_exports


def _write_then_corrupt(bundle_dir, manifest):
    manifest = _write_exports(bundle_dir, manifest)
    perturb_leaf(bundle_dir, "code-python")
    return manifest


models.build.write_exports = _write_then_corrupt
