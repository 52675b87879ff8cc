"""The I/O edge of the features stage: table specs, the incremental user_daily update, and the
idempotent per-snapshot writes of user_features and labels."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Sequence

import pyarrow as pa
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from demandcast.logs import get_logger
from demandcast.tables import (NO_DELETION_VECTORS, FileCommitRefused, PartitionFiles, TableFiles,
                               TableSpec, is_delta_table, partition_files, partition_record_counts,
                               qualified_location, read_table, replace_partitions_with_files,
                               table_files, table_path, write_table)
from features.assemble import (population_from_files, snapshot_aggregates_from_files, snapshot_frame,
                               user_features)
from features.catalog import FeatureSpec, column_comments
from features.daily import (ADDITIVE_COLUMNS, USER_DAILY_SCHEMA, item_context, user_daily_aggregates,
                            user_daily_from_files, write_user_daily_files)
from features.labels import label_sums, label_sums_from_files, labels

log = get_logger("features")

_DAILY_COMMENTS = {
    "user_key": "Pseudonymous user id.",
    "event_date": "UTC date of the events aggregated in this row.",
    "events": "Events of the day.",
    "views": "View events.", "carts": "Add-to-cart events.", "purchases": "Purchase events.",
    "viewed_value": "Sum of price x quantity of views.",
    "carted_value": "Sum of price x quantity of carts.",
    "spend": "Sum of price x quantity of purchases.",
    "viewed_price_sum": "Sum of unit prices of views.", "views_priced": "Views with a price.",
    "bought_price_sum": "Sum of unit prices of purchases.",
    "purchases_priced": "Purchases with a price.",
    "purchased_quantity": "Sum of quantities of purchases (missing quantity counts 1).",
    "promo_purchases": "Purchases with price below the item's list_price (when processed).",
    "sessions": "Sessions with events on this day.",
    "session_seconds": "Sum over sessions of last minus first event time on this day.",
    "weekend_events": "Events if the day is Saturday or Sunday, else 0.",
    "events_night": "Events 00:00-06:00 UTC.", "events_morning": "Events 06:00-12:00 UTC.",
    "events_afternoon": "Events 12:00-18:00 UTC.", "events_evening": "Events 18:00-24:00 UTC.",
    "active_days": "Always 1: summed over a window it counts active days.",
    "first_event_time": "First event time of the day.", "last_event_time": "Last event time.",
    "last_view_time": "Last view time of the day.", "last_cart_time": "Last cart time of the day.",
    "last_purchase_time": "Last purchase time of the day.",
    "last_device": "Device of the day's last event.",
    "categories": "Per category: views, purchases and spend of the day.",
}
assert set(_DAILY_COMMENTS) >= set(ADDITIVE_COLUMNS)

# Min/max statistics of the first data column only (user_key): Delta computes them for every
# written file, and over the wide feature rows (32 columns by default) that is a measurable
# part of the write; nothing filters these tables on other columns. numRecords is kept.
WRITE_PROPERTIES = {**NO_DELETION_VECTORS, "delta.dataSkippingNumIndexedCols": "1"}

USER_DAILY = TableSpec(
    name="user_daily",
    comment="One row per user and UTC day with the day's additive aggregates; the partitions of "
            "event dates whose event count changed are recomputed and replaced (features stage).",
    partition_by=("event_date",),
    column_comments=_DAILY_COMMENTS,
    properties=WRITE_PROPERTIES,
)

LABEL_COMMENTS = {
    "user_key": "Pseudonymous user id.",
    "snapshot_date": "Label window: D <= event_time < D + label_window_days (UTC days).",
    "label_purchased": "1 if the user made a purchase in the label window, else 0.",
    "label_spend": "Sum of price x quantity of the window's purchases.",
    "label_n_purchases": "Purchase events in the window.",
    "label_category_spend": "Spend per category bought in the window.",
}


def user_features_spec(spec: FeatureSpec) -> TableSpec:
    return TableSpec(
        name="user_features",
        comment="Point-in-time user features per snapshot_date: only events with event_time < "
                "snapshot_date. Catalog: docs/FEATURES.md.",
        partition_by=("snapshot_date",),
        column_comments=column_comments(spec),
        properties=WRITE_PROPERTIES,
    )


LABELS = TableSpec(
    name="labels",
    comment="Labels per user and snapshot_date over the window D <= event_time < D + N days.",
    partition_by=("snapshot_date",),
    column_comments=LABEL_COMMENTS,
    properties=WRITE_PROPERTIES,
)


@dataclass
class DailyUpdate:
    processed_dates: list[dt.date] = field(default_factory=list)
    event_dates: int = 0
    last_event_date: dt.date | None = None
    version: int | None = None


def dates_to_process(spark: SparkSession, warehouse: str, user_daily: DataFrame | None
                     ) -> tuple[list[dt.date], dict]:
    """Event dates whose event count differs from what user_daily has aggregated.

    Events are insert-only (ingest MERGE), so a date that received late events has a larger
    count than its user_daily rows sum to; comparing counts per date finds new dates and late
    arrivals. The events side comes from the Delta log (no scan); the user_daily side reads
    only its small `events` column.
    """
    in_events = partition_record_counts(spark, table_path(warehouse, "events"), "event_date")
    aggregated: dict = {}
    if user_daily is not None:
        aggregated = {r[0]: r[1] for r in
                      user_daily.groupBy("event_date").agg(F.sum("events")).collect()}
    changed = sorted(d for d, n in in_events.items() if n and aggregated.get(d) != n)
    return changed, {d: n for d, n in in_events.items() if n}


def event_date_range(spark: SparkSession, warehouse: str) -> tuple[dt.date | None, dt.date | None]:
    """First and last event_date with rows, from the Delta log (no scan); (None, None) if empty."""
    read_table(spark, warehouse, "events")  # a clear error when the table does not exist
    dates = [d for d, n in partition_record_counts(spark, table_path(warehouse, "events"),
                                                   "event_date").items() if n and d is not None]
    return (min(dates), max(dates)) if dates else (None, None)


def pyarrow_refusal(root: str) -> str:
    """Why a Python worker cannot open the table location `root` with pyarrow ("" when it can)."""
    from features.table_files import file_system

    try:
        file_system(root)
    except (OSError, ValueError, pa.ArrowException) as error:
        return f"pyarrow cannot open {root} ({error})"
    return ""


def readable_files(spark: SparkSession, warehouse: str, table: str, dates: list[dt.date]
                   ) -> tuple[PartitionFiles | None, str]:
    """The files of event dates `dates` of `table` when a Python worker may read them as plain
    Parquet (features.table_files), else (None, why not)."""
    source, why_not = partition_files(spark, table_path(warehouse, table), "event_date", dates)
    if source is None:
        return None, why_not
    unlisted = sorted(set(dates) - set(source.files))
    if unlisted:  # counted in the log but without files: let Spark's reader decide
        return None, f"no data files listed for event dates {[str(d) for d in unlisted[:5]]}"
    why_not = pyarrow_refusal(source.root)
    return (None, why_not) if why_not else (source, "")


def readable_users(spark: SparkSession, warehouse: str, users: DataFrame) -> tuple[TableFiles | None, str]:
    """The users dimension's files when the snapshot's Python workers may read and join them
    (features.snapshot_aggregates.with_user_attributes), else (None, why not)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    from features.snapshot_aggregates import USERS_COLUMNS

    have = {f.name: f.dataType for f in users.schema.fields}
    expected = from_arrow_schema(USERS_COLUMNS).fields
    other = [f"{f.name} {have[f.name].simpleString() if f.name in have else 'missing'}"
             for f in expected if have.get(f.name) != f.dataType]
    if other:
        return None, f"users columns are not of the types the workers read: {', '.join(other)}"
    files, why_not = table_files(spark, table_path(warehouse, "users"))
    if files is None:
        return None, why_not
    why_not = pyarrow_refusal(files.root)
    return (None, why_not) if why_not else (files, "")


