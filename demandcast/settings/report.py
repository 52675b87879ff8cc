"""Settings of the run report (conf section `report`): the HTML page `run-all` and `demandcast
report` write under {runs_dir}/reports/."""
from __future__ import annotations

from pydantic import Field

from demandcast.settings.base import Section


class ReportSettings(Section):
    # Features whose distributions are drawn; empty = the model's most important numeric inputs
    # (evaluation importance, then drift), up to max_features.
    features: list[str] = []
    max_features: int = Field(6, ge=1, le=24)
    # Rows of the scored (and the reference) snapshot sampled for the histograms.
    sample_rows: int = Field(20_000, ge=100)
    # Explained users (predictions.drivers) shown as examples of per-user drivers.
    driver_examples: int = Field(10, ge=0)
    # Categories shown in the demand chart (highest expected buyers first).
    max_categories: int = Field(20, ge=1)
