"""The I/O edge of the features stage: table specs, the incremental user_daily update, and the
idempotent per-snapshot writes of user_features and labels."""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Sequence

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from demandcast.logs import get_logger
from demandcast.tables import (NO_DELETION_VECTORS, TableSpec, current_version,
                               effective_commit_metadata, is_delta_table, metadata_of_current_state,
                               read_optional_table, read_table, table_path, write_table)
from features.assemble import user_features
from features.catalog import column_comments
from features.daily import ADDITIVE_COLUMNS, distinct_devices, user_daily_rows
from features.feature_spec import FeatureSpec
from features.labels import label_sums, labels
from features.snapshots import label_window_complete, labels_due

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
            "event dates that received or lost events are recomputed and replaced (features stage).",
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


# user_daily's commits carry the events version they were computed from: the next run reads
# only what changed in events since (its change data feed).
EVENTS_VERSION_KEY = "events_version"
# user_features' commits carry the user_daily version and feature spec they were computed from.
USER_DAILY_VERSION_KEY = "user_daily_version"
SPEC_KEY = "feature_spec"


@dataclass
class DailyUpdate:
    processed_dates: list[dt.date] = field(default_factory=list)
    last_event_date: dt.date | None = None
    version: int | None = None
    how: str = ""


def event_date_bounds(events: DataFrame) -> tuple[dt.date | None, dt.date | None]:
    """First and last event_date of `events`; (None, None) if it has no rows. A min and max over
    the partition column, which Delta answers from the log's partition values."""
    row = events.agg(F.min("event_date"), F.max("event_date")).first()
    return row[0], row[1]


def event_date_range(spark: SparkSession, warehouse: str) -> tuple[dt.date | None, dt.date | None]:
    """event_date_bounds of the events table's current version."""
    return event_date_bounds(read_table(spark, warehouse, "events"))


def dates_in_change_feed(spark: SparkSession, path: str, first_version: int, last_version: int) -> list[dt.date]:
    """The event dates of the rows inserted, updated or deleted in events versions
    first_version..last_version, from the table's change data feed (one row per date reaches
    the driver)."""
    changes = (spark.read.format("delta").option("readChangeFeed", "true")
               .option("startingVersion", first_version).option("endingVersion", last_version)
               .load(path))
    return sorted(r[0] for r in changes.select("event_date").distinct().collect() if r[0] is not None)


def dates_with_other_counts(events: DataFrame, user_daily: DataFrame | None) -> list[dt.date]:
    """Event dates whose event count differs from the count user_daily has aggregated, by a
    scan of both tables: the full check when the change feed cannot tell (first run, a
    change feed not enabled or no longer retained for the versions in between)."""
    in_events = events.groupBy("event_date").agg(F.count(F.lit(1)).alias("n"))
    if user_daily is None:
        return sorted(r[0] for r in in_events.select("event_date").collect() if r[0] is not None)
    aggregated = user_daily.groupBy("event_date").agg(F.sum("events").alias("aggregated"))
    differing = (in_events.join(aggregated, "event_date", "full_outer")
                 .where(~F.col("n").eqNullSafe(F.col("aggregated"))).select("event_date"))
    return sorted(r[0] for r in differing.collect() if r[0] is not None)


def changed_event_dates(spark: SparkSession, warehouse: str, events: DataFrame, events_version: int,
                        user_daily: DataFrame | None) -> tuple[list[dt.date], str]:
    """Event dates whose user_daily rows must be recomputed to match events at
    `events_version`, and how they were found (for the log)."""
    processed = None
    if user_daily is not None:
        processed = metadata_of_current_state(spark, table_path(warehouse, "user_daily"), EVENTS_VERSION_KEY)
    if processed is not None and int(processed) == events_version:
        return [], f"events unchanged since version {events_version}"
    if processed is not None and int(processed) < events_version:
        first = int(processed) + 1
        try:
            dates = dates_in_change_feed(spark, table_path(warehouse, "events"), first, events_version)
            return dates, f"change data feed of events versions {first}..{events_version}"
        except Exception as error:  # Delta refuses the range: not enabled, or no longer retained
            reason = str(error).strip().splitlines()[0][:300]
            log.info("user_daily: the events change feed cannot tell what changed (%s)", reason)
    return (dates_with_other_counts(events, user_daily),
            f"event counts per date compared with user_daily's (events version {events_version})")


