"""The training pipeline behind `photoscore train`: data -> bundle -> parity gate -> MLflow version."""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from models.build import BuiltBundle, build_bundle
from models.data import load_training_data, training_feature_version
from models.registry import log_and_register
from models.trainers import TrainParams

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    built: BuiltBundle
    name: str
    version: int
    feature_version: int  # the features it was trained on, recorded in the bundle


def training_quarantine(features: Path | str, feature_version: int) -> dict | None:
    """The quarantine share of the photos behind a features file: its rows of `feature_version`
    plus the rows of the `quarantine.parquet` that `photoscore features` writes beside it (None
    when there is no such file: the reference profile then counts no photo as quarantined)."""
    import pandas as pd
    import pyarrow.parquet as pq

    from udfs.reference_profile import quarantine_summary

    beside = Path(features).with_name("quarantine.parquet")
    if not beside.is_file():
        return None
    file = pq.ParquetFile(features)
    featured = file.metadata.num_rows
    if "feature_version" in file.schema_arrow.names:
        versions = file.read(columns=["feature_version"]).column(0).to_numpy()
        featured = int((versions == feature_version).sum())
    reasons = pd.read_parquet(beside, columns=["reason_code"])["reason_code"].astype(str).tolist()
    return quarantine_summary(featured + len(reasons), reasons)


def train_and_register(features: Path | str, labels: Path | str, target: str, model_type: str,
                       name: str, config, params: TrainParams,
                       feature_names: Sequence[str] | None = None,
                       feature_version: int | None = None) -> TrainResult:
    """Train, build and gate a bundle, then register it as a new version of `name`.

    It trains on `feature_version` (default: the version the features file holds), on that
    version's feature names unless `feature_names` is given; the bundle's feature_schema.json
    records the version, which is what every scorer checks its features against. The bundle is built in a scratch directory; MLflow copies it into its artifact store, which is
    the only lasting copy (`resolve_bundle` downloads and verifies it for scoring).
    """
    from udfs.features import feature_set

    feature_version = training_feature_version(features, feature_version, config.features.feature_version())
    if feature_names is None:
        feature_names = feature_set(feature_version).names
    data = load_training_data(features, labels, target, feature_names, feature_version)
    with tempfile.TemporaryDirectory(prefix="photoscore-bundle-") as scratch:
        built = build_bundle(model_type, data, params, Path(scratch) / "bundle",
                             quarantine=training_quarantine(features, feature_version),
                             profile_rows=config.monitor.profile_rows)
        run_params = {"model_type": model_type, "target": target, "features": str(features),
                      "labels": str(labels), "feature_version": feature_version,
                      **{f"rows_{k}": len(v.y) for k, v in data.splits.items()},
                      **params.as_dict(), "trees_built": built.facts["trees"]}
        mv = log_and_register(built, name, config, run_params)
    return TrainResult(built=built, name=name, version=int(mv.version), feature_version=feature_version)
