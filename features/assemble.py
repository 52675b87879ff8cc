"""The one place that turns user_daily into the feature table for one or more snapshots.

For each snapshot D, only user_daily rows with event_date < D are used (events with
event_time < D, since event_date is the UTC date of event_time). Every windowed sum of every
family comes from one set of per-user sums over those rows, computed one of two ways:
- by Python workers, one per snapshot and range of users, reading user_daily's files with numpy
  (snapshot_aggregates_from_files, features.snapshot_aggregates), the default;
- by Spark: ONE aggregation of conditional sums `sum(case when age_days <= w then x end)` for all
  windows at once, a backfill pairing each daily row with every later snapshot (a broadcast
  non-equi join with the small snapshot list) and aggregating by (user_key, snapshot_date) in the
  same pass (window_totals and the category families' tables).
The families' expressions then run in Spark over one row per user and snapshot either way.
"""
from __future__ import annotations

import datetime as dt
from typing import Sequence

import pyarrow as pa
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from demandcast.tables import PartitionFiles, TableFiles
from features.catalog import FeatureSpec, feature_catalog
from features.daily import (ADDITIVE_COLUMNS, EXACT_SUM_COLUMNS, device_codes, distinct_devices,
                            exact_sum, packed_time_device, unpacked_device)
from features.families.category_affinity import (add_category_affinity_features,
                                                 categories_in_profile_window, category_window_totals)
from features.families.common import total_name
from features.families.context import add_context_features
from features.families.frequency import add_frequency_features
from features.families.funnel import add_funnel_features
from features.families.price import add_price_features
from features.families.recency import add_recency_features
from features.families.sessions import add_session_features
from features.families.trend import add_trend_features
from features.snapshot_aggregates import IN_USERS, USER_ATTRIBUTE_NAMES
from features.user_ranges import per_user_range

KEYS = ["user_key", "snapshot_date"]
# IN_USERS is true on the users side of the left join, so null marks a feature row whose user has
# no record in the users dimension (a record with null attributes leaves the attributes null too).


def snapshot_frame(spark: SparkSession, snapshots: Sequence[dt.date]) -> DataFrame:
    if not snapshots:
        raise ValueError("no snapshot dates to compute")
    return spark.createDataFrame([(d,) for d in sorted(set(snapshots))], "snapshot_date date")


def daily_before_snapshots(user_daily: DataFrame, snapshots: DataFrame) -> DataFrame:
    """user_daily rows paired with every snapshot after them, with `age_days` = D - event_date
    (1 for the day before the snapshot): rows on or after D never reach snapshot D."""
    first = snapshots.agg(F.max("snapshot_date")).first()[0]
    # Pruning on the partition column before the join keeps later partitions unread.
    rows = user_daily.where(F.col("event_date") < F.lit(first))
    return (rows.join(F.broadcast(snapshots), F.col("event_date") < F.col("snapshot_date"))
            .withColumn("age_days", F.datediff("snapshot_date", "event_date")))


def window_totals(daily: DataFrame, spec: FeatureSpec, devices: Sequence[str] = ()) -> DataFrame:
    """Per (user_key, snapshot_date): every additive column summed over every window, plus the
    all-history extremes (first/last event times, last device).

    `devices` (the distinct last_device values) lets the last device be found with a plain max
    over a long (features.daily.packed_time_device), which keeps this a hash aggregation.
    """
    def window_sum(column: str, w: int):
        value = F.when(F.col("age_days") <= w, F.col(column))
        if column in EXACT_SUM_COLUMNS:
            return exact_sum(value)
        return F.coalesce(F.sum(value), F.lit(0))

    sums = [window_sum(c, w).alias(total_name(c, w)) for c in ADDITIVE_COLUMNS for w in spec.all_windows]
    extremes = [
        F.min("first_event_time").alias("first_event_time"),
        F.max("last_event_time").alias("last_event_time"),
        F.max("last_view_time").alias("last_view_time"),
        F.max("last_cart_time").alias("last_cart_time"),
        F.max("last_purchase_time").alias("last_purchase_time"),
    ]
    codes = device_codes(list(devices) if devices else None)
    if codes is None:
        device = F.max_by("last_device", F.struct("last_event_time", "last_device"))
        return daily.groupBy(*KEYS).agg(*sums, *extremes, device.alias("last_device"))
    packed = F.max(packed_time_device(F.col("last_event_time"), F.col("last_device"), codes))
    return (daily.groupBy(*KEYS).agg(*sums, *extremes, packed.alias("last_device_packed"))
            .withColumn("last_device", unpacked_device(F.col("last_device_packed"), codes))
            .drop("last_device_packed"))


def snapshot_aggregates_from_files(spark: SparkSession, source: PartitionFiles, rows_per_date: dict,
                                   snapshot_dates: Sequence[dt.date], spec: FeatureSpec,
                                   users: TableFiles | None = None) -> DataFrame:
    """window_totals and the category affinity sums of every user and snapshot, computed by
    Python workers from user_daily's Parquet files (`source`) with numpy
    (features.snapshot_aggregates): each task takes one snapshot and one range of users and
    reads every earlier date's rows of its users (features.user_ranges), so no rows are shuffled.
    With `users` (the users dimension's files) each task also joins its users' attributes, the
    join user_features would otherwise make with a shuffle of every row."""
    from features.snapshot_aggregates import (USERS_COLUMNS, aggregates_schema, snapshot_aggregates,
                                              user_attributes_schema, with_user_attributes)
    from features.table_files import read_files

    windows, profile, top_k = spec.all_windows, spec.profile_window_days, spec.top_k_categories
    schema = aggregates_schema(windows, top_k)
    if users is not None:
        schema = pa.schema([*schema, *user_attributes_schema()])

    def compute(dates, keys, columns, snapshot):
        sums = snapshot_aggregates(dates, keys, columns, snapshot, windows, profile, top_k)
        if users is None:
            return sums
        return with_user_attributes(sums, read_files(users.root, users.files, USERS_COLUMNS)).cast(schema)

    return per_user_range(spark, source, rows_per_date, snapshot_dates,
                          lambda snapshot: [d for d in sorted(source.files) if d < snapshot],
                          compute, schema)


