"""The `onnx` format: `model.onnx` run by onnxruntime.

Every bundle's `model.onnx` is normalised at build time (codegen/onnx_export.py) to one float32
input (n, d) and one output named `probability`, float32 (n,): the positive-class probability.
ONNX tree ensembles accumulate in float32, so this export is held to the float32 tolerance of the
parity gate, not the float64 one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from udfs.bundle import ONNX_FILE, ONNX_OUTPUT
from udfs.errors import PhotoscoreError
from udfs.formats import ExportFormat

ID = "onnx"


class OnnxScorer:
    format = ID

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # shape-mismatch warnings on unused outputs are noise
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise PhotoscoreError(f"onnxruntime cannot load {path}: {exc}") from None
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        if len(inputs) != 1 or ONNX_OUTPUT not in outputs:
            raise PhotoscoreError(
                f"{path} has inputs {[i.name for i in inputs]} and outputs {outputs}; a bundle's "
                f"model.onnx must have one input and an output named {ONNX_OUTPUT!r}"
            )
        self.input_name = inputs[0].name
        self.width = inputs[0].shape[1]

    def score(self, features: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(features, dtype=np.float32)
        if x.ndim != 2 or (isinstance(self.width, int) and x.shape[1] != self.width):
            raise PhotoscoreError(f"expected a float32 matrix with {self.width} columns, got {x.shape}")
        if len(x) == 0:
            return np.empty(0, dtype=np.float64)
        (proba,) = self.session.run([ONNX_OUTPUT], {self.input_name: x})
        return np.asarray(proba, dtype=np.float64).reshape(-1)


def load_onnx(bundle_dir: Path, threads: int):
    """The bundle's `model.onnx` in an onnxruntime CPU session with `threads` intra-op threads."""
    path = Path(bundle_dir) / ONNX_FILE
    if not path.is_file():
        raise PhotoscoreError(f"ONNX export {path} is missing from the bundle")
    return OnnxScorer(path, threads)


def export_onnx(bundle_dir: Path) -> dict:
    """Write `model.onnx`; a converter failure fails the build (every model type has a converter)."""
    from codegen.onnx_export import ONNX_OPSET, export_onnx as write_onnx

    write_onnx(bundle_dir)
    return {"available": True, "files": [ONNX_FILE], "opset": ONNX_OPSET}


FORMAT = ExportFormat(
    id=ID,
    description="model.onnx (opset 15) run by onnxruntime",
    files=(ONNX_FILE,),
    precision="float32",
    load=load_onnx,
    export=export_onnx,
    requirements=("onnxruntime",),
    rank=10,
)
