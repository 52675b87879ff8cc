"""Labels for snapshot D from user_daily: what each user of the feature table did in the label
window D <= event_time < D + N days (the N whole days from D; features use event_time < D)."""
from __future__ import annotations

import datetime as dt
from typing import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from demandcast.tables import PartitionFiles
from features.daily import exact_sum
from features.user_ranges import per_user_range

KEYS = ["user_key", "snapshot_date"]
LABEL_COLUMNS = ("label_purchased", "label_spend", "label_n_purchases", "label_category_spend")


def label_sums(user_daily: DataFrame, snapshots: DataFrame, window_days: int) -> DataFrame:
    """Per (user_key, snapshot_date) with a purchase in the label window: spend, n_purchases and
    category_spend (spend per category bought, keys sorted)."""
    last = snapshots.agg(F.max(F.date_add("snapshot_date", window_days))).first()[0]
    rows = (user_daily.where(F.col("event_date") < F.lit(last))
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


def label_sums_from_files(spark: SparkSession, source: PartitionFiles, rows_per_date: dict,
                          snapshot_dates: Sequence[dt.date], window_days: int) -> DataFrame:
    """label_sums computed by Python workers from user_daily's Parquet files (`source`) with
    numpy (features.snapshot_aggregates.label_sums), per snapshot and range of users."""
    from features.snapshot_aggregates import LABEL_SUMS_SCHEMA, label_sums as sums_of_files

    def window_dates(snapshot: dt.date) -> list[dt.date]:
        end = snapshot + dt.timedelta(days=window_days)
        return [d for d in sorted(source.files) if snapshot <= d < end]

    return per_user_range(spark, source, rows_per_date, snapshot_dates, window_dates,
                          sums_of_files, LABEL_SUMS_SCHEMA)


def labels(population: DataFrame, sums: DataFrame) -> DataFrame:
    """One label row per (user_key, snapshot_date) of `population` (the feature table's keys),
    from `sums` (label_sums, or features.snapshot_aggregates.label_sums in Python workers)."""
    empty_map = F.create_map().cast("map<string,double>")
    return (population.select(*KEYS)
            .join(sums, KEYS, "left")
            .select(*KEYS,
                    F.when(F.col("n_purchases") > 0, 1).otherwise(0).cast("int").alias("label_purchased"),
                    F.coalesce("spend", F.lit(0.0)).cast("double").alias("label_spend"),
                    F.coalesce("n_purchases", F.lit(0)).cast("int").alias("label_n_purchases"),
                    F.coalesce("category_spend", empty_map).alias("label_category_spend")))