def population_from_files(spark: SparkSession, source: PartitionFiles, rows_per_date: dict,
                          snapshot_dates: Sequence[dt.date], spec: FeatureSpec) -> DataFrame:
    """All users' funnel counts and category sums per event date, paired with every later
    snapshot as daily_before_snapshots pairs user_daily rows: a few rows (is_total, category_id,
    views, carts, purchases) that the funnel priors and the category context sum instead of
    user_daily itself. Python workers read the dates' files (features.snapshot_aggregates.
    population_sums), only those inside a funnel window or the profile window of a snapshot."""
    from features.daily import day_tasks
    from features.snapshot_aggregates import POPULATION_COLUMNS, POPULATION_SCHEMA, population_sums
    from features.table_files import read_files

    def within(d: dt.date, days: int) -> bool:
        return any(0 < (snapshot - d).days <= days for snapshot in snapshot_dates)

    dates = [d for d in source.files if within(d, max((*spec.funnel_windows_days, spec.profile_window_days)))]
    with_categories = {d for d in dates if within(d, spec.profile_window_days)}
    root = source.root

    def sums(batches):
        for batch in batches:
            for task in batch.column("days").to_pylist():
                for day in task:
                    d, categories = day["event_date"], day["event_date"] in with_categories
                    columns = POPULATION_COLUMNS if categories else POPULATION_COLUMNS.remove(
                        POPULATION_COLUMNS.get_field_index("categories"))
                    yield from population_sums(d, read_files(root, day["files"], columns),
                                               categories).to_batches()

    tasks = day_tasks(spark, PartitionFiles(root, {d: source.files[d] for d in dates}), rows_per_date)
    schema = from_arrow_schema(POPULATION_SCHEMA)
    table = tasks.mapInArrow(sums, schema).toArrow() if dates else POPULATION_SCHEMA.empty_table()
    return daily_before_snapshots(spark.createDataFrame(table, schema), snapshot_frame(spark, snapshot_dates))


def rows_without_user(snapshot_dates: Sequence[dt.date]) -> list[Column]:
    """Per snapshot, the feature rows whose user has no record in `users` (one count each,
    named by the ISO date)."""
    missing = F.col(IN_USERS).isNull()
    return [F.count_if(missing & (F.col("snapshot_date") == F.lit(d))).alias(d.isoformat())
            for d in snapshot_dates]


def user_features(user_daily: DataFrame, users: DataFrame, snapshot_dates: Sequence[dt.date],
                  spec: FeatureSpec, without_user: Observation | None = None,
                  aggregates: DataFrame | None = None, population: DataFrame | None = None
                  ) -> DataFrame:
    """The feature table: one row per (user with any event before D, snapshot D) for every D
    in `snapshot_dates`.

    `aggregates` (snapshot_aggregates_from_files) holds the window totals and category affinity
    sums already, and the users' attributes when it has IN_USERS; `population`
    (population_from_files) all users' sums; without them Spark aggregates user_daily and joins
    `users`. `without_user` receives
    `rows_without_user` per snapshot when the result is computed: the counts come with the
    action that writes the rows, not from another pass.
    """
    daily = daily_before_snapshots(user_daily, snapshot_frame(user_daily.sparkSession, snapshot_dates))
    if aggregates is None:
        totals = window_totals(daily, spec, distinct_devices(user_daily, "last_device"))
        category_totals = category_window_totals(daily, spec)
        categories = category_totals
    else:
        totals, category_totals = aggregates, None
        categories = categories_in_profile_window(daily, spec)
    funnel_rows = daily
    if population is not None:  # the same sums over a few rows instead of user_daily's
        funnel_rows = population.where(F.col("is_total"))
        categories = population.where(~F.col("is_total") & (F.col("age_days") <= spec.profile_window_days))
    base = totals
    if IN_USERS not in totals.columns:
        dims = users.select("user_key", *[F.col(c).alias(name) for c, name in USER_ATTRIBUTE_NAMES.items()],
                            F.lit(True).alias(IN_USERS))
        base = totals.join(dims, "user_key", "left")
    base = add_recency_features(base, spec)
    base = add_frequency_features(base, spec)
    base = add_funnel_features(base, funnel_rows, spec)
    base = add_session_features(base, spec)
    base = add_category_affinity_features(base, spec, category_totals)
    base = add_price_features(base, spec)
    base = add_trend_features(base, spec)
    base = add_context_features(base, categories, spec)
    features = base.select(*KEYS, *[f.name for f in feature_catalog(spec)], IN_USERS)
    if without_user is not None:
        features = features.observe(without_user, *rows_without_user(sorted(set(snapshot_dates))))
    return features.drop(IN_USERS)
