"""Price level and sensitivity: average price viewed vs bought, share bought on promotion."""
from __future__ import annotations

from pyspark.sql import DataFrame

from features.feature_spec import Feature, FeatureSpec
from features.families.common import ratio, total, with_features

FAMILY = "price"


def definitions(spec: FeatureSpec) -> list[Feature]:
    w = spec.price_window_days
    viewed = lambda: ratio(total("viewed_price_sum", w), total("views_priced", w))  # noqa: E731
    bought = lambda: ratio(total("bought_price_sum", w), total("purchases_priced", w))  # noqa: E731
    return [
        Feature(f"avg_price_viewed_last_{w}d", f"Average unit price of viewed items in the {w} days "
                "before the snapshot; null without priced views.", "double", FAMILY,
                "user_daily.viewed_price_sum, user_daily.views_priced", w, compute=viewed),
        Feature(f"avg_price_bought_last_{w}d", f"Average unit price of purchased items in the {w} "
                "days before the snapshot; null without priced purchases.", "double", FAMILY,
                "user_daily.bought_price_sum, user_daily.purchases_priced", w, compute=bought),
        Feature(f"price_bought_vs_viewed_last_{w}d", "Average price bought / average price viewed "
                "(< 1: buys the cheaper things they look at); null if either is missing.",
                "double", FAMILY, "user_daily price sums", w,
                compute=lambda: ratio(bought(), viewed())),
        Feature(f"share_bought_on_promotion_last_{w}d", "Share of purchases with price below the "
                f"item's list_price in the {w} days before the snapshot; null without purchases.",
                "double", FAMILY, "user_daily.promo_purchases (items.list_price)", w,
                compute=lambda: ratio(total("promo_purchases", w), total("purchases", w))),
        Feature(f"avg_quantity_per_purchase_last_{w}d", "Average quantity per purchase event in the "
                f"{w} days before the snapshot; null without purchases.", "double", FAMILY,
                "user_daily.purchased_quantity", w,
                compute=lambda: ratio(total("purchased_quantity", w), total("purchases", w))),
    ]


def add_price_features(totals: DataFrame, spec: FeatureSpec) -> DataFrame:
    return with_features(totals, definitions(spec))
