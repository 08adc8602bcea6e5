"""The `onnx` export: `model.onnx` run by onnxruntime.

Every bundle's `model.onnx` is normalised at build time (models/onnx_export.py) to one float32
input (n, d) and one output named `probability`, float32 (n,): the positive-class probability.
ONNX tree ensembles accumulate in float32, so this export is held to the float32 tolerance of the
parity gate, not the float64 one.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from udfs.bundle import ONNX_FILE
from udfs.errors import PhotoscoreError
from udfs.scorers import register

OUTPUT_NAME = "probability"
_THREADS = int(os.environ.get("PHOTOSCORE_SCORER_THREADS", "1"))


class OnnxScorer:
    format = "onnx"

    def __init__(self, path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = _THREADS
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
        if len(inputs) != 1 or OUTPUT_NAME not in outputs:
            raise PhotoscoreError(
                f"{path} has inputs {[i.name for i in inputs]} and outputs {outputs}; a bundle's "
                f"model.onnx must have one input and an output named {OUTPUT_NAME!r}"
            )
        self.input_name = inputs[0].name
        self.width = inputs[0].shape[1]

    def score(self, features: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(features, dtype=np.float32)
        if x.ndim != 2 or (isinstance(self.width, int) and x.shape[1] != self.width):
            raise PhotoscoreError(f"expected a float32 matrix with {self.width} columns, got {x.shape}")
        if len(x) == 0:
            return np.empty(0, dtype=np.float64)
        (proba,) = self.session.run([OUTPUT_NAME], {self.input_name: x})
        return np.asarray(proba, dtype=np.float64).reshape(-1)


@register("onnx")
def load_onnx(bundle_dir: Path):
    """The bundle's `model.onnx` in an onnxruntime CPU session."""
    path = Path(bundle_dir) / ONNX_FILE
    if not path.is_file():
        raise PhotoscoreError(f"ONNX export {path} is missing from the bundle")
    return OnnxScorer(path)
