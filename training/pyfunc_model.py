"""The MLflow pyfunc around a model directory: `mlflow.pyfunc.load_model(uri).predict(frame)`
returns what the score stage computes per user (p_purchase, expected_spend, p_category_<id>).
Imported only where MLflow is used: it imports mlflow."""
from __future__ import annotations

import mlflow.pyfunc


class DemandcastModel(mlflow.pyfunc.PythonModel):
    """Loads the SavedModel and preprocessing of the logged model directory (artifact
    `model_dir`) through the same loader as the score stage."""

    def load_context(self, context) -> None:
        from training.model_directory import load_scoring_model

        self._model = load_scoring_model(context.artifacts["model_dir"])

    def predict(self, context, model_input, params=None):
        return self._model.predict(model_input)
