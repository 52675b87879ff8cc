"""User attributes (region, age band, device) and the context of the user's top categories:
their popularity and conversion among all users in the profile window before the snapshot."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.catalog import Feature, FeatureSpec
from features.families.category_affinity import top_category_name
from features.families.common import ratio, with_features

FAMILY = "context"


def definitions(spec: FeatureSpec) -> list[Feature]:
    w = spec.profile_window_days
    features = [
        Feature("region", "User's region (users dimension); null if unknown.", "string", FAMILY,
                "users.region", compute=lambda: F.col("user_region")),
        Feature("age_band", "User's age band (users dimension); null if unknown.", "string", FAMILY,
                "users.age_band", compute=lambda: F.col("user_age_band")),
        Feature("device", "Device of the user's last event before the snapshot.", "string", FAMILY,
                "user_daily.last_device", compute=lambda: F.col("last_device")),
    ]
    for i in range(1, spec.top_k_categories + 1):
        features += [
            Feature(f"{top_category_name(i)}_popularity", f"Share of all users' views in the {w} days "
                    f"before the snapshot that went to {top_category_name(i)}; null if none.",
                    "double", FAMILY, "user_daily.categories (all users)", w,
                    compute=lambda i=i: F.col(f"ctx__popularity_{i}")),
            Feature(f"{top_category_name(i)}_conversion", f"Purchases / views of {top_category_name(i)} "
                    f"among all users in the {w} days before the snapshot; null if no views.",
                    "double", FAMILY, "user_daily.categories (all users)", w,
                    compute=lambda i=i: F.col(f"ctx__conversion_{i}")),
        ]
    return features


def category_popularity(category_totals: DataFrame) -> DataFrame:
    """Per (snapshot_date, category_id): share of the snapshot's views, and purchases per view."""
    per_category = category_totals.groupBy("snapshot_date", "category_id").agg(
        F.sum("views").alias("views"), F.sum("purchases").alias("purchases"))
    all_views = per_category.groupBy("snapshot_date").agg(F.sum("views").alias("all_views"))
    return (per_category.join(F.broadcast(all_views), "snapshot_date")
            .select("snapshot_date", "category_id",
                    ratio(F.col("views"), F.col("all_views")).alias("popularity"),
                    ratio(F.col("purchases"), F.col("views")).alias("conversion")))


def add_context_features(base: DataFrame, category_totals: DataFrame, spec: FeatureSpec) -> DataFrame:
    """`base` carries region, age_band, last_device and the top_category_i columns."""
    popularity = F.broadcast(category_popularity(category_totals))
    joined = base
    helper_columns = []
    for i in range(1, spec.top_k_categories + 1):
        top = top_category_name(i)
        renamed = popularity.select(
            "snapshot_date", F.col("category_id").alias(top),
            F.col("popularity").alias(f"ctx__popularity_{i}"),
            F.col("conversion").alias(f"ctx__conversion_{i}"))
        joined = joined.join(renamed, ["snapshot_date", top], "left")
        helper_columns += [f"ctx__popularity_{i}", f"ctx__conversion_{i}"]
    return with_features(joined, definitions(spec)).drop(*helper_columns)
