"""user_daily summed per (user, snapshot) over every window a feature reads.

For each snapshot D only user_daily rows with event_date < D count (events with event_time < D,
event_date being the UTC date of event_time). The rows are shuffled once by user_key; every
per-user aggregation of a snapshot (window totals, category totals, their join) then runs inside
those partitions without another shuffle, and a backfill pairs each row with its later snapshots
after the shuffle, so the shuffle does not grow with the number of snapshots.

Window totals are computed without a conditional sum per (column, window): each row is tagged
with the narrowest window that contains it (its bucket), the plain columns are summed per
(user, snapshot, bucket) and pivoted into one row per (user, snapshot), and a window's total is
the sum of its buckets. Spark compiles one small sum per column instead of one per window.
"""
from __future__ import annotations

import datetime as dt
from typing import Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from features.feature_spec import FeatureSpec
from features.daily import (ADDITIVE_COLUMNS, EXACT_SUM_COLUMNS, TIME_COLUMNS, as_micros, device_codes,
                            from_micros, packed_time_device, unpacked_device)
from features.families.common import total_name

KEYS = ["user_key", "snapshot_date"]

# Additive columns that are null on days whose value is unknown (promotions without an items
# dimension): their window total is null when no day of the window knew it, 0 only when known.
NULLABLE_SUMS = ("promo_purchases",)


def snapshot_frame(spark: SparkSession, snapshots: Sequence[dt.date]) -> DataFrame:
    if not snapshots:
        raise ValueError("no snapshot dates to compute")
    return spark.createDataFrame([(d,) for d in sorted(set(snapshots))], "snapshot_date date")


def daily_rows_by_snapshot(user_daily: DataFrame, snapshots: Sequence[dt.date],
                           by_user: bool = True) -> DataFrame:
    """user_daily rows before the last snapshot, each paired with every snapshot after it, with
    `age_days` = D - event_date (1 for the day before the snapshot). `by_user` shuffles the rows
    by user_key first, for the per-user aggregations; sums over all users (population rates)
    take them as they are read, so their map-side partial sums leave little to shuffle."""
    rows = user_daily.where(F.col("event_date") < F.lit(max(snapshots)))
    if by_user:
        rows = rows.repartition("user_key")
    dates = snapshot_frame(user_daily.sparkSession, snapshots)
    return (rows.join(F.broadcast(dates), F.col("event_date") < F.col("snapshot_date"))
            .withColumn("age_days", F.datediff("snapshot_date", "event_date")))


def window_bucket(windows: Sequence[int]) -> Column:
    """Index of the narrowest window (sorted `windows`) holding the row's age; len(windows) for
    rows older than every window (they count only for all-history values)."""
    bucket = F.lit(len(windows))
    for i, w in reversed(list(enumerate(windows))):
        bucket = F.when(F.col("age_days") <= w, F.lit(i)).otherwise(bucket)
    return bucket


def _bucket_sum(column: str) -> Column:
    value = as_micros(F.col(column)) if column in EXACT_SUM_COLUMNS else F.col(column).cast("long")
    return F.sum(value).alias(column)


def window_totals(rows: DataFrame, spec: FeatureSpec, devices: list[str | None] | None) -> DataFrame:
    """Per (user_key, snapshot_date): every additive column summed over every window
    (total_name(column, w)), plus the all-history extremes (first/last event times, last device).

    `rows` come from daily_rows_by_snapshot. `devices` (the distinct last_device values) lets the last
    device be a max over a long, which keeps the aggregation a hash aggregation.
    """
    windows = spec.all_windows
    buckets = list(range(len(windows) + 1))
    codes = device_codes(devices)
    device = (packed_time_device(F.col("last_event_time"), F.col("last_device"), codes)
              if codes is not None else F.struct("last_event_time", "last_device"))
    per_bucket = (rows.withColumn("bucket", window_bucket(windows))
                  .groupBy(*KEYS).pivot("bucket", buckets)
                  .agg(*[_bucket_sum(c) for c in ADDITIVE_COLUMNS],
                       *[F.count(c).alias(f"{c}__known") for c in NULLABLE_SUMS],
                       F.min("first_event_time").alias("first_event_time"),
                       *[F.max(c).alias(c) for c in TIME_COLUMNS[1:]],
                       F.max(device).alias("device_key")))

    def of_bucket(b: int, column: str) -> Column:
        return F.col(f"{b}_{column}")

    def window_total(column: str, i: int) -> Column:
        summed = sum((F.coalesce(of_bucket(b, column), F.lit(0)) for b in range(i + 1)), F.lit(0))
        if column in NULLABLE_SUMS:
            known = sum((F.coalesce(of_bucket(b, f"{column}__known"), F.lit(0)) for b in range(i + 1)), F.lit(0))
            summed = F.when(known > 0, summed)
        return from_micros(summed) if column in EXACT_SUM_COLUMNS else summed

    last_key = F.greatest(*[of_bucket(b, "device_key") for b in buckets])
    last_device = unpacked_device(last_key, codes) if codes is not None else last_key["last_device"]
    return per_bucket.select(
        *KEYS,
        *[window_total(c, i).alias(total_name(c, w)) for c in ADDITIVE_COLUMNS
          for i, w in enumerate(windows)],
        F.least(*[of_bucket(b, "first_event_time") for b in buckets]).alias("first_event_time"),
        *[F.greatest(*[of_bucket(b, c) for b in buckets]).alias(c) for c in TIME_COLUMNS[1:]],
        last_device.alias("last_device"),
    )

