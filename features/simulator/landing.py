"""Writes the simulated world the way a platform lands it: raw files with realistic flaws.

- JSON lines, gzip, one folder per landing date (`event_date=YYYY-MM-DD`), event_time as
  ISO-8601 in the user's local offset;
- Parquet, same folders, event_time as a UTC timestamp;
- flaws (switchable): exact duplicates (a retried delivery, sometimes a day later), late events
  (landing 1-2 days after they happened), and a few invalid records of known kinds.
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from demandcast.settings.generate import SimulatorFlaws
from features.simulator.population import REGIONS, lookup
from features.simulator.randomness import hash64, split_uniform, uniform

# Kinds of invalid records the simulator plants (ingest must quarantine every one).
BAD_KINDS = ("malformed_json", "missing_user_id", "unknown_event_type", "negative_price",
             "absurd_quantity", "future_timestamp", "oversized_string", "non_numeric_price")
# Kinds that a typed Parquet file cannot hold.
JSON_ONLY_KINDS = ("malformed_json", "non_numeric_price")
EVENT_COLUMNS = ("event_id", "user_id", "session_id", "event_time", "event_type", "item_id",
                 "category_id", "price", "quantity", "device", "channel")


def with_flaws(events_df: DataFrame, flaws: SimulatorFlaws, seed: int) -> DataFrame:
    """Events plus `landing_date` and `bad_kind` (null for valid rows), flaws included.

    One pass: each event explodes into itself, maybe a duplicate and maybe an invalid copy, so
    the events are generated once however many flaws are planted. One hash of the event_id
    decides duplicate, invalid copy and lateness; the rare flawed rows draw their details.
    """
    eid = F.col("event_id")
    h = F.col("_h_flaws")
    duplicate = split_uniform(h, 0, 3) < flaws.duplicate_fraction
    bad = (split_uniform(h, 1, 3) < flaws.bad_row_fraction) & (F.col("event_type") != "search")
    empty = F.array().cast("array<string>")
    # concat of conditional arrays, not array_compact: that one is a higher-order function,
    # interpreted per row instead of compiled.
    copies = F.concat(F.array(F.lit("original")),
                      F.when(duplicate, F.array(F.lit("duplicate"))).otherwise(empty),
                      F.when(bad, F.array(F.lit("bad"))).otherwise(empty))
    late_by = F.when(split_uniform(h, 2, 3) < flaws.late_fraction,
                     F.lit(1) + (uniform(seed, "late_days", eid) < 0.5).cast("int")).otherwise(F.lit(0))
    redelivered = F.when(F.col("_copy") == "duplicate",
                         (uniform(seed, "dup_day", eid) < 0.3).cast("int")).otherwise(F.lit(0))
    kind_drawn = F.element_at(F.array(*[F.lit(k) for k in BAD_KINDS]),
                              (F.floor(uniform(seed, "bad_kind", eid) * len(BAD_KINDS)) + 1).cast("int"))
    kind = F.col("bad_kind")
    return (
        events_df.withColumn("_h_flaws", hash64(seed, "flaws", eid))
        .withColumn("_copy", F.explode(copies))
        .withColumn("landing_date", F.date_add("event_date", late_by + redelivered))
        .withColumn("bad_kind", F.when(F.col("_copy") == "bad", kind_drawn))
        .withColumn("event_id", F.when(kind.isNotNull(), F.concat(eid, F.lit("-bad"))).otherwise(eid))
        .withColumn("user_id", F.when(kind.isNull() | (kind != "missing_user_id"), F.col("user_id")))
        .withColumn("event_type", F.when(kind == "unknown_event_type", F.lit("hover"))
                    .otherwise(F.col("event_type")))
        .withColumn("price", F.when(kind == "negative_price", -F.col("price") - 1).otherwise(F.col("price")))
        .withColumn("quantity", F.when(kind == "absurd_quantity", F.lit(1_000_000)).otherwise(F.col("quantity")))
        .withColumn("event_time", F.when(kind == "future_timestamp", F.col("event_time") + F.expr("INTERVAL 80 YEARS"))
                    .otherwise(F.col("event_time")))
        .withColumn("device", F.when(kind == "oversized_string", F.repeat(F.lit("x"), 5000))
                    .otherwise(F.col("device")))
        .drop("_copy", "_h_flaws")
    )


def offset_seconds(offset: str) -> int:
    """Seconds east of UTC of a "+hh:mm" / "-hh:mm" offset."""
    hours, minutes = offset[1:].split(":")
    return (1 if offset[0] == "+" else -1) * (int(hours) * 3600 + int(minutes) * 60)


def json_lines(landed: DataFrame) -> DataFrame:
    """(value, event_date) with value one JSON record; times carry the user's local offset.

    The local time is the UTC time shifted by the offset's seconds (looked up among the few
    offsets the simulator gives) and printed as if in UTC, the session's zone: from_utc_timestamp
    would parse the offset text into a zone for every row. event_date stays a date (its folder
    name is the same): a text partition value is a date formatted for every row, and the write
    sorts rows by it."""
    seconds = lookup({offset: offset_seconds(offset) for offset in REGIONS.values()}, F.col("tz_offset"))
    local = F.timestamp_micros(F.unix_micros(F.col("event_time")) + seconds.cast("long") * F.lit(1_000_000))
    record = F.to_json(F.struct(*[
        (F.concat(F.date_format(local, "yyyy-MM-dd'T'HH:mm:ss.SSS"), F.col("tz_offset")).alias("event_time")
         if c == "event_time" else F.col(c)) for c in EVENT_COLUMNS]))
    kind = F.col("bad_kind")
    value = (F.when(kind == "malformed_json", F.substring(record, 1, F.floor(F.length(record) / 2).cast("int")))
             .when(kind == "non_numeric_price",
                   F.regexp_replace(record, r'"price":[-0-9.Ee]+', '"price":"n/a"'))
             .otherwise(record))
    return landed.select(value.alias("value"), F.col("landing_date").alias("event_date"))


def parquet_rows(landed: DataFrame) -> DataFrame:
    rows = landed.where(F.col("bad_kind").isNull() | ~F.col("bad_kind").isin(*JSON_ONLY_KINDS))
    return rows.select(*EVENT_COLUMNS, F.col("landing_date").alias("event_date"))


# Hadoop's names for zlib levels 1..9 (ZlibCompressor.CompressionLevel).
ZLIB_LEVELS = ("BEST_SPEED", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "BEST_COMPRESSION")


def write_json(landed: DataFrame, path: str, gzip_level: int = 6) -> None:
    """One gzip JSON-lines file per date folder and generating task (no shuffle, see
    behaviour.generating_task_days).

    Without Hadoop's native library (pyspark ships none) the gzip codec compresses with
    Hadoop's BuiltInGzipCompressor, which reads its level from `zlib.compress.level` in the
    write's Hadoop configuration, where Spark puts the writer's options."""
    if not 1 <= gzip_level <= len(ZLIB_LEVELS):
        raise ValueError(f"gzip_level {gzip_level}: expected 1..{len(ZLIB_LEVELS)}")
    (json_lines(landed).write.mode("overwrite").partitionBy("event_date")
     .option("compression", "gzip").option("zlib.compress.level", ZLIB_LEVELS[gzip_level - 1])
     .text(path))
    _rename_suffix(landed.sparkSession, path, ".txt.gz", ".json.gz")


def _rename_suffix(spark, root: str, old: str, new: str) -> None:
    """Spark's text writer names files *.txt.gz; platforms land JSON lines as *.json.gz."""
    jvm = spark._jvm
    root_path = jvm.org.apache.hadoop.fs.Path(root)
    fs = root_path.getFileSystem(spark._jsc.hadoopConfiguration())
    found = fs.listFiles(root_path, True)
    paths = []
    while found.hasNext():
        path = found.next().getPath()
        if path.getName().endswith(old):
            paths.append(path)
    for path in paths:
        fs.rename(path, jvm.org.apache.hadoop.fs.Path(path.getParent(), path.getName()[: -len(old)] + new))


