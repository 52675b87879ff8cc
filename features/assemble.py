"""The one place that turns user_daily (and the users dimension) into the feature table for one
or more snapshots.

For each snapshot D only user_daily rows with event_date < D are used (features.window_sums);
every family's expressions then run over one row per user and snapshot that carries the window
totals, the category sums and the user's attributes as they were known before D.
"""
from __future__ import annotations

import datetime as dt
from typing import Sequence

from pyspark.sql import Column, DataFrame, Observation
from pyspark.sql import functions as F

from features.catalog import feature_catalog
from features.dimensions import HISTORY_COLUMNS, attributes_on, snapshot_day_of
from features.families.btyd import Parameters, add_btyd_features, fit_parameters
from features.families.category_affinity import add_category_affinity_features, category_window_totals
from features.families.context import add_context_features
from features.families.frequency import add_frequency_features
from features.families.funnel import add_funnel_features
from features.families.price import add_price_features
from features.families.recency import add_recency_features
from features.families.sessions import add_session_features
from features.families.trend import add_trend_features
from features.feature_spec import FeatureSpec
from features.window_sums import KEYS, daily_rows_by_snapshot, window_totals

# The users dimension's attributes the families read, and the names the feature rows carry
# them under. IN_USERS is true on rows that found their user: null marks a feature row whose
# user has no record valid before the snapshot (a record with null attributes leaves only the
# attributes null).
USER_ATTRIBUTE_NAMES = {"signup_date": "signup_date", "region": "user_region", "age_band": "user_age_band"}
USER_ATTRIBUTE_TYPES = {"signup_date": "date", "region": "string", "age_band": "string"}
IN_USERS = "_in_users"


def with_user_attributes(totals: DataFrame, users: DataFrame | None) -> DataFrame:
    """`totals` (one row per user and snapshot) with the user's attributes as known before the
    snapshot: the users version valid on D - 1. Without a users dimension they are null."""
    if users is None:
        return totals.select("*", *[F.lit(None).cast(USER_ATTRIBUTE_TYPES[c]).alias(name)
                                    for c, name in USER_ATTRIBUTE_NAMES.items()],
                             F.lit(None).cast("boolean").alias(IN_USERS))
    dims = users.select("user_key", *HISTORY_COLUMNS,
                        *[F.col(c).alias(name) for c, name in USER_ATTRIBUTE_NAMES.items()],
                        F.lit(True).alias(IN_USERS))
    known_on = totals.withColumn("_known_on", snapshot_day_of(F.col("snapshot_date")))
    return attributes_on(known_on, dims, "user_key", "_known_on").drop("_known_on")


def rows_without_user(snapshot_dates: Sequence[dt.date]) -> list[Column]:
    """Per snapshot, the feature rows whose user has no record in `users` (one count each,
    named by the ISO date)."""
    missing = F.col(IN_USERS).isNull()
    return [F.count_if(missing & (F.col("snapshot_date") == F.lit(d))).alias(d.isoformat())
            for d in snapshot_dates]


def user_features(user_daily: DataFrame, users: DataFrame | None, snapshot_dates: Sequence[dt.date],
                  spec: FeatureSpec, devices: list[str | None] | None = None,
                  without_user: Observation | None = None,
                  btyd_parameters: Parameters | None = None) -> DataFrame:
    """The feature table: one row per (user with any event before D, snapshot D) for every D
    in `snapshot_dates`.

    `devices` (features.daily.distinct_devices of user_daily's last_device) makes the last
    device a max over a long. `without_user` receives `rows_without_user` per snapshot when the
    result is computed: the counts come with the action that writes the rows, not another pass.
    `btyd_parameters` (features.families.btyd.fit_parameters) are fitted here when not given:
    a job over user_daily's purchase days whose sample, bounded per snapshot, reaches the driver.
    """
    snapshots = sorted(set(snapshot_dates))
    rows = daily_rows_by_snapshot(user_daily, snapshots)
    category_totals = category_window_totals(rows, spec)
    base = with_user_attributes(window_totals(rows, spec, devices), users)
    base = add_recency_features(base, spec)
    base = add_frequency_features(base, spec)
    base = add_funnel_features(base, daily_rows_by_snapshot(user_daily, snapshots, by_user=False), spec)
    base = add_session_features(base, spec)
    base = add_category_affinity_features(base, spec, category_totals)
    base = add_price_features(base, spec)
    base = add_trend_features(base, spec)
    base = add_context_features(base, category_totals, spec)
    if btyd_parameters is None:
        btyd_parameters = fit_parameters(user_daily, snapshots, spec)
    base = add_btyd_features(base, rows, btyd_parameters, spec)
    features = base.select(*KEYS, *[f.name for f in feature_catalog(spec)], IN_USERS)
    if without_user is not None:
        features = features.observe(without_user, *rows_without_user(snapshots))
    return features.drop(IN_USERS)
