"""The scorer registry, keyed by export format.

Every export of a model bundle (DESIGN.md "Model bundle") is scored through one interface: load
from a bundle directory, score a float32 `n x d` matrix whose columns are the bundle's ordered
features, return the positive-class probability as float64. A backend is one module in this package
that decorates its loader with `@register("<format>")`; nothing else changes to add one.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from udfs.errors import PhotoscoreError


class Scorer(Protocol):
    """A loaded export of one model version."""

    format: str

    def score(self, features: np.ndarray) -> np.ndarray:
        """float32 (n, d) matrix in bundle feature order -> float64 (n,) positive-class probability."""
        ...


ScorerLoader = Callable[[Path], Scorer]
_LOADERS: dict[str, ScorerLoader] = {}


def register(export_format: str) -> Callable[[ScorerLoader], ScorerLoader]:
    """Class or function decorator: `loader(bundle_dir) -> Scorer` for `export_format`."""

    def decorate(loader: ScorerLoader) -> ScorerLoader:
        if export_format in _LOADERS:
            raise ValueError(f"scorer format {export_format!r} registered twice")
        _LOADERS[export_format] = loader
        return loader

    return decorate


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def formats() -> list[str]:
    """Every registered export format."""
    _discover()
    return sorted(_LOADERS)


def load_scorer(bundle_dir: Path | str, export_format: str) -> Scorer:
    """Load one export of the bundle at `bundle_dir` (checksums are verified by the loader)."""
    _discover()
    try:
        loader = _LOADERS[export_format]
    except KeyError:
        raise PhotoscoreError(
            f"unknown export format {export_format!r}; available: {', '.join(sorted(_LOADERS))}"
        ) from None
    importlib.import_module("udfs.bundle").verify_bundle(bundle_dir)  # checksums before any load
    return loader(Path(bundle_dir))
