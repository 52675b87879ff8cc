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


def _count_if(cond: Column) -> Column:
    return F.sum(F.when(cond, 1).otherwise(0)).cast("int")


def _micros_sum_if(cond: Column, value_micros: str) -> Column:
    """Sum of the integer millionths column `value_micros` where `cond`; 0 when none."""
    return F.coalesce(F.sum(F.when(cond, F.col(value_micros))), F.lit(0).cast("long"))


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


def compact_events(events: DataFrame, roles: EventRoles) -> DataFrame:
    """The event columns user_daily needs, narrowed before the one shuffle: the role as a small
    code instead of the event_type string, the promotion flag instead of list_price. Values
    derived per event (amounts in millionths, hour, weekend) are computed here, once per event:
    after the shuffle every event stands twice (see user_daily_aggregates), and Spark's round
    of a double goes through a BigDecimal (about 110 ns a call here)."""
    role = (F.when(_is(roles.view), 1).when(_is(roles.cart), 2).when(_is(roles.purchase), 3)
            .otherwise(0).cast("byte"))
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


# The two groupings of the day's events: by session (session counts and lengths, and every
# additive column) and by category (the categories list).
BY_SESSION, BY_CATEGORY = 0, 1


def user_daily_aggregates(events: DataFrame, roles: EventRoles,
                          devices: list[str | None] | None = None) -> DataFrame:
    """One row per (user_key, event_date) of events that carry `list_price` (see above).

    The events are shuffled once, laid out by event_date (narrowed first, see compact_events).
    Each event then stands twice, once keyed by its session and once by its category, and one
    hash aggregation per (user, day, grouping, key) computes every count, sum, time and the
    packed last device (see `packed_time_device`); one more per (user, day) adds up the session
    rows (plus the number of sessions and their summed length) and collects the category rows
    into the sorted category list. Both aggregations group by keys that include event_date, so
    they and the write (one file per date) run in the stage that reads the shuffle: no further
    shuffle, no join. `devices` are the distinct device values of `events` (see
    `distinct_devices`); without them the last device comes from a max_by, which Spark runs as a
    slower sort-based aggregation.
    """
    hour = F.col("hour")
    view, cart, buy = F.col("role") == 1, F.col("role") == 2, F.col("role") == 3
    codes = device_codes(devices)
    day_keys = ["user_key", "event_date"]

    keyed = F.explode(F.array(
        F.struct(F.lit(BY_SESSION).alias("grouping"), F.col("session_id").alias("key")),
        F.struct(F.lit(BY_CATEGORY).alias("grouping"), F.col("category_id").alias("key"))))
    events = (compact_events(events, roles).repartition("event_date")
              .select("*", keyed.alias("by")).select("*", "by.grouping", "by.key").drop("by"))

    summed = [c for c in ADDITIVE_COLUMNS if c not in ("sessions", "session_seconds", "active_days")]
    per_event = [
        F.count(F.lit(1)).cast("int").alias("events"),
        _count_if(view).alias("views"),
        _count_if(cart).alias("carts"),
        _count_if(buy).alias("purchases"),
        _micros_sum_if(view, "value_micros").alias("viewed_value"),
        _micros_sum_if(cart, "value_micros").alias("carted_value"),
        _micros_sum_if(buy, "value_micros").alias("spend"),
        _micros_sum_if(view, "price_micros").alias("viewed_price_sum"),
        _count_if(view & F.col("price_micros").isNotNull()).alias("views_priced"),
        _micros_sum_if(buy, "price_micros").alias("bought_price_sum"),
        _count_if(buy & F.col("price_micros").isNotNull()).alias("purchases_priced"),
        F.coalesce(F.sum(F.when(buy, F.col("quantity"))), F.lit(0)).cast("int").alias("purchased_quantity"),
        _count_if(buy & F.col("promo")).alias("promo_purchases"),
        _count_if(F.col("weekend")).alias("weekend_events"),
        *[_count_if((hour >= lo) & (hour < hi)).alias(f"events_{part}")
          for part, (lo, hi) in DAY_PARTS.items()],
    ]
    times = [F.min("event_time").alias("first_event_time"),
             F.max("event_time").alias("last_event_time"),
             F.max(F.when(view, F.col("event_time"))).alias("last_view_time"),
             F.max(F.when(cart, F.col("event_time"))).alias("last_cart_time"),
             F.max(F.when(buy, F.col("event_time"))).alias("last_purchase_time")]
    if codes is not None:
        last_device = F.max(packed_time_device(F.col("event_time"), F.col("device"), codes))
    else:
        # Ties (two events at the same instant) go to the larger device name: deterministic.
        last_device = F.max_by("device", F.struct("event_time", "device"))
    # A missing session_id is one session (as a GROUP BY treats it).
    groups = (events.groupBy(*day_keys, "grouping", "key")
              .agg(*per_event, *times, last_device.alias("last_device")))

    # Times and the last device: the category rows hold subsets of the session rows' events,
    # so extremes over all rows are those of the session rows.
    if codes is not None:
        day_device = unpacked_device(F.max("last_device"), codes)
    else:
        day_device = F.max_by("last_device", F.struct("last_event_time", "last_device"))
    session = F.col("grouping") == BY_SESSION
    # A session that crosses midnight counts on each day it has events, with the part of it
    # that falls on that day: sessions stay additive across days.
    session_micros = F.unix_micros("last_event_time") - F.unix_micros("first_event_time")
    # Sorted by category_id (the struct's first field; one entry per category); collect_list
    # skips the nulls of session rows and of events without a category.
    entry = F.when((F.col("grouping") == BY_CATEGORY) & F.col("key").isNotNull(), F.struct(
        F.col("key").alias("category_id"), "views", "purchases",
        (F.col("spend") / MICROS).cast("double").alias("spend")))
    day = groups.groupBy(*day_keys).agg(
        *[F.sum(F.when(session, F.col(c))).alias(c) for c in summed],
        _count_if(session).alias("sessions"),
        F.sum(F.when(session, session_micros)).alias("session_micros"),
        F.min("first_event_time").alias("first_event_time"),
        F.max("last_event_time").alias("last_event_time"),
        F.max("last_view_time").alias("last_view_time"),
        F.max("last_cart_time").alias("last_cart_time"),
        F.max("last_purchase_time").alias("last_purchase_time"),
        day_device.alias("last_device"),
        F.array_sort(F.collect_list(entry)).alias("categories"))

    return day.select(
        *day_keys,
        *[(_from_micros(c).alias(c) if c in EXACT_SUM_COLUMNS else F.col(c).cast("int").alias(c))
          for c in summed],
        "sessions",
        _from_micros("session_micros").alias("session_seconds"),
        F.lit(1).alias("active_days"),
        "first_event_time", "last_event_time", "last_view_time", "last_cart_time",
        "last_purchase_time", "last_device",
        F.col("categories").cast(f"array<struct<{CATEGORY_FIELDS}>>").alias("categories"))
