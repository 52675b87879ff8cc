"""Funnel ratios (cart/view, purchase/cart, purchase/view), shrunk towards the population rate.

ratio = (numerator + m * p) / (denominator + m), with m = funnel_prior_strength and p the same
ratio over all users of the snapshot (sum of numerators / sum of denominators). A user with few
events gets about the population rate; a user with many gets their own rate. Null when the
population has no denominator events.
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.feature_spec import Feature, FeatureSpec
from features.families.common import ratio, total, with_features

FAMILY = "funnel"

# (feature stem, numerator column, denominator column)
RATIOS = (
    ("cart_per_view", "carts", "views"),
    ("purchase_per_cart", "purchases", "carts"),
    ("purchase_per_view", "purchases", "views"),
)


def _prior_name(stem: str, w: int) -> str:
    return f"{stem}__{w}d__population"


def definitions(spec: FeatureSpec) -> list[Feature]:
    m = float(spec.funnel_prior_strength)
    return [
        Feature(f"{stem}_last_{w}d",
                f"Smoothed {num}/{den} in the {w} days before the snapshot "
                f"(shrunk towards the population rate with {m:g} pseudo-events).",
                "double", FAMILY, f"user_daily.{num}, user_daily.{den}", w,
                compute=lambda num=num, den=den, stem=stem, w=w: ratio(
                    total(num, w) + F.lit(m) * F.col(_prior_name(stem, w)),
                    total(den, w) + F.lit(m)).cast("double")
                if m > 0 else ratio(total(num, w), total(den, w)))
        for w in spec.funnel_windows_days
        for stem, num, den in RATIOS
    ]


def population_rates(daily: DataFrame, spec: FeatureSpec) -> DataFrame:
    """One row per snapshot: each ratio over all users of the snapshot.

    `daily` holds user_daily rows paired with snapshots and their `age_days` (see
    features.window_sums.daily_rows_by_snapshot). The population's sums are the sums of those
    rows in each window (integer counts: the same as summing the per-user totals), so this is a
    narrow scan whose map-side partial sums leave one row per task and snapshot to shuffle.
    """
    def window_sum(column: str, w: int):
        return F.sum(F.when(F.col("age_days") <= w, F.col(column)))

    return daily.groupBy("snapshot_date").agg(*[
        ratio(window_sum(num, w), window_sum(den, w)).alias(_prior_name(stem, w))
        for w in spec.funnel_windows_days for stem, num, den in RATIOS
    ])


def add_funnel_features(base: DataFrame, daily: DataFrame, spec: FeatureSpec) -> DataFrame:
    """`base` carries the window totals; `daily` the dated user_daily rows (population_rates)."""
    priors = population_rates(daily, spec)
    with_priors = base.join(F.broadcast(priors), "snapshot_date", "left")
    return with_features(with_priors, definitions(spec)).drop(*priors.columns[1:])
