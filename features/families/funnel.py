"""Funnel ratios (cart/view, purchase/cart, purchase/view), shrunk towards the population rate.

ratio = (numerator + m * p) / (denominator + m), with m = funnel_prior_strength and p the same
ratio over all users of the snapshot (sum of numerators / sum of denominators). A user with few
events gets about the population rate; a user with many gets their own rate. Null when the
population has no denominator events.
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.catalog import Feature, FeatureSpec
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


def population_rates(totals: DataFrame, spec: FeatureSpec) -> DataFrame:
    """One row per snapshot: each ratio over all users of the snapshot.

    Summed from the per-user window totals (see assemble.window_totals): Spark reuses the
    totals' shuffle for it, so the daily rows are not scanned a second time.
    """
    return totals.groupBy("snapshot_date").agg(*[
        ratio(F.sum(total(num, w)), F.sum(total(den, w))).alias(_prior_name(stem, w))
        for w in spec.funnel_windows_days for stem, num, den in RATIOS
    ])


def add_funnel_features(base: DataFrame, totals: DataFrame, spec: FeatureSpec) -> DataFrame:
    """`base` carries the window totals; `totals` is the per-user totals aggregation itself."""
    priors = population_rates(totals, spec)
    with_priors = base.join(F.broadcast(priors), "snapshot_date", "left")
    return with_features(with_priors, definitions(spec)).drop(*priors.columns[1:])
