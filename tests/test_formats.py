"""Conformance of every registered export format (udfs/formats/), the scikit-learn `test_common`
pattern: each test runs once per format the registry lists, so a new format module is tested by
default. Bundles come from the shared session fixtures (tests/_models_fixtures.py)."""
from __future__ import annotations

import importlib
import json
import warnings

import numpy as np
import pytest

from _models_fixtures import built_bundle, copy_bundle
from codegen.thresholds import split_thresholds
from models.parity import adversarial_rows, tolerance
from udfs.bundle import MANIFEST, MODEL_TYPES, PARITY_REPORT, read_manifest, read_parity_report, write_checksums
from udfs.errors import PhotoscoreError
from udfs.formats import (TOLERANCES, all_formats, formats, get_format, load_scorer, load_unchecked,
                          parity_verdict, reference_format)

FORMATS = formats()
GATED = [f.id for f in all_formats() if not f.reference]
ALIASES = [(alias, f.id) for f in all_formats() for alias in f.aliases]
# The model every format exports (LightGBM: each format, the Java code included, supports it).
FULL = "lightgbm"


def _available(built, fmt: str) -> None:
    """Skip when the bundle has no such export (the parity report says why)."""
    if get_format(fmt).reference:
        return
    cell = read_parity_report(built.bundle_dir)["exports"][fmt]
    if cell["status"] == "not_available":
        assert cell["reason"], "an unavailable export must say why"
        pytest.skip(f"{fmt} not available for {built.model_type}: {cell['reason']}")


def _rows(built, data) -> np.ndarray:
    """The parity gate's rows: the held-out test set plus the adversarial rows of the model."""
    return np.vstack([data["test"].X, adversarial_rows(split_thresholds(built.bundle_dir), data["train"].X)])


def _set_report(bundle_dir, edit) -> None:
    """Rewrite the bundle's parity report with `edit(report)` and reseal its checksums."""
    report = read_parity_report(bundle_dir)
    edit(report)
    (bundle_dir / PARITY_REPORT).write_text(json.dumps(report))
    write_checksums(bundle_dir)


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_is_registered_once_with_a_valid_descriptor(fmt):
    desc = get_format(fmt)
    assert desc.id == fmt and FORMATS.count(fmt) == 1
    assert desc.precision in TOLERANCES and desc.tolerance == TOLERANCES[desc.precision]
    assert desc.files and desc.description
    assert (desc.jvm_switch is None) or (desc.jvm_kernel is not None)
    module = importlib.import_module(f"udfs.formats.{fmt.replace('-', '_')}")
    assert module.FORMAT is desc
    assert [f for f in all_formats() if f.reference] == [reference_format()]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_export_scores_like_native_within_its_tolerance(fmt, model_type, model_data, tmp_path_factory):
    """Re-scored independently of the stored report: the test rows plus the adversarial rows."""
    built = built_bundle(model_type, model_data, tmp_path_factory)
    _available(built, fmt)
    X = _rows(built, model_data)
    native = load_scorer(built.bundle_dir, reference_format().id).score(X)
    scores = load_scorer(built.bundle_dir, fmt).score(X)
    assert scores.dtype == np.float64 and scores.shape == (len(X),)
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))
    if not get_format(fmt).reference:
        tol = tolerance(model_type, fmt)[0]
        cell = read_parity_report(built.bundle_dir)["exports"][fmt]
        assert cell["status"] == "passed" and cell["max_abs_diff"] <= cell["tolerance"] == tol, cell
        assert np.max(np.abs(scores - native)) <= tol


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_files_are_in_the_bundle_and_the_manifest(fmt, model_data, tmp_path_factory):
    built = built_bundle(FULL, model_data, tmp_path_factory)
    cell = read_manifest(built.bundle_dir)["exports"][fmt]
    assert cell["available"] and cell["files"], cell
    for rel in cell["files"]:
        assert (built.bundle_dir / rel).is_file(), rel
    if not get_format(fmt).reference:
        assert parity_verdict(built.bundle_dir, fmt) == "passed"


