"""Labels for snapshot D from user_daily: what each user of the feature table did in the label
window D <= event_time < D + N days (the N whole days from D; features use event_time < D)."""
from __future__ import annotations

import datetime as dt
from typing import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.daily import exact_sum
from features.window_sums import snapshot_frame

KEYS = ["user_key", "snapshot_date"]
LABEL_COLUMNS = ("label_purchased", "label_spend", "label_n_purchases", "label_category_spend")


def label_sums(user_daily: DataFrame, snapshot_dates: Sequence[dt.date], window_days: int) -> DataFrame:
    """Per (user_key, snapshot_date) with a purchase in the label window: spend, n_purchases and
    category_spend (spend per category bought, keys sorted). Only the event dates of some label
    window are read (partition pruning)."""
    first, end = min(snapshot_dates), max(snapshot_dates) + dt.timedelta(days=window_days)
    snapshots = snapshot_frame(user_daily.sparkSession, snapshot_dates)
    rows = (user_daily.where((F.col("event_date") >= F.lit(first)) & (F.col("event_date") < F.lit(end)))
            .join(F.broadcast(snapshots),
                  (F.col("event_date") >= F.col("snapshot_date"))
                  & (F.col("event_date") < F.date_add("snapshot_date", window_days)))
            .where(F.col("purchases") > 0))
    totals = rows.groupBy(*KEYS).agg(exact_sum(F.col("spend")).alias("spend"),
                                     F.sum("purchases").alias("n_purchases"))
    per_category = (rows.select(*KEYS, F.inline("categories"))
                    .where(F.col("purchases") > 0)
                    .groupBy(*KEYS, "category_id").agg(exact_sum(F.col("spend")).alias("spend"))
                    .groupBy(*KEYS)
                    .agg(F.map_from_entries(F.array_sort(F.collect_list(
                        F.struct("category_id", "spend")))).alias("category_spend")))
    return totals.join(per_category, KEYS, "left")


def labels(population: DataFrame, sums: DataFrame) -> DataFrame:
    """One label row per (user_key, snapshot_date) of `population` (the feature table's keys),
    from `sums` (label_sums)."""
    empty_map = F.create_map().cast("map<string,double>")
    return (population.select(*KEYS)
            .join(sums, KEYS, "left")
            .select(*KEYS,
                    F.when(F.col("n_purchases") > 0, 1).otherwise(0).cast("int").alias("label_purchased"),
                    F.coalesce("spend", F.lit(0.0)).cast("double").alias("label_spend"),
                    F.coalesce("n_purchases", F.lit(0)).cast("int").alias("label_n_purchases"),
                    F.coalesce("category_spend", empty_map).alias("label_category_spend")))
