"""Recency and tenure: days since the last view, cart, purchase; since signup and first event."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.feature_spec import Feature, FeatureSpec
from features.families.common import days_before_snapshot, with_features

FAMILY = "recency"


def definitions(spec: FeatureSpec) -> list[Feature]:
    features = []
    for role, noun in (("view", "view"), ("cart", "cart"), ("purchase", "purchase")):
        last = f"last_{role}_time"
        features.append(Feature(
            f"days_since_last_{noun}",
            f"Days (fractional) from the user's last {noun} event to the snapshot; null if none.",
            "double", FAMILY, f"user_daily.last_{role}_time",
            compute=lambda last=last: days_before_snapshot(F.col(last))))
        features.append(Feature(
            f"has_{noun}ed" if noun != "purchase" else "has_purchased",
            f"1 if the user had any {noun} event before the snapshot, else 0.",
            "int", FAMILY, f"user_daily.last_{role}_time",
            compute=lambda last=last: F.when(F.col(last).isNotNull(), 1).otherwise(0)))
    features += [
        Feature("days_since_last_event", "Days (fractional) from the user's last event to the snapshot.",
                "double", FAMILY, "user_daily.last_event_time",
                compute=lambda: days_before_snapshot(F.col("last_event_time"))),
        Feature("days_since_first_event",
                "Tenure: days (fractional) from the user's first event to the snapshot.",
                "double", FAMILY, "user_daily.first_event_time",
                compute=lambda: days_before_snapshot(F.col("first_event_time"))),
        Feature("days_since_signup",
                "Tenure: whole days from signup_date to the snapshot; null if unknown "
                "(negative if the signup date is after the first event's snapshot).",
                "int", FAMILY, "users.signup_date",
                compute=lambda: F.datediff(F.col("snapshot_date"), F.col("signup_date"))),
    ]
    return features


def add_recency_features(totals: DataFrame, spec: FeatureSpec) -> DataFrame:
    return with_features(totals, definitions(spec))
