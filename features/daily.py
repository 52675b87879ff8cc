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


def _micros_if(cond: Column, value: Column) -> Column:
    """Sum of `value` where `cond`, as integer millionths (see `exact_sum`); 0 when none."""
    return F.coalesce(F.sum(F.when(cond, F.round(value * MICROS).cast("long"))), F.lit(0).cast("long"))


def _from_micros(column: str) -> Column:
    return (F.col(column) / MICROS).cast("double")


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

    One shuffle: the events are partitioned by event_date, and both aggregations below group
    by supersets of that key, so neither needs another exchange; each output task also holds
    whole dates, so user_daily gets one file per date rather than one per (task, date).
    First, events are aggregated per (user, day, session, category, device) with hash-based
    aggregates only; then the day row is built from those few pieces, with sessions, the
    category list and the last device computed from the collected pieces by array functions
    (no joins between partial results, no sort-based aggregate).
    """
    value = F.col("price") * F.coalesce(F.col("quantity"), F.lit(1))
    hour = F.hour("event_time")
    weekday = F.dayofweek("event_date")  # 1 = Sunday, 7 = Saturday
    view, cart, buy = _is(roles.view), _is(roles.cart), _is(roles.purchase)

    pieces = (events
              .select("user_key", "event_date", "session_id", "event_time", "event_type",
                      "category_id", "price", "quantity", "device", "list_price")
              .repartition("event_date")
              .groupBy("user_key", "event_date", "session_id", "category_id", "device")
              .agg(F.count(F.lit(1)).cast("int").alias("events"),
                   _count_if(view).alias("views"),
                   _count_if(cart).alias("carts"),
                   _count_if(buy).alias("purchases"),
                   _micros_if(view, value).alias("viewed_value"),
                   _micros_if(cart, value).alias("carted_value"),
                   _micros_if(buy, value).alias("spend"),
                   _micros_if(view, F.col("price")).alias("viewed_price_sum"),
                   _count_if(view & F.col("price").isNotNull()).alias("views_priced"),
                   _micros_if(buy, F.col("price")).alias("bought_price_sum"),
                   _count_if(buy & F.col("price").isNotNull()).alias("purchases_priced"),
                   F.coalesce(F.sum(F.when(buy, F.coalesce("quantity", F.lit(1)))),
                              F.lit(0)).cast("int").alias("purchased_quantity"),
                   _count_if(buy & (F.col("price") < F.col("list_price"))).alias("promo_purchases"),
                   _count_if(weekday.isin(1, 7)).alias("weekend_events"),
                   *[_count_if((hour >= lo) & (hour < hi)).alias(f"events_{part}")
                     for part, (lo, hi) in DAY_PARTS.items()],
                   F.min("event_time").alias("first_event_time"),
                   F.max("event_time").alias("last_event_time"),
                   F.max(F.when(view, F.col("event_time"))).alias("last_view_time"),
                   F.max(F.when(cart, F.col("event_time"))).alias("last_cart_time"),
                   F.max(F.when(buy, F.col("event_time"))).alias("last_purchase_time")))

    summed = [c for c in ADDITIVE_COLUMNS if c not in ("sessions", "session_seconds", "active_days")]
    piece = F.struct("session_id", "category_id", "device", "first_event_time", "last_event_time",
                     "views", "purchases", "spend")
    day = pieces.groupBy("user_key", "event_date").agg(
        *[F.sum(c).alias(c) for c in summed],
        F.min("first_event_time").alias("first_event_time"),
        F.max("last_event_time").alias("last_event_time"),
        F.max("last_view_time").alias("last_view_time"),
        F.max("last_cart_time").alias("last_cart_time"),
        F.max("last_purchase_time").alias("last_purchase_time"),
        F.collect_list(piece).alias("pieces"))

    # A session that crosses midnight counts on each day it has events, with the part of it
    # that falls on that day: sessions stay additive across days. A missing session_id is one
    # session (as a GROUP BY would treat it).
    session_ids = F.array_distinct(F.transform("pieces", lambda p: p["session_id"]))

    def session_micros(sid: Column) -> Column:
        same = F.filter("pieces", lambda p: p["session_id"].eqNullSafe(sid))
        return (F.unix_micros(F.array_max(F.transform(same, lambda p: p["last_event_time"])))
                - F.unix_micros(F.array_min(F.transform(same, lambda p: p["first_event_time"]))))

    def category_entry(cid: Column) -> Column:
        same = F.filter("pieces", lambda p: p["category_id"] == cid)
        total = lambda field, zero: F.aggregate(same, zero, lambda acc, p: acc + p[field])  # noqa: E731
        return F.struct(cid.alias("category_id"), total("views", F.lit(0)).alias("views"),
                        total("purchases", F.lit(0)).alias("purchases"),
                        (total("spend", F.lit(0).cast("long")) / MICROS).cast("double").alias("spend"))

    category_ids = F.array_sort(F.array_distinct(F.filter(
        F.transform("pieces", lambda p: p["category_id"]), lambda c: c.isNotNull())))
    # Ties (two events at the same instant) go to the larger device name: deterministic.
    last_piece = F.array_max(F.transform("pieces", lambda p: F.struct(
        p["last_event_time"].alias("t"), p["device"].alias("device"))))

    return day.select(
        "user_key", "event_date",
        *[(_from_micros(c).alias(c) if c in EXACT_SUM_COLUMNS else F.col(c).cast("int").alias(c))
          for c in summed],
        F.size(session_ids).cast("int").alias("sessions"),
        (F.aggregate(session_ids, F.lit(0).cast("long"), lambda acc, sid: acc + session_micros(sid))
         / MICROS).cast("double").alias("session_seconds"),
        F.lit(1).alias("active_days"),
        "first_event_time", "last_event_time", "last_view_time", "last_cart_time",
        "last_purchase_time",
        last_piece["device"].alias("last_device"),
        F.transform(category_ids, category_entry)
        .cast(f"array<struct<{CATEGORY_FIELDS}>>").alias("categories"),
    ).select("user_key", "event_date", *ADDITIVE_COLUMNS, "first_event_time", "last_event_time",
             "last_view_time", "last_cart_time", "last_purchase_time", "last_device", "categories")
