"""User attributes (region, age band, device) and the context of the user's top categories:
their popularity and conversion among all users in the profile window before the snapshot."""
from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from features.feature_spec import Feature, FeatureSpec
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


def category_popularity(categories: DataFrame) -> DataFrame:
    """Per (snapshot_date, category_id): share of the snapshot's views, and purchases per view.

    `categories`: views and purchases per (snapshot_date, category_id, anything): the per-user
    category totals of the profile window (category_window_totals), whose shuffle Spark reuses,
    or the user_daily category entries themselves (categories_in_profile_window); aggregated by
    snapshot and category, a few rows.
    """
    per_category = categories.groupBy("snapshot_date", "category_id").agg(
        F.sum("views").alias("views"), F.sum("purchases").alias("purchases"))
    # A window over the few (snapshot, category) rows instead of a join back to the totals.
    all_views = F.sum("views").over(Window.partitionBy("snapshot_date"))
    return per_category.select(
        "snapshot_date", "category_id",
        ratio(F.col("views"), all_views).alias("popularity"),
        ratio(F.col("purchases"), F.col("views")).alias("conversion"))


def add_context_features(base: DataFrame, categories: DataFrame, spec: FeatureSpec) -> DataFrame:
    """`base` carries region, age_band, last_device and the top_category_i columns.

    The popularity table becomes one map per snapshot (category -> (popularity, conversion)),
    broadcast and joined once; each top category looks its entry up in the map, so the
    popularity is computed once however many top categories there are.
    """
    popularity = (category_popularity(categories)
                  .groupBy("snapshot_date")
                  .agg(F.map_from_entries(F.collect_list(F.struct(
                      "category_id", F.struct("popularity", "conversion")))).alias("ctx__popularity")))
    joined = base.join(F.broadcast(popularity), "snapshot_date", "left")
    helper_columns = ["ctx__popularity"]
    for i in range(1, spec.top_k_categories + 1):
        entry = F.when(F.col(top_category_name(i)).isNotNull(),
                       F.col("ctx__popularity")[F.col(top_category_name(i))])
        joined = (joined.withColumn(f"ctx__popularity_{i}", entry["popularity"])
                  .withColumn(f"ctx__conversion_{i}", entry["conversion"]))
        helper_columns += [f"ctx__popularity_{i}", f"ctx__conversion_{i}"]
    return with_features(joined, definitions(spec)).drop(*helper_columns)
