"""The MLflow pyfunc around a model directory, logged as code (MLflow's models-from-code: this
file, not a pickle, so loading it runs no bytes from the registry): `mlflow.pyfunc.load_model(uri)
.predict(frame)` returns what the score stage computes per user (p_purchase, expected_spend,
p_category_<id>). Only MLflow loads this file."""
from __future__ import annotations

import mlflow.pyfunc
from mlflow.models import set_model


class DemandcastModel(mlflow.pyfunc.PythonModel):
    """Loads the SavedModel and preprocessing of the logged model directory (artifact
    `model_dir`) through the same loader as the score stage."""

    def load_context(self, context) -> None:
        from training.model_directory import load_scoring_model

        self._model = load_scoring_model(context.artifacts["model_dir"])

    def predict(self, context, model_input, params=None):
        return self._model.predict(model_input)


set_model(DemandcastModel())
