"""Fault injection for the lifecycle DAG test, loaded by the `airflow dags test` subprocess only
(its PYTHONPATH starts with this folder): every generated code export of a model is corrupted
after it is built (one leaf moved by 0.5), so the parity gate must fail the version."""
from __future__ import annotations

import codegen

_generate = codegen.generate_exports


def _generate_then_corrupt(bundle_dir, *args, **kwargs):
    exports = _generate(bundle_dir, *args, **kwargs)
    for fmt, cell in exports.items():
        if cell.get("available"):
            codegen.perturb_leaf(bundle_dir, fmt)
    return exports


codegen.generate_exports = _generate_then_corrupt
