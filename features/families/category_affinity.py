"""Category affinity over the profile window: top-k categories (by views, then purchases, then
category id), share of views and purchases in them, diversity (distinct categories, entropy)."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.feature_spec import Feature, FeatureSpec
from features.families.common import ratio, with_features

FAMILY = "category_affinity"
KEYS = ["user_key", "snapshot_date"]


def top_category_name(i: int) -> str:
    return f"top_category_{i}"


def definitions(spec: FeatureSpec) -> list[Feature]:
    w, k = spec.profile_window_days, spec.top_k_categories
    source = "user_daily.categories"
    features = [
        Feature(top_category_name(i), f"Category id ranked {i} by the user's views in the {w} days "
                "before the snapshot (ties: more purchases, then smaller id); null if fewer "
                "categories.", "string", FAMILY, source, w,
                compute=lambda i=i: F.col(f"cat__top_{i}"))
        for i in range(1, k + 1)
    ]
    features += [
        Feature(f"share_views_top_categories_last_{w}d", f"Share of the user's views that fall in "
                f"their top {k} categories; null without views.", "double", FAMILY, source, w,
                compute=lambda: ratio(F.col("cat__views_top"), F.col("cat__views"))),
        Feature(f"share_purchases_top_categories_last_{w}d", f"Share of the user's purchases that "
                f"fall in their top {k} categories; null without purchases.", "double", FAMILY,
                source, w, compute=lambda: ratio(F.col("cat__purchases_top"), F.col("cat__purchases"))),
        Feature(f"distinct_categories_viewed_last_{w}d", f"Distinct categories viewed in the {w} days "
                "before the snapshot.", "int", FAMILY, source, w,
                compute=lambda: F.coalesce(F.col("cat__distinct_viewed"), F.lit(0))),
        Feature(f"distinct_categories_bought_last_{w}d", f"Distinct categories bought in the {w} days "
                "before the snapshot.", "int", FAMILY, source, w,
                compute=lambda: F.coalesce(F.col("cat__distinct_bought"), F.lit(0))),
        Feature(f"category_view_entropy_last_{w}d", "Shannon entropy (natural log) of the user's "
                "views over categories; 0 = one category; null without views.", "double", FAMILY,
                source, w,
                # H = ln T - sum(v ln v) / T, with T the total views: one pass over the categories.
                compute=lambda: F.when(F.col("cat__views") > 0,
                                       F.log(F.col("cat__views")) - F.col("cat__sum_vlogv")
                                       / F.col("cat__views"))),
    ]
    return features


def categories_in_profile_window(daily: DataFrame, spec: FeatureSpec) -> DataFrame:
    """One row per (user_key, snapshot_date, daily category entry) in the profile window.

    `daily` holds user_daily rows paired with snapshots and their `age_days` (see assemble).
    """
    return (daily.where((F.col("age_days") <= spec.profile_window_days) & F.col("user_key").isNotNull())
            .select(*KEYS, F.inline("categories")))


def category_window_totals(daily: DataFrame, spec: FeatureSpec) -> DataFrame:
    """Per (user_key, snapshot_date, category_id): views and purchases in the profile window.

    `daily` is partitioned by user_key (features.window_sums.daily_rows_by_snapshot): this
    and the per-user aggregation and join that follow need no further shuffle.
    """
    return (categories_in_profile_window(daily, spec)
            .groupBy(*KEYS, "category_id")
            .agg(F.sum("views").alias("views"), F.sum("purchases").alias("purchases")))


def category_affinity_aggregates(category_totals: DataFrame, spec: FeatureSpec) -> DataFrame:
    """Per (user_key, snapshot_date): the top-k categories and the sums the features divide.

    The user's categories are collected and sorted (views desc, purchases desc, id asc), so the
    top k are the first k entries and the entropy sum runs in a fixed order (bit-identical
    re-runs) without a window function and its extra shuffle.
    """
    k = spec.top_k_categories
    entry = F.struct((-F.col("views")).alias("neg_views"), (-F.col("purchases")).alias("neg_purchases"),
                     "category_id", "views", "purchases")
    ranked = (category_totals.where((F.col("views") > 0) | (F.col("purchases") > 0))
              .groupBy(*KEYS).agg(F.array_sort(F.collect_list(entry)).alias("ranked")))
    top = F.slice("ranked", 1, k)

    def total(array, field: str):
        return F.aggregate(array, F.lit(0).cast("long"), lambda acc, x: acc + x[field])

    return ranked.select(
        *KEYS,
        *[F.get("ranked", i - 1)["category_id"].alias(f"cat__top_{i}") for i in range(1, k + 1)],
        total(top, "views").alias("cat__views_top"),
        total(top, "purchases").alias("cat__purchases_top"),
        total("ranked", "views").alias("cat__views"),
        total("ranked", "purchases").alias("cat__purchases"),
        F.size(F.filter("ranked", lambda x: x["views"] > 0)).alias("cat__distinct_viewed"),
        F.size(F.filter("ranked", lambda x: x["purchases"] > 0)).alias("cat__distinct_bought"),
        F.aggregate("ranked", F.lit(0.0), lambda acc, x: acc + F.when(
            x["views"] > 0, x["views"].cast("double") * F.log(x["views"].cast("double")))
            .otherwise(0.0)).alias("cat__sum_vlogv"),
    )


def add_category_affinity_features(base: DataFrame, spec: FeatureSpec,
                                   category_totals: DataFrame) -> DataFrame:
    """`base` (one row per user and snapshot) with the affinity features computed from
    `category_totals` (category_window_totals)."""
    aggregates = category_affinity_aggregates(category_totals, spec)
    # Both sides are laid out by user_key already: a hash join per partition, without sorting
    # the wide window totals.
    joined = base.join(aggregates.hint("shuffle_hash"), KEYS, "left")
    helpers = [c for c in joined.columns if c.startswith("cat__")]
    return with_features(joined, definitions(spec)).drop(*helpers)