def direct_event_files(spark: SparkSession, warehouse: str, dates: list[dt.date], spec: FeatureSpec
                       ) -> tuple[PartitionFiles | None, str]:
    """The events files of `dates` when user_daily may read them directly, else (None, why not)."""
    if spec.daily_read != "files":
        return None, f"features.daily_read is '{spec.daily_read}'"
    if spec.daily_user_groups > 1:
        return None, "features.daily_user_groups > 1 splits each day's users"
    return readable_files(spark, warehouse, "events", dates)


def direct_write_refusal(spark: SparkSession, warehouse: str, table: str, setting: str, value: str) -> str:
    """Why Python workers may not write `table`'s files for the driver to commit
    (features.table_files), as far as settings and the location go ("" when they may);
    replace_partitions_with_files checks the table itself. `setting` = `value` is the features
    setting that chooses the writer (features.daily_write, features.snapshot_write)."""
    if value != "files":
        return f"{setting} is '{value}'"
    return pyarrow_refusal(qualified_location(spark, table_path(warehouse, table)))


def written_by_workers(df: DataFrame, column: str):
    """`write_files` of replace_partitions_with_files for the rows of `df`: each Spark task
    writes its rows into one Parquet file per value of the date partition `column` in Python
    (features.table_files.write_partitioned_batches) and returns only the add actions. The rows
    reach Python as Arrow batches; Spark's Parquet writer and its per-row statistics are skipped."""
    def write_files(root: str, not_null: Sequence[str]) -> list[str]:
        def written(batches):
            from features.table_files import write_partitioned_batches

            for action in write_partitioned_batches(root, column, batches, not_null):
                yield pa.record_batch([pa.array([action])], names=["add"])

        return [row["add"] for row in df.mapInArrow(written, "add string").collect()]

    return write_files


