"""Small column helpers shared by the families: window totals and safe ratios."""
from __future__ import annotations

from typing import Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

SECONDS_PER_DAY = 86400.0


def total_name(column: str, window_days: int) -> str:
    """Name of the window-total column: the sum of user_daily `column` over the window."""
    return f"{column}__{window_days}d"


def total(column: str, window_days: int) -> Column:
    return F.col(total_name(column, window_days))


def ratio(numerator: Column, denominator: Column) -> Column:
    """numerator / denominator as double, null when the denominator is 0 or null."""
    return F.when(denominator > 0, numerator.cast("double") / denominator.cast("double"))


def days_before_snapshot(ts: Column) -> Column:
    """Fractional days from `ts` to the snapshot (00:00 UTC of snapshot_date)."""
    snapshot_ts = F.col("snapshot_date").cast("timestamp")
    return (snapshot_ts.cast("double") - ts.cast("double")) / SECONDS_PER_DAY


def with_features(df: DataFrame, features: Iterable) -> DataFrame:
    """Adds the columns of the features that have an expression, typed as the catalog says."""
    return df.select("*", *[f.compute().cast(f.dtype).alias(f.name) for f in features
                            if f.compute is not None])
