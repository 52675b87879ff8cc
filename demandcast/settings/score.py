"""Settings of the `score` stage (conf section `score`)."""
from __future__ import annotations

import datetime as dt

from pydantic import Field, field_validator

from demandcast.settings.base import Section


class ScoreSettings(Section):
    # Snapshot of user_features to score; None = the latest snapshot in the table.
    snapshot_date: dt.date | None = None
    # Pin a model version of the `models` table; None = the champion (models.status).
    model_version: str | None = None
    # Load the model from the MLflow registry instead, e.g. models:/demandcast@champion (needs
    # mlflow.tracking_uri); the version scored is the one the registered version was made from.
    model_uri: str | None = None
    # Rows per Arrow batch sent to the Python workers; None = spark.arrow_batch_size.
    arrow_batch_size: int | None = Field(None, ge=1)
    # How many categories (best first) each prediction row keeps in top_categories.
    top_categories: int = Field(3, ge=1)
    # Rescore a (snapshot, model version) already in the tables; otherwise a rerun is a no-op.
    force: bool = False
    # Users whose top drivers are computed (occlusion): these keys, plus a deterministic hash
    # sample of this fraction of all users.
    explain_user_keys: list[str] = []
    explain_fraction: float = Field(0.0, ge=0.0, le=1.0)
    explain_top_n: int = Field(3, ge=1)
    # Feature group -> columns occluded together; columns not named form one group each.
    feature_groups: dict[str, list[str]] = {}
    # Population stability index: bins from the training snapshot's quantiles, warn above this.
    psi_bins: int = Field(10, ge=2, le=100)
    psi_warn_threshold: float = Field(0.2, gt=0.0)
    # A numeric input above the PSI threshold alerts only when it also moved materially: the
    # mean of its values by this relative amount, or its share of nulls by this much. PSI alone
    # flags any move of a value many users share (a category's rate recomputed over a new window).
    psi_min_relative_change: float = Field(0.1, ge=0.0)
    psi_min_null_share_change: float = Field(0.05, ge=0.0, le=1.0)
    # PSI compares the users with an event in the last N days of each snapshot (null: all). A
    # snapshot's population is every user ever seen, so its share of long-dormant users grows
    # with the age of the data (nobody can be dormant for 90 days 90 days after the data
    # starts), and PSI read that as drift of every windowed feature; the shares are logged.
    psi_active_days: int | None = Field(90, ge=1)
    # Most frequent categorical values kept as PSI bins; the rest fall into one "other" bin.
    psi_max_categories: int = Field(20, ge=1)
    # Reference snapshot for drift and occlusion; None = the model's training snapshot.
    reference_snapshot_date: dt.date | None = None

    @field_validator("feature_groups")
    @classmethod
    def _columns_in_one_group(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        seen: dict[str, str] = {}
        for group, columns in value.items():
            if not columns:
                raise ValueError(f"feature group {group!r} has no columns")
            for column in columns:
                if column in seen:
                    raise ValueError(f"column {column!r} is in groups {seen[column]!r} and {group!r}")
                seen[column] = group
        return value