def replace_snapshot_partitions(df: DataFrame, warehouse: str, table: TableSpec,
                                snapshots: Sequence[dt.date], spec: FeatureSpec) -> int:
    """write_table(df, warehouse, table, "replace_partitions", snapshots), its files written by
    the workers unless features.snapshot_write or the table says otherwise."""
    spark = df.sparkSession
    why_not = direct_write_refusal(spark, warehouse, table.name, "features.snapshot_write",
                                   spec.snapshot_write)
    if not why_not:
        try:
            return replace_partitions_with_files(spark, warehouse, table, df,
                                                 written_by_workers(df, table.partition_by[0]), snapshots)
        except FileCommitRefused as refused:
            why_not = str(refused)
    log.info("%s: written through Spark: %s", table.name, why_not)
    return write_table(df, warehouse, table, "replace_partitions", snapshots)


@dataclass(frozen=True)
class UserDailyFiles:
    """user_daily's files and rows per date, for reading it in Python workers."""

    source: PartitionFiles
    rows_per_date: dict


def direct_user_daily(spark: SparkSession, warehouse: str, spec: FeatureSpec
                      ) -> tuple[UserDailyFiles | None, str]:
    """user_daily's files when a snapshot may sum them in Python workers (features.user_ranges),
    else (None, why not)."""
    if spec.snapshot_read != "files":
        return None, f"features.snapshot_read is '{spec.snapshot_read}'"
    counts = partition_record_counts(spark, table_path(warehouse, "user_daily"), "event_date")
    if None in counts:
        return None, "user_daily has rows with a null event_date"
    dates = sorted(d for d, n in counts.items() if n)
    if not dates:
        return None, "user_daily has no rows"
    source, why_not = readable_files(spark, warehouse, "user_daily", dates)
    if source is None:
        return None, why_not
    return UserDailyFiles(source, counts), ""


