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


def micros(value: Column) -> Column:
    """`value` as integer millionths (see `exact_sum`)."""
    return F.round(value * MICROS).cast("long")


def exact_sum(value: Column) -> Column:
    """sum(value) rounded to millionths, independent of row order; 0.0 when there are no values."""
    return (F.coalesce(F.sum(micros(value)), F.lit(0)) / MICROS).cast("double")


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


def events_with_item_context(events: DataFrame, items: DataFrame) -> DataFrame:
    """Events with the item's list price, and the item's category when the event has none.

    The items dimension is small: it is broadcast, so the events are not shuffled for this join.
    """
    dim = items.select("item_id", F.col("category_id").alias("item_category_id"), "list_price")
    return (events.join(F.broadcast(dim), "item_id", "left")
            .withColumn("category_id", F.coalesce("category_id", "item_category_id"))
            .drop("item_category_id"))


# The last device of a period is found with a plain max over a long: (event time in micros,
# device code) packed so that the order is (time, device name), codes being the sorted device
# names and 0 a null device. A max over a long keeps the aggregation a hash aggregation; a
# max_by or a max over a struct with a string would make Spark sort the rows instead.
DEVICE_CODES = 64


def distinct_devices(df: DataFrame, column: str = "device") -> list[str | None]:
    """Up to DEVICE_CODES distinct values of `column` (more means: do not pack)."""
    return [r[0] for r in df.select(column).distinct().limit(DEVICE_CODES).collect()]


def device_codes(devices: list[str | None] | None) -> list[str] | None:
    """Sorted device names to pack, or None when they do not fit in a code."""
    if devices is None:
        return None
    codes = sorted(d for d in set(devices) if d is not None)
    return codes if len(codes) < DEVICE_CODES and len(devices) < DEVICE_CODES else None


def packed_time_device(time: Column, device: Column, codes: list[str]) -> Column:
    """unix micros of `time` * DEVICE_CODES + code of `device`: max() of it is the last device."""
    vocabulary = F.array(*[F.lit(c) for c in codes]) if codes else F.array().cast("array<string>")
    code = F.coalesce(F.array_position(vocabulary, device), F.lit(0))
    return F.unix_micros(time) * DEVICE_CODES + code


def unpacked_device(packed: Column, codes: list[str]) -> Column:
    vocabulary = F.array(*[F.lit(c) for c in codes]) if codes else F.array().cast("array<string>")
    last_code = (packed % DEVICE_CODES).cast("int")
    return F.when(last_code > 0, F.element_at(vocabulary, last_code))


# Codes of the event roles in `compact_events`' role column (0: any other event type).
ROLE_VIEW, ROLE_CART, ROLE_PURCHASE = 1, 2, 3


def compact_events(events: DataFrame, roles: EventRoles) -> DataFrame:
    """The event columns user_daily needs, narrowed before the one shuffle: the role as a small
    code instead of the event_type string, the promotion flag instead of list_price. Amounts are
    integer millionths (Spark's round, half up; see `micros`), hour and weekend in UTC."""
    role = (F.when(_is(roles.view), ROLE_VIEW).when(_is(roles.cart), ROLE_CART)
            .when(_is(roles.purchase), ROLE_PURCHASE).otherwise(0).cast("byte"))
    quantity = F.coalesce(F.col("quantity"), F.lit(1))
    weekday = F.dayofweek("event_date")  # 1 = Sunday, 7 = Saturday
    return events.select(
        "user_key", "event_date", "session_id", "event_time", "category_id", "device",
        quantity.alias("quantity"), role.alias("role"),
        (F.col("price") < F.col("list_price")).alias("promo"),
        micros(F.col("price")).alias("price_micros"),
        micros(F.col("price") * quantity).alias("value_micros"),
        F.hour("event_time").cast("byte").alias("hour"),
        weekday.isin(1, 7).alias("weekend"))


# user_daily's additive columns in table order: the per-event sums, then the session columns.
SESSION_COLUMNS = ("sessions", "session_seconds", "active_days")
DAILY_ADDITIVE_ORDER = (*[c for c in ADDITIVE_COLUMNS if c not in SESSION_COLUMNS], *SESSION_COLUMNS)
USER_DAILY_COLUMNS = (
    ("user_key", "string"), ("event_date", "date"),
    *[(c, "double" if c in EXACT_SUM_COLUMNS else "int") for c in DAILY_ADDITIVE_ORDER],
    *[(c, "timestamp") for c in ("first_event_time", "last_event_time", "last_view_time",
                                 "last_cart_time", "last_purchase_time")],
    ("last_device", "string"), ("categories", f"array<struct<{CATEGORY_FIELDS}>>"))
USER_DAILY_SCHEMA = ", ".join(f"{name} {dtype}" for name, dtype in USER_DAILY_COLUMNS)


def user_daily_aggregates(events: DataFrame, roles: EventRoles, user_groups: int = 1) -> DataFrame:
    """One row per (user_key, event_date) of events that carry `list_price` (see above).

    The narrowed events (compact_events) are shuffled once by event_date, and each date's events
    (split into `user_groups` groups of users by a hash of user_key: a group must fit in a Python
    worker's memory, about 300 bytes per event) go to a Python worker as one Arrow table,
    aggregated there with numpy (features.day_aggregates): counts and sums per user, the day's
    sessions and their lengths, first and last times, the last device and the per-category
    list. Row for row the same as the Spark SQL aggregation it replaced, in about 0.8x its wall
    time for the whole user_daily step (bench/RESULTS.md, session 12).
    """
    from features.day_aggregates import user_aggregates_of_day  # here: it imports this module

    keys = [F.col("event_date")]
    if user_groups > 1:
        keys.append(F.pmod(F.xxhash64("user_key"), F.lit(user_groups)).alias("user_group"))
    return (compact_events(events, roles).groupBy(*keys)
            .applyInArrow(user_aggregates_of_day, USER_DAILY_SCHEMA))
