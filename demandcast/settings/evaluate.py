"""Settings of the `evaluate` stage (conf section `evaluate`)."""
from __future__ import annotations

from pydantic import Field

from demandcast.settings.base import Section


class EvaluateSettings(Section):
    # Model to evaluate; None means the newest row of the models table.
    model_version: str | None = None
    # Decision threshold on p_purchase for precision / recall / F1.
    threshold: float = Field(0.5, gt=0, lt=1)
    # "Top k%" targeting: precision, recall and F1 of the k% highest scores.
    top_k_percent: float = Field(10.0, gt=0, le=100)
    calibration_bins: int = Field(10, ge=2, le=100)
    # Recency baseline: score = -value of this feature (fewer days since last purchase = likelier).
    recency_feature: str = "days_since_last_purchase"
    # Test rows brought to the driver (the model, the baselines and the oracle are scored there):
    # a larger test split is evaluated on a uniform sample of this many rows, which metrics.json
    # and the report state. Also caps the baselines' training rows.
    max_driver_rows: int = Field(200_000, ge=100)
    # Baselines train on at most this many training rows (a uniform sample beyond it).
    baseline_max_rows: int = Field(200_000, ge=100)
    # Rows of the test set used for permutation feature importance.
    importance_rows: int = Field(5_000, ge=100)
    lightgbm_rounds: int = Field(300, ge=10)
    # Compare with the simulator's true probabilities when {raw_dir}/ground_truth exists.
    oracle: bool = True
