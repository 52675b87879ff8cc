"""Events -> `user_daily`: one row per (user_key, event_date) with the day's additive aggregates.

Every windowed feature and every label is a sum (or max/min) over these rows, so a snapshot reads
user_daily instead of rescanning the events. Columns are additive across days (counts, sums,
per-category counts) or combine with max/min (times), which is what makes windows cheap.

The aggregation is plain Spark: the events of the dates to compute are shuffled once by
(user_key, event_date); sessions, days and categories are then hash aggregations inside those
partitions (no further shuffle), so a task's memory is bounded by the shuffle partition size,
not by the size of a day.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from features.dimensions import attributes_on

# Hours [start, end) of the four parts of the day the hour profile counts (UTC).
DAY_PARTS = {"night": (0, 6), "morning": (6, 12), "afternoon": (12, 18), "evening": (18, 24)}

# Additive columns of user_daily: windowed features are sums of these over a window.
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

KEYS = ["user_key", "event_date"]
TIME_COLUMNS = ("first_event_time", "last_event_time", "last_view_time", "last_cart_time",
                "last_purchase_time")


def as_micros(value: Column) -> Column:
    """`value` as integer millionths (see `exact_sum`)."""
    return F.round(value * MICROS).cast("long")


def from_micros(total: Column) -> Column:
    return (total / MICROS).cast("double")


def exact_sum(value: Column) -> Column:
    """sum(value) rounded to millionths, independent of row order; 0.0 when there are no values."""
    return from_micros(F.coalesce(F.sum(as_micros(value)), F.lit(0)))


# Struct of one entry of the `categories` array.
CATEGORY_FIELDS = "category_id string, views int, purchases int, spend double"


@dataclass(frozen=True)
class EventRoles:
    """Which source event_type values play the roles view, cart and purchase."""

    view: str = "view"
    cart: str = "add_to_cart"
    purchase: str = "purchase"


# The last device of a period is found with a plain max over a long: (event time in micros,
# device code) packed so that the order is (time, device name), codes being the sorted device
# names and 0 a null device. A max over a long keeps the aggregation a hash aggregation; a
# max_by or a max over a struct with a string would make Spark sort the rows instead.
DEVICE_CODES = 64


def distinct_devices(df: DataFrame, column: str) -> list[str | None] | None:
    """The distinct values of `column` when fewer than DEVICE_CODES (a few rows reach the
    driver, whatever the size of `df`), else None: do not pack."""
    devices = [r[0] for r in df.select(column).distinct().limit(DEVICE_CODES).collect()]
    return devices if len(devices) < DEVICE_CODES else None


def device_codes(devices: list[str | None] | None) -> list[str] | None:
    """Sorted device names to pack, or None when they do not fit in a code."""
    if devices is None:
        return None
    codes = sorted(d for d in set(devices) if d is not None)
    return codes if len(codes) < DEVICE_CODES else None


def _vocabulary(codes: list[str]) -> Column:
    return F.array(*[F.lit(c) for c in codes]) if codes else F.array().cast("array<string>")


def packed_time_device(time: Column, device: Column, codes: list[str]) -> Column:
    """unix micros of `time` * DEVICE_CODES + code of `device`: max() of it is the last device."""
    code = F.coalesce(F.array_position(_vocabulary(codes), device), F.lit(0))
    return F.unix_micros(time) * DEVICE_CODES + code


def unpacked_device(packed: Column, codes: list[str]) -> Column:
    last_code = (packed % DEVICE_CODES).cast("int")
    return F.when(last_code > 0, F.element_at(_vocabulary(codes), last_code))


# user_daily's columns in table order: the per-event sums, the session columns, times, device,
# categories.
SESSION_COLUMNS = ("sessions", "session_seconds", "active_days")
DAILY_ADDITIVE_ORDER = (*[c for c in ADDITIVE_COLUMNS if c not in SESSION_COLUMNS], *SESSION_COLUMNS)
USER_DAILY_COLUMNS = (
    ("user_key", "string"), ("event_date", "date"),
    *[(c, "double" if c in EXACT_SUM_COLUMNS else "int") for c in DAILY_ADDITIVE_ORDER],
    *[(c, "timestamp") for c in TIME_COLUMNS],
    ("last_device", "string"), ("categories", f"array<struct<{CATEGORY_FIELDS}>>"))


def events_with_item_context(events: DataFrame, items: DataFrame | None) -> DataFrame:
    """`events` with `item_category_id` and `item_list_price`: the attributes of the event's item
    valid on its event_date (null when there is no items dimension or no valid version).

    A plain equi-join on item_id with the validity range as a filter: Spark broadcasts the items
    when its own size estimate allows it and shuffles both sides otherwise.
    """
    if items is None:
        return (events.withColumn("item_category_id", F.lit(None).cast("string"))
                .withColumn("item_list_price", F.lit(None).cast("double")))
    context = items.select("item_id", "valid_from", "valid_to",
                           F.col("category_id").alias("item_category_id"),
                           F.col("list_price").alias("item_list_price"))
    return attributes_on(events, context, "item_id", "event_date")


def classified_events(events: DataFrame, items: DataFrame | None, roles: EventRoles) -> DataFrame:
    """One row per event with what user_daily sums: the role flags, amounts in integer millionths,
    the part of the day and the weekend flag (UTC), the category (the item's when the event has
    none) and the promotion flag (price below the item's list price)."""
    quantity = F.coalesce(F.col("quantity"), F.lit(1))
    typed = events_with_item_context(events, items)
    promo = F.coalesce(F.col("price") < F.col("item_list_price"), F.lit(False))
    hour = F.hour("event_time")
    return typed.select(
        "user_key", "event_date", "session_id", "event_time", "device",
        F.coalesce(F.col("category_id"), F.col("item_category_id")).alias("category_id"),
        (F.col("event_type") == roles.view).alias("is_view"),
        (F.col("event_type") == roles.cart).alias("is_cart"),
        (F.col("event_type") == roles.purchase).alias("is_purchase"),
        as_micros(F.col("price")).alias("price_micros"),
        as_micros(F.col("price") * quantity).alias("value_micros"),
        quantity.alias("quantity"), promo.alias("promo"),
        F.dayofweek("event_date").isin(1, 7).alias("weekend"),
        *[((hour >= lo) & (hour < hi)).alias(f"in_{part}") for part, (lo, hi) in DAY_PARTS.items()],
    )


def _count(condition: Column) -> Column:
    return F.count(F.when(condition, 1))


def _micros_sum(condition: Column, micros: str) -> Column:
    return F.coalesce(F.sum(F.when(condition, F.col(micros))), F.lit(0))


def _session_aggregates(events: DataFrame, codes: list[str] | None) -> DataFrame:
    """One row per (user_key, event_date, session_id): counts, sums in millionths, times."""
    view, cart, buy = F.col("is_view"), F.col("is_cart"), F.col("is_purchase")
    priced = F.col("price_micros").isNotNull()
    return events.groupBy(*KEYS, "session_id").agg(
        F.count(F.lit(1)).alias("events"), _count(view).alias("views"), _count(cart).alias("carts"),
        _count(buy).alias("purchases"),
        _micros_sum(view, "value_micros").alias("viewed_value"),
        _micros_sum(cart, "value_micros").alias("carted_value"),
        _micros_sum(buy, "value_micros").alias("spend"),
        _micros_sum(view, "price_micros").alias("viewed_price_sum"),
        _count(view & priced).alias("views_priced"),
        _micros_sum(buy, "price_micros").alias("bought_price_sum"),
        _count(buy & priced).alias("purchases_priced"),
        F.coalesce(F.sum(F.when(buy, F.col("quantity"))), F.lit(0)).alias("purchased_quantity"),
        _count(buy & F.col("promo")).alias("promo_purchases"),
        _count(F.col("weekend")).alias("weekend_events"),
        *[_count(F.col(f"in_{part}")).alias(f"events_{part}") for part in DAY_PARTS],
        F.min("event_time").alias("first_event_time"), F.max("event_time").alias("last_event_time"),
        F.max(F.when(view, F.col("event_time"))).alias("last_view_time"),
        F.max(F.when(cart, F.col("event_time"))).alias("last_cart_time"),
        F.max(F.when(buy, F.col("event_time"))).alias("last_purchase_time"),
        (F.max(packed_time_device(F.col("event_time"), F.col("device"), codes)) if codes is not None
         else F.max(F.struct("event_time", "device"))).alias("last_device_key"),
    )


def _day_rows(sessions: DataFrame, codes: list[str] | None) -> DataFrame:
    """Sessions -> one row per (user_key, event_date) with the additive columns and times."""
    summed = [c for c in DAILY_ADDITIVE_ORDER if c not in SESSION_COLUMNS]
    session_micros = F.unix_micros(F.col("last_event_time")) - F.unix_micros(F.col("first_event_time"))
    device = F.max("last_device_key")
    device = unpacked_device(device, codes) if codes is not None else device["device"]
    return sessions.groupBy(*KEYS).agg(
        *[(from_micros(F.sum(c)) if c in EXACT_SUM_COLUMNS else F.sum(c).cast("int")).alias(c)
          for c in summed],
        F.count(F.lit(1)).cast("int").alias("sessions"),
        from_micros(F.sum(session_micros)).alias("session_seconds"),
        F.lit(1).alias("active_days"),
        F.min("first_event_time").alias("first_event_time"),
        *[F.max(c).alias(c) for c in TIME_COLUMNS[1:]],
        device.alias("last_device"),
    )


def _category_lists(events: DataFrame) -> DataFrame:
    """One row per (user_key, event_date) with events that have a category: views, purchases and
    spend per category_id, sorted by category_id."""
    per_category = (events.where(F.col("category_id").isNotNull())
                     .groupBy(*KEYS, "category_id")
                     .agg(_count(F.col("is_view")).alias("views"),
                          _count(F.col("is_purchase")).alias("purchases"),
                          from_micros(_micros_sum(F.col("is_purchase"), "value_micros")).alias("spend")))
    entry = F.struct("category_id", "views", "purchases", "spend")
    return per_category.groupBy(*KEYS).agg(F.array_sort(F.collect_list(entry)).alias("categories"))


def user_daily_rows(events: DataFrame, items: DataFrame | None, roles: EventRoles,
                    device_vocabulary: list[str | None] | None) -> DataFrame:
    """One user_daily row per (user_key, event_date) of `events`.

    `device_vocabulary` (distinct_devices of the events) lets the last device be a max over a
    long; None falls back to a max over a struct (a sort aggregation). The events are shuffled
    once by KEYS; the session, day and category aggregations and their join reuse that layout.
    """
    codes = device_codes(device_vocabulary)
    events = classified_events(events, items, roles).repartition(*KEYS)
    days = _day_rows(_session_aggregates(events, codes), codes)
    categories = _category_lists(events)
    if items is None:  # no list prices: promotions are unknown, not absent
        days = days.withColumn("promo_purchases", F.lit(None))
    empty = F.array().cast(f"array<struct<{CATEGORY_FIELDS}>>")
    return (days.join(categories, KEYS, "left")
            .select(*[F.col(name).cast(dtype).alias(name) if name != "categories"
                      else F.coalesce(F.col(name), empty).alias(name)
                      for name, dtype in USER_DAILY_COLUMNS]))
