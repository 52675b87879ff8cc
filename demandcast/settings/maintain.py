"""Settings of the `maintain` stage (conf section `maintain`)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from demandcast.settings.base import Section

# The tables maintain may touch (TableSpec names; cluster_check is the packaging probe's).
MaintainedTable = Literal[
    "events", "quarantine", "users", "items", "user_daily", "user_features", "labels",
    "training_set", "models", "predictions", "category_demand", "predictions_current"]


class MaintainSettings(Section):
    # Tables whose small files OPTIMIZE compacts: appends and partition replaces of daily runs
    # leave many small files there.
    optimize_tables: list[MaintainedTable] = ["events", "user_daily", "predictions"]
    # Tables VACUUM cleans of files no version within their retention needs ([] = none).
    vacuum_tables: list[MaintainedTable] = [
        "events", "quarantine", "users", "items", "user_daily", "user_features", "labels",
        "training_set", "models", "predictions", "category_demand", "predictions_current"]
    # The least time a removed file stays (delta.deletedFileRetentionDuration): a reader or a
    # writer running longer than this may lose files under it. training_set keeps more when a
    # model or an unfinished training run pins an older version. Below 168 h only for tables
    # no long job reads.
    min_retention_hours: float = Field(168.0, ge=0)
    # Added to a pinned version's age: the time between computing the retention and VACUUM.
    pin_margin_hours: float = Field(1.0, ge=0)
    # How long the transaction log keeps versions (delta.logRetentionDuration), never less than
    # the file retention: time travel to a version needs its log entries as well as its files.
    min_log_retention_days: float = Field(30.0, ge=0)
