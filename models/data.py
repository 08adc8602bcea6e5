"""Training data: join stored features to labels and split train/validation/test by source photo.

Variants of one photo (blurred, darkened, re-encoded copies of the same wallpaper) share a
`source_photo`; if they straddled splits the test set would measure memorisation of that photo,
not quality. The split is by group and deterministic: groups are ordered by a salted sha256 of
their key and cut by count, so the same corpus always splits the same way and adding photos never
moves an existing group between splits' relative order.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from udfs.errors import PhotoscoreError

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


@dataclass
class Split:
    """One split's model matrix, labels and row identities."""

    X: np.ndarray          # float32 (n, d), columns in `feature_names` order
    y: np.ndarray          # int (n,)
    photo_ids: np.ndarray
    groups: np.ndarray     # the source-photo group key of each row


@dataclass
class TrainingData:
    feature_names: tuple[str, ...]
    feature_version: int
    target: str
    splits: dict[str, Split]

    def __getitem__(self, name: str) -> Split:
        return self.splits[name]


def group_keys(labels: pd.DataFrame) -> pd.Series:
    """The split group of each row: `source_photo`, else `duplicate_of`, else the photo itself."""
    key = pd.Series(pd.NA, index=labels.index, dtype="string")
    for column in ("source_photo", "duplicate_of", "photo_id"):
        if column in labels.columns:
            values = labels[column].astype("string")
            values = values.mask(values.str.len() == 0)
            key = key.fillna(values)
    return key


def assign_splits(groups: pd.Series, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  salt: str = "photoscore-split-v1") -> pd.Series:
    """Split name per row, with every row of a group in the same split.

    Groups are ordered by sha256(salt + key) and cut at cumulative fractions of the group count;
    with at least three groups every split gets at least one.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise PhotoscoreError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    unique = sorted(set(groups.tolist()), key=lambda g: hashlib.sha256(f"{salt}{g}".encode()).hexdigest())
    n = len(unique)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    if n >= 3:
        n_train = min(max(n_train, 1), n - 2)
        n_val = min(max(n_val, 1), n - n_train - 1)
    split_of = {}
    for i, g in enumerate(unique):
        split_of[g] = "train" if i < n_train else "validation" if i < n_train + n_val else "test"
    return groups.map(split_of).astype("string")


def training_feature_version(features_path: Path | str, requested: int | None = None,
                             default: int | None = None) -> int:
    """The feature version to train on: `requested`, else the one version the features file holds
    (its `feature_version` column, as `photoscore features` writes it), else `default` (the
    newest when None) for a file without the column. A file of several versions needs `requested`."""
    from udfs.features import FEATURE_VERSION, feature_set

    if requested is not None:
        return feature_set(requested).version
    columns = pq.read_schema(features_path).names
    if "feature_version" not in columns:
        return feature_set(FEATURE_VERSION if default is None else default).version
    versions = sorted(pd.unique(pd.read_parquet(features_path, columns=["feature_version"])["feature_version"]
                                .dropna()).tolist())
    if len(versions) != 1:
        raise PhotoscoreError(f"{features_path} holds feature versions {versions}: name the one to train on "
                              "with --feature-version")
    return feature_set(int(versions[0])).version


def load_training_data(features_path: Path | str, labels_path: Path | str, target: str,
                       feature_names: Sequence[str], feature_version: int,
                       fractions: Sequence[float] = DEFAULT_FRACTIONS) -> TrainingData:
    """Read a features parquet and a labels parquet, join on photo_id and split by source photo.

    Rows whose features are not finite are dropped (they are quarantined at feature time and must
    not reach a model); a target column that is missing or not binary is an error naming the file.
    """
    features = pd.read_parquet(features_path)
    labels = pd.read_parquet(labels_path)
    missing = [c for c in ("photo_id", *feature_names) if c not in features.columns]
    if missing:
        raise PhotoscoreError(f"{features_path} lacks feature columns {missing}; recompute features")
    if "feature_version" in features.columns:
        # A model is trained on one feature version (recorded in its bundle): keep that version's rows.
        versions = set(pd.unique(features["feature_version"]).tolist())
        if feature_version not in versions:
            raise PhotoscoreError(
                f"{features_path} holds feature versions {sorted(versions)}, none of version {feature_version} - "
                f"compute them with `photoscore features --feature-version {feature_version}`")
        features = features[features["feature_version"] == feature_version]
    if target not in labels.columns or "photo_id" not in labels.columns:
        raise PhotoscoreError(
            f"{labels_path} has no {target!r} column (columns: {', '.join(labels.columns)})")
    label_cols = [c for c in ("photo_id", target, "source_photo", "duplicate_of") if c in labels.columns]
    table = features[["photo_id", *feature_names]].merge(
        labels[label_cols].drop_duplicates("photo_id"), on="photo_id", how="inner", validate="many_to_one")
    table = table.drop_duplicates("photo_id").sort_values("photo_id", kind="stable").reset_index(drop=True)
    if table.empty:
        raise PhotoscoreError(f"no photo_id of {features_path} appears in {labels_path}")
    X = table[list(feature_names)].to_numpy(dtype=np.float32)
    finite = np.isfinite(X).all(axis=1)
    y_raw = table[target]
    if y_raw.isna().any() or not set(pd.unique(y_raw.astype(int))) <= {0, 1}:
        raise PhotoscoreError(f"{labels_path}: target {target!r} must be 0/1 (or boolean) with no gaps")
    y = y_raw.astype(int).to_numpy()
    groups = group_keys(table)
    split = assign_splits(groups, fractions).to_numpy()
    splits = {}
    for name in SPLITS:
        mask = (split == name) & finite
        splits[name] = Split(X=X[mask], y=y[mask], photo_ids=table["photo_id"].to_numpy()[mask],
                             groups=groups.to_numpy()[mask])
    if len(np.unique(splits["train"].y)) < 2:
        raise PhotoscoreError(f"the training split of {labels_path} has a single {target!r} class; "
                              "a classifier needs both - use a larger corpus")
    return TrainingData(tuple(feature_names), feature_version, target, splits)