def update_user_daily(spark: SparkSession, warehouse: str, spec: FeatureSpec) -> DailyUpdate:
    """Recomputes user_daily for the event dates that received (or lost) events since its last
    update, in one commit.

    A changed date is recomputed whole from its events, so its user_daily partition is replaced
    (replaceWhere event_date IN changed dates): what a MERGE on (user_key, event_date) would
    produce, without joining the new rows to the target first. Dates not in the list are not
    read or rewritten. Events are read at one pinned version, the one the commit records.
    """
    read_table(spark, warehouse, "events")  # a clear error when the table does not exist
    events_version = int(current_version(spark, table_path(warehouse, "events")))
    events = read_table(spark, warehouse, "events", version=events_version)
    items = read_optional_table(spark, warehouse, "items")
    existing = read_optional_table(spark, warehouse, "user_daily")
    changed, how = changed_event_dates(spark, warehouse, events, events_version, existing)
    # The bounds of the version this update reads, the one its commit records.
    result = DailyUpdate(changed, event_date_bounds(events)[1], None, how)
    if not changed:
        log.info("user_daily is up to date (%s)", how)
        return result
    log.info("user_daily: recomputing %d event dates (%s .. %s), found by %s", len(changed),
             changed[0], changed[-1], how)
    if items is None:
        log.warning("user_daily: no items table: events without a category stay without one and "
                    "promotions (price below list price) are unknown")
    dated = events.where(F.col("event_date").isin(changed))
    rows = user_daily_rows(dated, items, spec.roles, distinct_devices(dated, "device"))
    result.version = write_table(rows, warehouse, USER_DAILY, "replace_partitions", changed,
                                 user_metadata={EVENTS_VERSION_KEY: events_version})
    return result


def feature_spec_fingerprint(spec: FeatureSpec) -> str:
    """A short stable hash of everything that shapes a snapshot's features and labels."""
    text = json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def up_to_date_snapshots(spark: SparkSession, warehouse: str, user_daily_version: int | None,
                         spec_fingerprint: str) -> set[dt.date]:
    """Snapshots of user_features whose latest write was computed from this user_daily version
    with this feature spec (each write records both with its commit): rewriting them would
    produce the same rows and one more table version."""
    seen: set[str] = set()
    current: set[dt.date] = set()
    for _, metadata in effective_commit_metadata(spark, table_path(warehouse, "user_features")):
        for day in metadata.get("snapshots") or []:
            if day in seen:
                continue
            seen.add(day)
            if (metadata.get(USER_DAILY_VERSION_KEY) == user_daily_version
                    and metadata.get(SPEC_KEY) == spec_fingerprint):
                current.add(dt.date.fromisoformat(day))
    return current


def snapshot_dates_of(table: DataFrame | None) -> set[dt.date]:
    """The snapshot_date values of a table (its partition column): one row per snapshot."""
    if table is None:
        return set()
    return {r[0] for r in table.select("snapshot_date").distinct().collect() if r[0] is not None}