# Columns with (nearly) a value per row of a date file: event_id is unique, and a user's visit
# of the day (one session) has about six events. A Parquet dictionary does not pay off for them, yet
# the writer hashes every value into one (for event_id, until the page overflows, then it
# re-encodes the page plain: about a third of the event files' CPU when measured; for the ids
# the same file size with or without it). Encoding only, not content.
PLAIN_COLUMNS = ("event_id", "session_id", "user_id")


def no_dictionary_options(columns) -> dict[str, str]:
    """Parquet writer options that switch the dictionary off for these columns only."""
    return {f"parquet.enable.dictionary#{c}": "false" for c in columns}


def write_parquet(landed: DataFrame, path: str, codec: str = "snappy") -> None:
    (parquet_rows(landed).write.mode("overwrite").partitionBy("event_date")
     .options(**no_dictionary_options(PLAIN_COLUMNS))
     .option("compression", codec).parquet(path))


# The columns of a plain order export (conf/examples/transactions.yaml maps them).
PURCHASE_EXPORT_COLUMNS = ("customer_id", "date", "quantity", "amount")


def purchase_export_rows(events: DataFrame) -> DataFrame:
    """The purchases of the simulated events as an order export: one row per purchase line with
    the customer (the simulator's user_id, so the ground truth keys still match), the UTC date
    and the line's total amount. Nothing else of the world: no sessions, views, carts, items."""
    bought = events.where(F.col("event_type") == "purchase")
    return bought.select(F.col("user_id").alias("customer_id"),
                         F.to_date("event_time").alias("date"),
                         F.col("quantity").cast("int").alias("quantity"),
                         F.round(F.col("price") * F.col("quantity"), 2).alias("amount"))


def write_purchase_export(events: DataFrame, path: str) -> None:
    """CSV files with a header line, no flaws: the export of a shop's order system."""
    (purchase_export_rows(events).write.mode("overwrite").option("header", "true")
     .csv(path))
