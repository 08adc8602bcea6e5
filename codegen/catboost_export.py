"""CatBoost exports: m2cgen does not support CatBoost, so these cells use CatBoost's own exporter.

* Python: `save_model(format="python")` plus a `score(input)` that applies the sigmoid. The
  exporter prints float32 borders as short decimals which Python compares as float64 (a row exactly
  on a border would take the wrong side, as with m2cgen's XGBoost code); the generated module
  rounds every border back to its float32 value when it loads, which makes `x > border` exact.
* C: `save_model(format="cpp")` is C++ (std::vector), compiled with g++ into the same
  `score_batch` C ABI as the C cell of the other models. It is C++ from CatBoost's exporter, not C.
* Java: not available (CatBoost has no Java code export; its JVM applier is a native library).
"""
from __future__ import annotations

from pathlib import Path

from codegen.python_backend import BATCH_FUNCTION
from udfs.bundle import CPP_SOURCE, PY_SOURCE
from udfs.toolchain import source_text

JAVA_UNAVAILABLE = (
    "CatBoost has no Java code export and m2cgen does not support CatBoost; "
    "score CatBoost on the JVM through the native or ONNX export"
)

_PY_TAIL = '''

def _exact_float32_borders():
    # CatBoost compares float32 features with float32 borders; make the printed borders exact.
    import struct

    def f32(v):
        return struct.unpack("<f", struct.pack("<f", v))[0]

    catboost_model.float_feature_borders = [[f32(b) for b in borders]
                                            for borders in catboost_model.float_feature_borders]


_exact_float32_borders()


def score(input):
    """Positive-class probability (sigmoid of CatBoost's raw formula value)."""
    raw = apply_catboost_model([float(v) for v in input])
    if raw < 0.0:
        z = math.exp(raw)
        return z / (1.0 + z)
    return 1.0 / (1.0 + math.exp(-raw))
'''



def _load(native_path: Path):
    from catboost import CatBoostClassifier

    model = CatBoostClassifier()
    model.load_model(str(native_path))
    return model


def write_catboost_python(native_path: Path, bundle_dir: Path, header: str) -> str:
    """Write `score.py` from CatBoost's Python export; returns its relative path."""
    out = Path(bundle_dir) / PY_SOURCE
    _load(native_path).save_model(str(out), format="python")
    out.write_text(f'"""{header}"""\nimport math\n' + out.read_text() + _PY_TAIL + BATCH_FUNCTION)
    return PY_SOURCE


def write_catboost_cpp(native_path: Path, bundle_dir: Path, header: str) -> str:
    """Write `score.cpp` from CatBoost's C++ export plus the `score_batch` ABI; returns its path."""
    out = Path(bundle_dir) / CPP_SOURCE
    _load(native_path).save_model(str(out), format="cpp")
    out.write_text(f"/* {header} */\n" + out.read_text() + "\n" + source_text("codegen", "c/catboost_abi.cpp"))
    return CPP_SOURCE
