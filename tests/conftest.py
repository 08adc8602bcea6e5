"""Shared fixtures: one small real-photo corpus and its features per test session, and the
registration of every other fixture module (each once, so each session fixture is set up once)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from models.corpus import build_corpus
from udfs.features import extract_batch

# tests/ is on sys.path (rootdir-relative conftest, no __init__.py), so the helper modules are
# top-level modules: the same module objects the test modules import their helpers from.
pytest_plugins = ["_models_fixtures", "_photo_fixtures", "_s3_fixtures", "_spark_fixtures", "_stream_fixtures"]

CORPUS_N = 72
CORPUS_SEED = 11


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """A labelled corpus of real photos plus the bad inputs and valid oddities (`--broken`)."""
    out = tmp_path_factory.mktemp("corpus")
    build_corpus(out, n=CORPUS_N, seed=CORPUS_SEED, broken=True, progress=False)
    return out


@pytest.fixture(scope="session")
def corpus_labels(corpus_dir) -> pd.DataFrame:
    return pd.read_parquet(corpus_dir / "labels.parquet")


@pytest.fixture(scope="session")
def corpus_features(corpus_dir, corpus_labels) -> pd.DataFrame:
    """Features of every corpus photo (the corpus photos all feature; a test checks it)."""
    ids = list(corpus_labels["photo_id"])
    result = extract_batch(ids, [Path(p).read_bytes() for p in ids])
    assert result.quarantine.empty, result.quarantine
    return result.features


@pytest.fixture(scope="session")
def bad_inputs(corpus_dir) -> dict[str, str]:
    """{path: expected reason code} for the inputs the extractor must refuse."""
    return json.loads((corpus_dir / "broken.json").read_text())


@pytest.fixture(scope="session")
def oddities(corpus_dir) -> dict[str, dict]:
    """{path: description} for valid unusual images the extractor must feature."""
    return json.loads((corpus_dir / "oddities.json").read_text())
