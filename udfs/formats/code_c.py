"""The `code-c` format: the bundle's generated C (or CatBoost's own C++ export) built into
`libscore.so`, one `score_batch` call per batch; on Spark, the same code through JNI in the JVM.

C ABI (codegen/c_backend.py): `void score_batch(const float *x, long n, long d, double *out)` and
`long score_n_features(void)`.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from udfs.bundle import C_LIBRARY, C_SOURCE, CPP_SOURCE
from udfs.errors import PhotoscoreError
from udfs.formats import JVM_PACKAGE, ExportFormat, as_matrix, bundle_file, bundle_tag, export_cell, feature_count
from udfs.toolchain import java_home, java_jar, render, shared_library, source_path

ID = "code-c"


class CodeCScorer:
    """ctypes over `void score_batch(const float *x, long n, long d, double *out)`."""

    format = ID

    def __init__(self, bundle_dir: Path):
        path = bundle_file(bundle_dir, C_LIBRARY, ID)
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
        x = as_matrix(features, self.n_features, ID)
        out = np.empty(len(x), dtype=np.float64)
        self._lib.score_batch(x.ctypes.data, len(x), x.shape[1], out.ctypes.data)
        return out


def generated_source(bundle_dir: Path) -> Path:
    """The bundle's generated C source (`score.c`), or CatBoost's C++ (`score.cpp`)."""
    for name in (C_SOURCE, CPP_SOURCE):
        if (Path(bundle_dir) / name).is_file():
            return Path(bundle_dir) / name
    raise PhotoscoreError(f"{bundle_dir}: neither {C_SOURCE} nor {CPP_SOURCE} found; the bundle has no {ID} export")


def export(bundle_dir: Path) -> dict:
    """Write `score.c` (or CatBoost's `score.cpp`) and build `libscore.so` (codegen)."""

    def make() -> list[str]:
        from codegen import export_c

        return export_c(bundle_dir)

    return export_cell(make)


def jvm_kernel(bundle_dir: Path, jar_dir: Path, n_features: int) -> tuple[Path, str]:
    """A jar whose class `scoreBlock(float[] x, int n, double[] out)` calls the bundle's generated C
    through JNI (the library inside the jar); returns (jar, class name). The class is named by the
    bundle's content, so two versions' kernels never meet in one JVM."""
    tag = bundle_tag(bundle_dir)
    cls = f"CKernel_{tag}"
    source = generated_source(bundle_dir)
    include = java_home() / "include"
    if not (include / "jni.h").is_file():
        raise PhotoscoreError(f"{include}/jni.h not found: {ID} on Spark needs a full JDK (set JAVA_HOME)")
    # JNI mangles `_` in a class name as `_1`.
    symbol = f"Java_{JVM_PACKAGE.replace('.', '_')}_{cls.replace('_', '_1')}_scoreBatch"
    shim = source_path("udfs", "jvm/jni_shim.c")
    library = shared_library([shim, source], name=f"libscore-jni-{tag}", cache_dir=jar_dir,
                             what=f"the JNI scorer of {bundle_dir}", cpp=source.suffix == ".cpp",
                             includes=(include, include / "linux"), defines={"PS_JNI_SYMBOL": symbol})
    resource = f"libscore-jni-{tag}.so"
    java = render("udfs", "jvm/CKernel.java.in", cls=cls, tag=tag, library=resource, n_features=n_features)
    jar = java_jar({f"{JVM_PACKAGE.replace('.', '/')}/{cls}.java": java}, name=cls, cache_dir=jar_dir,
                   what=f"the {ID} kernel of {bundle_dir}",
                   resources={f"{JVM_PACKAGE.replace('.', '/')}/{resource}": library})
    return jar, f"{JVM_PACKAGE}.{cls}"


FORMAT = ExportFormat(
    id=ID,
    description="generated C (m2cgen's AST, flat tree arrays; CatBoost's own C++ export) in libscore.so",
    files=(f"{C_SOURCE} | {CPP_SOURCE}", C_LIBRARY),
    precision="float64",
    load=lambda bundle_dir, threads: CodeCScorer(bundle_dir),
    export=export,
    jvm_kernel=jvm_kernel,
    jvm_switch="c_in_jvm",
    aliases=("m2cgen-c",),
    rank=40,
)
