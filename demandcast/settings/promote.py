"""Settings of the champion/challenger decision (conf section `promote`): `evaluate` applies it
to the model it evaluated, `demandcast promote` to any model, and `demandcast promote --rollback`
restores the previous champion."""
from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from demandcast.settings.base import Section

# Metric -> True when higher is better. Every one is computed in Spark on the same rows for both
# models (training.evaluation.promotion).
METRIC_HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "log_loss": False, "brier": False}


class PromoteSettings(Section):
    # What decides: a challenger must beat the champion on it by min_gain, on the out-of-time
    # set (the newest labelled snapshot neither model trained on).
    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier"] = "roc_auc"
    # The margin, in the metric's units and in its better direction (0.002 of ROC-AUC: a
    # challenger at 0.781 does not replace a champion at 0.780).
    min_gain: float = Field(0.002, ge=0.0)
    # `evaluate` decides for the model it evaluated; false leaves the decision to `promote`.
    on_evaluate: bool = True
    # The challenger `promote` decides for; None = the newest model of the models table.
    model_version: str | None = None
    # Pin the out-of-time snapshot; None = the newest labelled snapshot neither model trained on.
    evaluation_snapshot: dt.date | None = None
    # `demandcast promote --rollback`: the previous champion becomes champion again.
    rollback: bool = False