def write_snapshots(spark: SparkSession, warehouse: str, snapshots: Sequence[dt.date],
                    spec: FeatureSpec, last_event_date: dt.date | None,
                    require_complete_labels: bool = True, changed_event_dates: Sequence[dt.date] = (),
                    skip_up_to_date: bool = False) -> dict:
    """Computes and writes user_features for `snapshots` (replaceWhere on them), then labels for
    them and for every earlier snapshot whose labels are due (features.snapshots.labels_due):
    a snapshot's label window closes days after its features are written.

    `changed_event_dates` are the user_daily dates just re-aggregated (late events): labels whose
    window holds one are rewritten. With `skip_up_to_date`, snapshots computed from the current
    user_daily version with the same spec are not rewritten, so rerunning a day commits nothing.
    """
    snapshots = sorted(set(snapshots))
    daily_version = current_version(spark, table_path(warehouse, "user_daily"))
    fingerprint = feature_spec_fingerprint(spec)
    current = up_to_date_snapshots(spark, warehouse, daily_version, fingerprint) if skip_up_to_date else set()
    to_compute = [d for d in snapshots if d not in current]
    if current & set(snapshots):
        log.info("user_features %s: up to date (user_daily version %s, same feature spec), not "
                 "rewritten", sorted(str(d) for d in current & set(snapshots)), daily_version)
    daily = read_table(spark, warehouse, "user_daily")
    features_version = None
    no_user_record: dict = {}
    if to_compute:
        features_version, no_user_record = _write_features(spark, warehouse, daily, to_compute, spec, {
            USER_DAILY_VERSION_KEY: daily_version, SPEC_KEY: fingerprint,
            "snapshots": [str(d) for d in to_compute]})

    complete = [d for d in snapshots
                if not require_complete_labels
                or label_window_complete(d, spec.label_window_days, last_event_date)]
    skipped = sorted(set(snapshots) - set(complete))
    if skipped:
        log.warning("labels not written for %s yet: the %d-day label window reaches past the last "
                    "event date %s; a later run writes them once it has closed",
                    [str(d) for d in skipped], spec.label_window_days, last_event_date)
    features_table = read_table(spark, warehouse, "user_features", version=features_version)
    due = labels_due(snapshot_dates_of(features_table),
                     snapshot_dates_of(read_optional_table(spark, warehouse, "labels")),
                     to_compute, changed_event_dates, spec.label_window_days, last_event_date)
    labelled = sorted(set(due) | {d for d in complete if d in to_compute})
    labels_version = None
    if labelled:
        log.info("labels: writing snapshots %s", [str(d) for d in labelled])
        population = (features_table.where(F.col("snapshot_date").isin(labelled))
                      .select("user_key", "snapshot_date"))
        table = labels(population, label_sums(daily, labelled, spec.label_window_days))
        labels_version = write_table(table, warehouse, LABELS, "replace_partitions", labelled)
    return {"snapshots": [str(d) for d in snapshots], "user_features_version": features_version,
            "snapshots_up_to_date": [str(d) for d in sorted(current & set(snapshots))],
            "labels_version": labels_version, "labels_written": [str(d) for d in labelled],
            "labels_skipped": [str(d) for d in skipped], "rows_without_user_record": no_user_record}


def _write_features(spark: SparkSession, warehouse: str, daily: DataFrame, snapshots: list[dt.date],
                    spec: FeatureSpec, metadata: dict) -> tuple[int, dict]:
    users = read_optional_table(spark, warehouse, "users")
    if users is None:
        log.warning("user_features: no users table: region, age band and days since signup are null")
    without_user = Observation("feature rows without a users record")
    before_last = daily.where(F.col("event_date") < F.lit(max(snapshots)))
    features = user_features(daily, users, snapshots, spec, distinct_devices(before_last, "last_device"),
                             without_user)
    version = write_table(features, warehouse, user_features_spec(spec), "replace_partitions",
                          snapshots, user_metadata=metadata)
    no_user_record = {d: int(n) for d, n in without_user.get.items()}
    if users is not None:
        for snapshot, n in no_user_record.items():
            if n:
                log.warning("user_features %s: %d rows have no users record valid before the "
                            "snapshot, so their user attributes (signup, region, age band) are null",
                            snapshot, n)
    return version, no_user_record
