"""Events -> `user_daily`: one row per (user_key, event_date) with the day's additive aggregates.

Every windowed feature and every label is a sum (or max/min) over these rows, so a snapshot reads
user_daily instead of rescanning the events. Columns are additive across days (counts, sums,
per-category counts) or combine with max/min (times), which is what makes windows cheap.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

# Hours [start, end) of the four parts of the day the hour profile counts (UTC).
DAY_PARTS = {"night": (0, 6), "morning": (6, 12), "afternoon": (12, 18), "evening": (18, 24)}

# Additive columns of user_daily: windowed features are conditional sums of these.
ADDITIVE_COLUMNS = (
    "events", "views", "carts", "purchases",
    "viewed_value", "carted_value", "spend",
    "viewed_price_sum", "views_priced", "bought_price_sum", "purchases_priced",
    "purchased_quantity", "promo_purchases",
    "sessions", "session_seconds", "weekend_events",
    *(f"events_{part}" for part in DAY_PARTS),
    "active_days",
)

# Double columns, summed exactly (see `exact_sum`).
EXACT_SUM_COLUMNS = frozenset({"viewed_value", "carted_value", "spend", "viewed_price_sum",
                               "bought_price_sum", "session_seconds"})

# Amounts are summed as integer millionths: integer addition does not depend on the order rows
# arrive in, so a re-run, a backfill and a one-by-one run give bit-identical doubles (a plain
# double sum changes in the last bits with the shuffle's arrival order).
MICROS = 1_000_000


def exact_sum(value: Column) -> Column:
    """sum(value) rounded to millionths, independent of row order; 0.0 when there are no values."""
    micros = F.sum(F.round(value * MICROS).cast("long"))
    return (F.coalesce(micros, F.lit(0)) / MICROS).cast("double")


# Struct of one entry of the `categories` array.
CATEGORY_FIELDS = "category_id string, views int, purchases int, spend double"


@dataclass(frozen=True)
class EventRoles:
    """Which source event_type values play the roles view, cart and purchase."""

    view: str = "view"
    cart: str = "add_to_cart"
    purchase: str = "purchase"


def _is(role: str) -> Column:
    return F.col("event_type") == F.lit(role)


def _count_if(cond: Column) -> Column:
    return F.sum(F.when(cond, 1).otherwise(0)).cast("int")


def _sum_if(cond: Column, value: Column) -> Column:
    return exact_sum(F.when(cond, value))


def events_with_item_context(events: DataFrame, items: DataFrame) -> DataFrame:
    """Events with the item's list price, and the item's category when the event has none.

    The items dimension is small: it is broadcast, so the events are not shuffled for this join.
    """
    dim = items.select("item_id", F.col("category_id").alias("item_category_id"), "list_price")
    return (events.join(F.broadcast(dim), "item_id", "left")
            .withColumn("category_id", F.coalesce("category_id", "item_category_id"))
            .drop("item_category_id"))


def user_daily_aggregates(events: DataFrame, roles: EventRoles) -> DataFrame:
    """One row per (user_key, event_date) of events that carry `list_price` (see above).

    The events are shuffled once, by (user_key, event_date); the session and category
    aggregations below group by supersets of those keys, so they reuse that partitioning and
    the final joins need no further exchange.
    """
    value = F.col("price") * F.coalesce(F.col("quantity"), F.lit(1))
    hour = F.hour("event_time")
    weekday = F.dayofweek("event_date")  # 1 = Sunday, 7 = Saturday
    clustered = events.select(
        "user_key", "event_date", "session_id", "event_time", "event_type", "category_id",
        "price", "quantity", "device", "list_price",
    ).repartition("user_key", "event_date")

    day = clustered.groupBy("user_key", "event_date").agg(
        F.count(F.lit(1)).cast("int").alias("events"),
        _count_if(_is(roles.view)).alias("views"),
        _count_if(_is(roles.cart)).alias("carts"),
        _count_if(_is(roles.purchase)).alias("purchases"),
        _sum_if(_is(roles.view), value).alias("viewed_value"),
        _sum_if(_is(roles.cart), value).alias("carted_value"),
        _sum_if(_is(roles.purchase), value).alias("spend"),
        _sum_if(_is(roles.view), F.col("price")).alias("viewed_price_sum"),
        _count_if(_is(roles.view) & F.col("price").isNotNull()).alias("views_priced"),
        _sum_if(_is(roles.purchase), F.col("price")).alias("bought_price_sum"),
        _count_if(_is(roles.purchase) & F.col("price").isNotNull()).alias("purchases_priced"),
        F.coalesce(F.sum(F.when(_is(roles.purchase), F.coalesce("quantity", F.lit(1)))),
                   F.lit(0)).cast("int").alias("purchased_quantity"),
        _count_if(_is(roles.purchase) & (F.col("price") < F.col("list_price"))).alias("promo_purchases"),
        _count_if(weekday.isin(1, 7)).alias("weekend_events"),
        *[_count_if((hour >= lo) & (hour < hi)).alias(f"events_{part}")
          for part, (lo, hi) in DAY_PARTS.items()],
        F.lit(1).alias("active_days"),
        F.min("event_time").alias("first_event_time"),
        F.max("event_time").alias("last_event_time"),
        F.max(F.when(_is(roles.view), F.col("event_time"))).alias("last_view_time"),
        F.max(F.when(_is(roles.cart), F.col("event_time"))).alias("last_cart_time"),
        F.max(F.when(_is(roles.purchase), F.col("event_time"))).alias("last_purchase_time"),
        # Ties (two events at the same instant) go to the larger device name: deterministic.
        F.max_by("device", F.struct("event_time", "device")).alias("last_device"),
    )

    # A session that crosses midnight counts on each day it has events, with the part of it
    # that falls on that day: sessions stay additive across days.
    sessions = (clustered
                .groupBy("user_key", "event_date", "session_id")
                .agg((F.unix_micros(F.max("event_time")) - F.unix_micros(F.min("event_time")))
                     .alias("micros"))
                .groupBy("user_key", "event_date")
                .agg(F.count(F.lit(1)).cast("int").alias("sessions"),
                     (F.sum("micros") / MICROS).cast("double").alias("session_seconds")))

    categories = (clustered.where(F.col("category_id").isNotNull())
                  .groupBy("user_key", "event_date", "category_id")
                  .agg(_count_if(_is(roles.view)).alias("views"),
                       _count_if(_is(roles.purchase)).alias("purchases"),
                       _sum_if(_is(roles.purchase), value).alias("spend"))
                  .groupBy("user_key", "event_date")
                  .agg(F.array_sort(F.collect_list(
                      F.struct("category_id", "views", "purchases", "spend"))).alias("categories")))

    return (day.join(sessions, ["user_key", "event_date"], "left")
            .join(categories, ["user_key", "event_date"], "left")
            .withColumn("categories", F.coalesce(
                "categories", F.array().cast(f"array<struct<{CATEGORY_FIELDS}>>")))
            .select("user_key", "event_date", *ADDITIVE_COLUMNS, "first_event_time",
                    "last_event_time", "last_view_time", "last_cart_time", "last_purchase_time",
                    "last_device", "categories"))
