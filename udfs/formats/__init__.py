"""The export-format registry: one module per format in this package, nothing else names a format.

Every export of a model bundle (DESIGN.md "Model bundle") is described by one `ExportFormat`, the
`FORMAT` of its module here: its files in the bundle, the precision it computes in (which sets its
parity tolerance), how the build exports it, how it is loaded and scored (one interface: a float32
`n x d` matrix in the bundle's feature order -> float64 positive-class probabilities), an optional
JVM kernel for the Spark in-JVM path, and the pip requirements of a registered model scoring with
it. Build, the parity gate, `photoscore models --parity`, the Spark and Flink paths, the CLI's
`--format` choices and the benches all iterate this registry: adding a format is adding a module.

The gate is enforced on load: `load_scorer` refuses an export whose verdict in the bundle's
`parity_report.json` is not `passed`. Only the parity gate itself measures an unproven export,
through `load_unchecked`. Old format ids (`m2cgen-*`, for generated code that is not all m2cgen's)
stay accepted as aliases, with a warning naming the new id; bundles that carry them in their
manifest or parity report load through the same aliases.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from udfs.bundle import CHECKSUMS, read_feature_schema, read_parity_report, sha256_file, verify_bundle
from udfs.errors import PhotoscoreError

log = logging.getLogger(__name__)

# Max |export - native| the parity gate allows, by the precision either side computes in (the
# reasoning behind the figures is in models/parity.py).
TOLERANCES = {"float64": 1e-6, "float32": 1e-5}
COSTS = ("batch", "per_row", "per_call")
# The Java package of the Spark block scorer (udfs/spark_jvm.py) and of the formats' JVM kernels.
JVM_PACKAGE = "photoscore.spark"


class Scorer(Protocol):
    """A loaded export of one model version."""

    format: str

    def score(self, features: np.ndarray) -> np.ndarray:
        """float32 (n, d) matrix in bundle feature order -> float64 (n,) positive-class probability."""
        ...


@dataclass(frozen=True)
class ExportFormat:
    """One export format of a model bundle."""

    id: str
    description: str
    files: tuple[str, ...]  # what the export adds to a bundle (alternatives as "a | b")
    precision: str  # "float64" or "float32": what the export computes in
    load: Callable[[Path, int], Scorer]  # (bundle_dir, threads) -> Scorer; checksums/gate by the registry
    export: Callable[[Path], dict] | None = None  # build step -> manifest cell; None for the reference
    jvm_kernel: Callable[[Path, Path, int], tuple[Path, str]] | None = None  # (bundle, jar_dir, d) -> (jar, class)
    jvm_switch: str | None = None  # the `spark.<key>` setting that sends it to a Python worker instead
    requirements: tuple[str, ...] = ()  # pip requirements of a registered model scoring with it
    aliases: tuple[str, ...] = ()  # old ids, accepted with a warning
    cost: str = "batch"  # batch | per_row (interpreted) | per_call (a process per call): for the benches
    rank: int = 50  # display order (tables, help texts)

    @property
    def reference(self) -> bool:
        """The reference every other export is held to (it has no build step of its own)."""
        return self.export is None

    @property
    def tolerance(self) -> float:
        return TOLERANCES[self.precision]


_FORMATS: dict[str, ExportFormat] = {}
_ALIASES: dict[str, str] = {}


def _discover() -> None:
    if _FORMATS:
        return
    found = []
    for info in pkgutil.iter_modules(__path__):
        fmt = importlib.import_module(f"{__name__}.{info.name}").FORMAT
        if fmt.precision not in TOLERANCES or fmt.cost not in COSTS:
            raise ValueError(f"export format {fmt.id!r}: bad precision {fmt.precision!r} or cost {fmt.cost!r}")
        found.append(fmt)
    for fmt in sorted(found, key=lambda f: (f.rank, f.id)):
        for name in (fmt.id, *fmt.aliases):
            if name in _FORMATS or name in _ALIASES:
                raise ValueError(f"export format id {name!r} registered twice")
        _FORMATS[fmt.id] = fmt
        _ALIASES.update({alias: fmt.id for alias in fmt.aliases})


def all_formats() -> list[ExportFormat]:
    """Every registered export format, in display order (the reference first)."""
    _discover()
    return list(_FORMATS.values())


def formats() -> list[str]:
    """The ids of every registered export format, in display order."""
    return [f.id for f in all_formats()]


def reference_format() -> ExportFormat:
    """The format every other export is held to by the parity gate."""
    (ref,) = [f for f in all_formats() if f.reference]
    return ref


def get_format(format_id: str) -> ExportFormat:
    """The format named `format_id`; an old alias works with a warning naming the new id."""
    _discover()
    if format_id in _ALIASES:
        new = _ALIASES[format_id]
        message = f"export format {format_id!r} is deprecated; use {new!r} (the same export)"
        log.warning(message)
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        format_id = new
    try:
        return _FORMATS[format_id]
    except KeyError:
        raise PhotoscoreError(
            f"unknown export format {format_id!r}; available: {', '.join(_FORMATS)}") from None


def stored_cell(cells: Mapping[str, Any], format_id: str) -> Any:
    """The entry of a format in a bundle's `exports` map (manifest or parity report), which bundles
    built before the rename key by an old alias; None when absent."""
    _discover()
    fmt = _FORMATS.get(format_id)
    for key in (format_id, *(fmt.aliases if fmt else ())):
        if key in cells:
            return cells[key]
    return None


def parity_verdict(bundle_dir: Path | str, format_id: str) -> str:
    """The parity gate's verdict on one export of the bundle: passed, failed, not_available or absent."""
    try:
        report = read_parity_report(bundle_dir)
    except PhotoscoreError:
        return "absent"
    cell = stored_cell(report.get("exports") or {}, format_id)
    return str(cell.get("status", "absent")) if isinstance(cell, dict) else "absent"