@pytest.mark.parametrize("fmt", FORMATS)
def test_scoring_is_deterministic_and_shaped(fmt, model_data, tmp_path_factory):
    built = built_bundle(FULL, model_data, tmp_path_factory)
    X = model_data["test"].X
    first = load_scorer(built.bundle_dir, fmt)
    assert first.format == fmt
    a, b = first.score(X), first.score(X)
    c = load_scorer(built.bundle_dir, fmt, threads=2).score(X)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    # One row alone scores as it does in a batch (no state across rows).
    np.testing.assert_array_equal(first.score(X[:1]), a[:1])
    with pytest.raises(PhotoscoreError):
        first.score(np.zeros((2, X.shape[1] + 1), dtype=np.float32))


@pytest.mark.parametrize("verdict", ["failed", "not_available", "absent"])
@pytest.mark.parametrize("fmt", GATED)
def test_load_refuses_an_export_whose_verdict_is_not_passed(fmt, verdict, model_data, tmp_path_factory, tmp_path):
    built = built_bundle(FULL, model_data, tmp_path_factory)
    d = copy_bundle(built, tmp_path / "bundle")

    def edit(report):
        if verdict == "absent":
            del report["exports"][fmt]
        else:
            report["exports"][fmt]["status"] = verdict

    _set_report(d, edit)
    with pytest.raises(PhotoscoreError, match=rf"'{fmt}'.*{verdict}.*refusing") as caught:
        load_scorer(d, fmt)
    assert str(d) in str(caught.value)
    # The gate's own path still loads it (to measure it), and the reference stays loadable.
    assert load_unchecked(d, fmt).score(model_data["test"].X[:3]).shape == (3,)
    load_scorer(d, reference_format().id)


def test_load_refuses_every_export_of_a_bundle_without_a_parity_report(model_data, tmp_path_factory, tmp_path):
    d = copy_bundle(built_bundle(FULL, model_data, tmp_path_factory), tmp_path / "bundle")
    (d / PARITY_REPORT).unlink()
    write_checksums(d)
    for fmt in GATED:
        with pytest.raises(PhotoscoreError, match="absent"):
            load_scorer(d, fmt)


@pytest.mark.parametrize("alias,fmt", ALIASES)
def test_old_ids_are_aliases_with_a_warning(alias, fmt, model_data, tmp_path_factory):
    assert alias not in FORMATS
    with pytest.warns(DeprecationWarning, match=rf"{alias}.*use '{fmt}'"):
        assert get_format(alias).id == fmt
    built = built_bundle(FULL, model_data, tmp_path_factory)
    with pytest.warns(DeprecationWarning):
        scorer = load_scorer(built.bundle_dir, alias)
    assert scorer.format == fmt  # score rows carry the new id


@pytest.mark.parametrize("alias,fmt", ALIASES)
def test_bundles_that_carry_old_ids_still_load(alias, fmt, model_data, tmp_path_factory, tmp_path):
    """Bundles registered before the rename key their manifest and parity report by the old id."""
    built = built_bundle(FULL, model_data, tmp_path_factory)
    d = copy_bundle(built, tmp_path / "bundle")
    manifest = read_manifest(d)
    manifest["exports"][alias] = manifest["exports"].pop(fmt)
    (d / MANIFEST).write_text(json.dumps(manifest))
    _set_report(d, lambda report: report["exports"].__setitem__(alias, report["exports"].pop(fmt)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the stored old id is data, not a deprecated request
        got = load_scorer(d, fmt).score(model_data["test"].X)
    np.testing.assert_array_equal(got, load_scorer(built.bundle_dir, fmt).score(model_data["test"].X))


def test_unknown_format_names_the_available_ones():
    with pytest.raises(PhotoscoreError, match="unknown export format 'nope'.*" + ".*".join(FORMATS)):
        get_format("nope")
