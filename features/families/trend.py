"""Trend: the daily rate in a short window over the daily rate in a long window.

trend = (count_short / short_days) / (count_long / long_days); 1 = steady, > 1 = accelerating.
Null when the long window has no events of that kind.
"""
from __future__ import annotations

from pyspark.sql import DataFrame

from features.feature_spec import Feature, FeatureSpec
from features.families.common import ratio, total, with_features

FAMILY = "trend"

# (daily column, short window, long window)
TRENDS = (
    ("events", 7, 30), ("views", 7, 90), ("views", 30, 365),
    ("purchases", 30, 365), ("spend", 30, 365),
)


def definitions(spec: FeatureSpec) -> list[Feature]:
    return [
        Feature(f"{column}_trend_{short}d_vs_{long}d",
                f"Daily {column} rate in the last {short} days / daily rate in the last {long} days.",
                "double", FAMILY, f"user_daily.{column}", long,
                compute=lambda c=column, s=short, lg=long: ratio(
                    total(c, s) / float(s), total(c, lg) / float(lg)))
        for column, short, long in TRENDS
    ]


def add_trend_features(totals: DataFrame, spec: FeatureSpec) -> DataFrame:
    return with_features(totals, definitions(spec))