def gated(bundle_dir: Path | str, format_id: str) -> ExportFormat:
    """The format, once the bundle's checksums verify and its parity gate passed this export (the
    reference needs no verdict); every engine path goes through here, the JVM kernels included."""
    fmt = get_format(format_id)
    verify_bundle(bundle_dir)  # checksums before any load, and before trusting the parity report
    if not fmt.reference:
        verdict = parity_verdict(bundle_dir, fmt.id)
        if verdict != "passed":
            raise PhotoscoreError(
                f"export format {fmt.id!r} of bundle {bundle_dir} has parity verdict {verdict!r}, not "
                f"'passed'; refusing to score with it (see its parity_report.json, or use "
                f"{reference_format().id!r})")
    return fmt


def load_scorer(bundle_dir: Path | str, format_id: str, threads: int = 1) -> Scorer:
    """Load one export of the bundle at `bundle_dir`, refused unless its parity gate passed (`gated`).
    `threads`: the scorer's own thread pool (engines run one scorer per core: 1 unless a process
    scores alone)."""
    return gated(bundle_dir, format_id).load(Path(bundle_dir), int(threads))


def load_unchecked(bundle_dir: Path | str, format_id: str, threads: int = 1) -> Scorer:
    """Load an export the parity gate has not judged (checksums still verified). For the gate that
    measures it (models/parity.py) and benches that measure it themselves; never for engines."""
    fmt = get_format(format_id)
    verify_bundle(bundle_dir)
    return fmt.load(Path(bundle_dir), int(threads))


def export_cell(make: Callable[[], list[str]]) -> dict:
    """Run an optional export's build step -> its manifest cell. A failure that names its cause
    (PhotoscoreError: a missing toolchain, an unsupported model) or a missing generator package
    makes the export unavailable, with the reason; a crash of the generator too, logged."""
    try:
        return {"available": True, "files": make()}
    except (PhotoscoreError, ImportError) as exc:
        return {"available": False, "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - an export crash must not sink the bundle; the gate reports it
        log.exception("export step failed")
        return {"available": False, "error": f"{type(exc).__name__}: {exc}", "reason": "the export step raised"}


# ---------------------------------------------------------------- what every scorer checks


def feature_count(bundle_dir: Path) -> int:
    """Number of model inputs listed in the bundle's `feature_schema.json`."""
    return len(read_feature_schema(bundle_dir).names)


def as_matrix(features: np.ndarray, n_features: int, format_id: str) -> np.ndarray:
    """`features` as a C-contiguous float32 (n, n_features) matrix, or a PhotoscoreError."""
    x = np.ascontiguousarray(features, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise PhotoscoreError(f"{format_id}: expected a (n, {n_features}) feature matrix, got shape {x.shape}")
    return x


def bundle_file(bundle_dir: Path, name: str, format_id: str) -> Path:
    """Path of `name` in the bundle, or an error saying the bundle lacks the export."""
    path = Path(bundle_dir) / name
    if not path.is_file():
        raise PhotoscoreError(f"{format_id}: {path} not found; the bundle has no {format_id} export")
    return path


def bundle_tag(bundle_dir: Path) -> str:
    """Unique per bundle content (the digest of its checksum listing): names the bundle's JVM kernel
    classes, so two versions' kernels never meet in one JVM."""
    return sha256_file(Path(bundle_dir) / CHECKSUMS)[:16]
