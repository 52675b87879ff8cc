"""Frequency and monetary value per event type over the configured windows."""
from __future__ import annotations

from pyspark.sql import DataFrame

from features.feature_spec import Feature, FeatureSpec
from features.families.common import total, with_features

FAMILY = "frequency"

# (daily column, feature stem, description, type)
MEASURES = (
    ("views", "views", "Number of view events", "int"),
    ("carts", "carts", "Number of add-to-cart events", "int"),
    ("purchases", "purchases", "Number of purchase events", "int"),
    ("viewed_value", "viewed_value", "Sum of price x quantity of viewed items", "double"),
    ("carted_value", "carted_value", "Sum of price x quantity of carted items", "double"),
    ("spend", "spend", "Spend: sum of price x quantity of purchases", "double"),
)


def definitions(spec: FeatureSpec) -> list[Feature]:
    return [
        Feature(f"{stem}_last_{w}d", f"{text} in the {w} days before the snapshot.", dtype, FAMILY,
                f"user_daily.{column}", w, compute=lambda c=column, w=w: total(c, w))
        for column, stem, text, dtype in MEASURES
        for w in spec.windows_days
    ]


def add_frequency_features(totals: DataFrame, spec: FeatureSpec) -> DataFrame:
    return with_features(totals, definitions(spec))
