"""Settings of MLflow tracking and the model registry (conf section `mlflow`). The models Delta
table stays the warehouse's record either way; MLflow is a copy for the people who use it."""
from __future__ import annotations

from pydantic import Field

from demandcast.settings.base import Section


class MlflowSettings(Section):
    # Tracking server, e.g. http://mlflow.internal:5000 (or a databricks URI); None = no MLflow.
    tracking_uri: str | None = None
    # Experiment that train and evaluate runs are logged under.
    experiment: str = Field("demandcast", min_length=1)
    # Registered model every trained model becomes a version of.
    registered_model: str = Field("demandcast", min_length=1)
    # Alias the champion's registered version carries; score can load models:/<name>@<alias>.
    champion_alias: str = Field("champion", min_length=1)