def update_user_daily(spark: SparkSession, warehouse: str, spec: FeatureSpec) -> DailyUpdate:
    """Recomputes user_daily for new or changed event dates only, in one commit.

    A changed date is recomputed whole from its events, so its user_daily partition is replaced
    (replaceWhere event_date IN changed dates). That is what a MERGE on (user_key, event_date)
    with update-all would produce, without joining the new rows to the target first; dates not
    in the list are not read or rewritten.
    """
    events = read_table(spark, warehouse, "events")
    items = read_table(spark, warehouse, "items")
    path = table_path(warehouse, "user_daily")
    existing = read_table(spark, warehouse, "user_daily") if is_delta_table(spark, path) else None
    changed, counts = dates_to_process(spark, warehouse, existing)
    dated = [d for d in counts if d is not None]
    result = DailyUpdate(changed, len(counts), max(dated) if dated else None)
    if not changed:
        log.info("user_daily is up to date with %d event dates", len(counts))
        return result
    log.info("user_daily: aggregating %d event dates (%s .. %s)", len(changed), changed[0], changed[-1])
    context = item_context(items)
    source, why_not = direct_event_files(spark, warehouse, changed, spec)
    if source is not None:
        log.info("user_daily: reading %d files of events directly",
                 sum(len(f) for f in source.files.values()))
        why_not_write = direct_write_refusal(spark, warehouse, USER_DAILY.name, "features.daily_write",
                                             spec.daily_write)
        if not why_not_write:
            log.info("user_daily: workers write the files, the driver commits them")
            try:
                result.version = replace_partitions_with_files(
                    spark, warehouse, USER_DAILY, spark.createDataFrame([], USER_DAILY_SCHEMA),
                    lambda root, not_null: write_user_daily_files(spark, source, counts, context,
                                                                  spec.roles, root, not_null),
                    changed)
                return result
            except FileCommitRefused as refused:
                why_not_write = str(refused)
        log.info("user_daily: written through Spark: %s", why_not_write)
        daily = user_daily_from_files(spark, source, counts, context, spec.roles)
    else:
        log.info("user_daily: reading events through Spark: %s", why_not)
        daily = user_daily_aggregates(events.where(F.col("event_date").isin(changed)), context,
                                      spec.roles, spec.daily_user_groups)
    result.version = write_table(daily, warehouse, USER_DAILY, "replace_partitions", changed)
    return result


def label_window_complete(snapshot: dt.date, window_days: int, last_event_date: dt.date | None) -> bool:
    return last_event_date is not None and snapshot + dt.timedelta(days=window_days - 1) <= last_event_date


def write_snapshots(spark: SparkSession, warehouse: str, snapshots: Sequence[dt.date],
                    spec: FeatureSpec, last_event_date: dt.date | None,
                    require_complete_labels: bool = True) -> dict:
    """Computes and writes user_features and labels for `snapshots` (replaceWhere on them)."""
    snapshots = sorted(set(snapshots))
    daily = read_table(spark, warehouse, "user_daily")
    users = read_table(spark, warehouse, "users")
    without_user = Observation("feature rows without a users record")
    files, why_not = direct_user_daily(spark, warehouse, spec)
    if files is not None:
        log.info("user_features and labels: summing user_daily's files directly")
        users_files, why_not_users = readable_users(spark, warehouse, users)
        if users_files is None:
            log.info("user_features: the users dimension is joined through Spark: %s", why_not_users)
        aggregates = snapshot_aggregates_from_files(spark, files.source, files.rows_per_date,
                                                    snapshots, spec, users_files)
        population_sums = population_from_files(spark, files.source, files.rows_per_date, snapshots, spec)
    else:
        log.info("user_features and labels: summing user_daily through Spark: %s", why_not)
        aggregates = population_sums = None
    features = user_features(daily, users, snapshots, spec, without_user, aggregates, population_sums)
    features_version = replace_snapshot_partitions(features, warehouse, user_features_spec(spec),
                                                   snapshots, spec)
    no_user_record = {d: int(n) for d, n in without_user.get.items()}
    for snapshot, n in no_user_record.items():
        if n:
            log.warning("user_features %s: %d rows have no record in the users dimension, so their "
                        "user attributes (signup, region, age band) are null; ingest the users "
                        "export that has them and rerun features", snapshot, n)

    labelled = [d for d in snapshots
                if not require_complete_labels
                or label_window_complete(d, spec.label_window_days, last_event_date)]
    skipped = sorted(set(snapshots) - set(labelled))
    if skipped:
        log.warning("labels not written for %s: the %d-day label window reaches past the last "
                    "event date %s", [str(d) for d in skipped], spec.label_window_days, last_event_date)
    labels_version = None
    if labelled:
        population = (read_table(spark, warehouse, "user_features", version=features_version)
                      .where(F.col("snapshot_date").isin(labelled)).select("user_key", "snapshot_date"))
        window = spec.label_window_days
        sums = (label_sums_from_files(spark, files.source, files.rows_per_date, labelled, window)
                if files is not None else label_sums(daily, snapshot_frame(spark, labelled), window))
        table = labels(population, sums)
        labels_version = replace_snapshot_partitions(table, warehouse, LABELS, labelled, spec)
    return {"snapshots": [str(d) for d in snapshots], "user_features_version": features_version,
            "labels_version": labels_version, "labels_skipped": [str(d) for d in skipped],
            "rows_without_user_record": no_user_record}
