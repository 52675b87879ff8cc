"""Events -> `user_daily`: one row per (user_key, event_date) with the day's additive aggregates.

Every windowed feature and every label is a sum (or max/min) over these rows, so a snapshot reads
user_daily instead of rescanning the events. Columns are additive across days (counts, sums,
per-category counts) or combine with max/min (times), which is what makes windows cheap.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from demandcast.tables import PartitionFiles

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


# Codes of the event roles in features.day_aggregates.compact_events (0: any other event type).
ROLE_VIEW, ROLE_CART, ROLE_PURCHASE = 1, 2, 3


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


def item_context(items: DataFrame) -> pa.Table:
    """What user_daily needs of the items dimension, as an Arrow table for the Python workers."""
    from features.day_aggregates import ITEM_CONTEXT_SCHEMA  # here: it imports this module

    return items.select(*ITEM_CONTEXT_SCHEMA.names).toArrow().cast(ITEM_CONTEXT_SCHEMA)


def user_daily_aggregates(events: DataFrame, items: pa.Table, roles: EventRoles,
                          user_groups: int = 1) -> DataFrame:
    """One row per (user_key, event_date) of `events`, read through Spark.

    The event columns user_daily reads are shuffled once by event_date, and each date's events
    (split into `user_groups` groups of users by a hash of user_key: a group must fit in a Python
    worker's memory, about 300 bytes per event) go to a Python worker as one Arrow table, where
    features.day_aggregates compacts and aggregates them with numpy: counts and sums per user,
    the day's sessions and their lengths, first and last times, the last device and the
    per-category list. `items` (item_context) gives events without a category their item's.
    """
    from features.day_aggregates import RAW_EVENT_SCHEMA, user_daily_rows

    shipped = events.sparkSession.sparkContext.broadcast(items)

    def rows(raw: pa.Table) -> pa.Table:
        return user_daily_rows(raw, shipped.value, roles)

    keys = [F.col("event_date")]
    if user_groups > 1:
        keys.append(F.pmod(F.xxhash64("user_key"), F.lit(user_groups)).alias("user_group"))
    return (events.select(*RAW_EVENT_SCHEMA.names, "event_date").groupBy(*keys)
            .applyInArrow(rows, USER_DAILY_SCHEMA))


# The Delta writer sorts a task's rows by event_date in the JVM before it writes them, so a
# task's rows are all in the JVM's memory at once: at 200M events in 8 tasks the sorts spilled
# 4 GB and the driver's heap grew to its 5 GB cap (bench/RESULTS.md, session 17). A task of
# about this many events (some 0.4M user_daily rows) keeps the sort small at any scale. (When the
# workers write the files themselves, write_user_daily_files, nothing is sorted in the JVM; the
# task size then only spreads the dates evenly.)
EVENTS_PER_TASK = 2_000_000


def balanced_tasks(weights: dict, tasks: int) -> list[list]:
    """The keys of `weights` in at most `tasks` lists of similar total weight (heaviest first,
    each to the lightest list so far), each list sorted."""
    bins: list[tuple[int, int, list]] = [(0, i, []) for i in range(max(1, min(tasks, len(weights))))]
    for key in sorted(weights, key=lambda k: (-weights[k], k)):
        total, i, keys = heapq.heappop(bins)
        keys.append(key)
        heapq.heappush(bins, (total + weights[key], i, keys))
    return [sorted(keys) for _, _, keys in sorted(bins, key=lambda b: b[1]) if keys]


def daily_tasks(events_per_date: dict, cores: int) -> list[list]:
    """The dates of `events_per_date` in tasks of similar event counts: four per core at least
    (the last tasks of a stage are short), and about EVENTS_PER_TASK events each at most (a
    single date larger than that is one task)."""
    total = sum(events_per_date.values())
    return balanced_tasks(events_per_date, max(4 * cores, -(-total // EVENTS_PER_TASK)))


def day_tasks(spark: SparkSession, source: PartitionFiles, events_per_date: dict) -> DataFrame:
    """One row per task: the (event_date, files) of the dates it reads, spread over the tasks
    by their row counts (`events_per_date`, from the log)."""
    tasks = daily_tasks({d: events_per_date.get(d, 1) for d in source.files},
                        spark.sparkContext.defaultParallelism)
    days = [([(d, source.files[d]) for d in task],) for task in tasks]
    return spark.createDataFrame(spark.sparkContext.parallelize(days, max(1, len(days))),
                                 "days array<struct<event_date: date, files: array<string>>>")


def _daily_rows_of_tasks(spark: SparkSession, source: PartitionFiles, items: pa.Table,
                         roles: EventRoles):
    """A function of a task's Arrow batches (`day_tasks` rows) that yields (event_date, that
    date's user_daily rows as an Arrow table), each date's files read whole in the worker."""
    from features.day_aggregates import user_daily_rows
    from features.table_files import read_event_files

    shipped = spark.sparkContext.broadcast(items)
    root = source.root

    def daily_rows(batches):
        for batch in batches:
            for task in batch.column("days").to_pylist():
                for day in task:
                    raw = read_event_files(root, day["files"], day["event_date"])
                    yield day["event_date"], user_daily_rows(raw, shipped.value, roles)

    return daily_rows


def user_daily_from_files(spark: SparkSession, source: PartitionFiles, events_per_date: dict,
                          items: pa.Table, roles: EventRoles) -> DataFrame:
    """One row per (user_key, event_date) of the event dates in `source`, each date's Parquet
    files read whole by one Python worker (features.table_files): no shuffle, no Spark rows."""
    daily_rows = _daily_rows_of_tasks(spark, source, items, roles)

    def rows_of_files(batches):
        for _, rows in daily_rows(batches):
            yield from rows.to_batches()

    return day_tasks(spark, source, events_per_date).mapInArrow(rows_of_files, USER_DAILY_SCHEMA)


def user_daily_file_schema() -> pa.Schema:
    """user_daily's data-file schema: the table's columns less the partition column, as Spark
    types them in Parquet (int32, float64, UTC microsecond timestamps, lists of structs)."""
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import StructType

    table = StructType.fromDDL(USER_DAILY_SCHEMA)  # parsed by the JVM: call it on the driver
    return to_arrow_schema(StructType([f for f in table.fields if f.name != "event_date"]))


def write_user_daily_files(spark: SparkSession, source: PartitionFiles, events_per_date: dict,
                           items: pa.Table, roles: EventRoles, table_root: str,
                           not_null: Sequence[str] = ()) -> list[str]:
    """Aggregates the event dates in `source` as user_daily_from_files does, but each worker
    writes its dates' rows as Parquet files into the user_daily table location `table_root`
    (one file per date) and returns only their Delta add actions (JSON), for the driver to
    commit: the rows never become Spark rows. Files of a failed attempt stay unreferenced."""
    from features.table_files import write_partition_file

    daily_rows = _daily_rows_of_tasks(spark, source, items, roles)
    schema = user_daily_file_schema()

    def written_files(batches):
        for event_date, rows in daily_rows(batches):
            action = write_partition_file(table_root, "event_date", event_date,
                                          rows.drop_columns(["event_date"]).cast(schema), not_null)
            yield pa.record_batch([pa.array([action])], names=["add"])

    added = day_tasks(spark, source, events_per_date).mapInArrow(written_files, "add string")
    return [row["add"] for row in added.collect()]
