"""The MLflow pyfunc model of every photoscore version, logged as code ("models from code").

MLflow stores this file as the model's code and the bundle directory as its `bundle` artifact; on
load it runs this file, so nothing is ever pickled. `predict` takes a DataFrame with the bundle's
feature columns and returns positive-class probabilities through the scorer registry - unlike
MLflow's stock XGBoost flavour, whose pyfunc returns class labels for an XGBClassifier.
The export format is a predict parameter (`params={"export_format": <id>}`, udfs/formats/),
default the reference format.
"""
from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from udfs.bundle import read_feature_schema, verify_bundle
from udfs.errors import PhotoscoreError
from udfs.formats import load_scorer, reference_format

BUNDLE_ARTIFACT = "bundle"


class PhotoscoreModel(PythonModel):
    """Scores a feature DataFrame with one export of the version's bundle."""

    def load_context(self, context) -> None:
        self.bundle_dir = Path(context.artifacts[BUNDLE_ARTIFACT])
        verify_bundle(self.bundle_dir)
        self.schema = read_feature_schema(self.bundle_dir)
        self._scorers = {}

    def _scorer(self, export_format: str):
        if export_format not in self._scorers:
            self._scorers[export_format] = load_scorer(self.bundle_dir, export_format)
        return self._scorers[export_format]

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        export_format = (params or {}).get("export_format") or reference_format().id
        missing = [n for n in self.schema.names if n not in model_input.columns]
        if missing:
            raise PhotoscoreError(f"model input lacks feature columns {missing}")
        X = model_input[list(self.schema.names)].to_numpy(dtype=np.float32)
        return self._scorer(export_format).score(X)


mlflow.models.set_model(PhotoscoreModel())
