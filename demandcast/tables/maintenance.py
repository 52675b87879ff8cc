"""Table upkeep: compaction of small files (OPTIMIZE), removal of files no kept version needs
(VACUUM), and the retention that decides which versions are kept, written into each table's
properties so every reader and Delta's own checks see the same figure.

Retention is time-based in Delta: VACUUM deletes a file once it was removed from the table
longer ago than the retention. Every file of version v is removed, if ever, by a later commit,
so keeping `now - commit time of v` hours (or more) keeps all of v's files. Time travel to v
also needs its log entries: the log retention is never shorter than the file retention.

Every commit made here (OPTIMIZE, a property change) leaves the table's rows as they were, so
a failure midway leaves each table at a good version and nothing is rolled back; VACUUM makes
no data commit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from demandcast.logs import get_logger
from demandcast.tables.specs import is_delta_table

log = get_logger("tables")

FILE_RETENTION = "delta.deletedFileRetentionDuration"
LOG_RETENTION = "delta.logRetentionDuration"


@dataclass(frozen=True)
class Pin:
    """A version of a table that something still reads, and what (for the log)."""

    version: int
    reason: str


@dataclass(frozen=True)
class Retention:
    hours: int            # removed files younger than this stay
    log_hours: int        # log entries younger than this stay
    why: str


def commit_time(spark: SparkSession, path: str, version: int) -> float | None:
    """When `version` of the table was committed, in epoch seconds; None when the log no longer
    holds it (then it cannot be read any more anyway)."""
    from delta.tables import DeltaTable

    row = (DeltaTable.forPath(spark, path).history()
           .where(F.col("version") == int(version))
           .select(F.col("timestamp").cast("double")).first())
    return None if row is None else float(row[0])


def retention_for(min_hours: float, min_log_hours: float, pinned: Mapping[Pin, float | None],
                  now: float, margin_hours: float) -> Retention:
    """The retention that keeps every pinned version (given with its commit time) readable,
    never below `min_hours`; the log's never below the files' nor `min_log_hours`. Whole hours,
    rounded up: Delta's VACUUM rounds the retention it is given to whole hours."""
    hours, why = math.ceil(min_hours), f"the configured minimum of {min_hours:g} h"
    known = {pin: at for pin, at in pinned.items() if at is not None}
    if known:
        oldest = min(known, key=lambda pin: known[pin])
        age = max(0.0, now - known[oldest]) / 3600
        needed = math.ceil(age + margin_hours)
        if needed > hours:
            hours = needed
            why = (f"version {oldest.version} ({oldest.reason}) was committed {age:.2f} h ago "
                   f"(+{margin_hours:g} h margin, in whole hours)")
        else:
            why += f", which covers the oldest pinned version {oldest.version} ({oldest.reason})"
    return Retention(hours, max(hours, math.ceil(min_log_hours)), why)


def interval(hours: int) -> str:
    """A Delta interval property."""
    return f"interval {int(hours)} hours"


def set_retention(spark: SparkSession, path: str, retention: Retention) -> bool:
    """Writes the retention into the table's properties; no commit when they already say so."""
    from delta.tables import DeltaTable

    wanted = {FILE_RETENTION: interval(retention.hours), LOG_RETENTION: interval(retention.log_hours)}
    properties = DeltaTable.forPath(spark, path).detail().select("properties").first()[0] or {}
    if all(properties.get(k) == v for k, v in wanted.items()):
        return False
    settings = ", ".join(f"'{k}' = '{v}'" for k, v in wanted.items())
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({settings})")
    return True


def file_count(spark: SparkSession, path: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).detail().select("numFiles").first()[0])


def optimize(spark: SparkSession, path: str) -> dict:
    """Bin-packs the table's small files (OPTIMIZE); files already large enough stay, so a
    weekly run rewrites roughly the week's new partitions."""
    from delta.tables import DeltaTable

    metrics = DeltaTable.forPath(spark, path).optimize().executeCompaction().first()["metrics"]
    return {"files_added": int(metrics["numFilesAdded"]), "files_removed": int(metrics["numFilesRemoved"])}


def vacuum(spark: SparkSession, path: str, hours: float) -> None:
    from delta.tables import DeltaTable

    DeltaTable.forPath(spark, path).vacuum(hours)


def maintain_table(spark: SparkSession, name: str, path: str, compact: bool, clean: bool,
                   min_hours: float, min_log_hours: float, pins: Iterable[Pin], now: float,
                   margin_hours: float) -> dict:
    """One table's upkeep: retention properties, then OPTIMIZE, then VACUUM; what was done."""
    if not is_delta_table(spark, path):
        return {"table": name, "skipped": "no such table"}
    pinned = {pin: commit_time(spark, path, pin.version) for pin in pins}
    for pin, at in pinned.items():
        if at is None:
            log.warning("%s version %s (%s) is no longer in the table's log: it cannot be read and "
                        "keeps nothing", name, pin.version, pin.reason)
    retention = retention_for(min_hours, min_log_hours, pinned, now, margin_hours)
    report: dict = {"table": name, "retention_hours": retention.hours,
                    "log_retention_hours": retention.log_hours, "why": retention.why,
                    "pinned_versions": sorted({p.version for p in pinned}),
                    "files_before": file_count(spark, path)}
    report["properties_changed"] = set_retention(spark, path, retention)
    if compact:
        report.update(optimize(spark, path))
    if clean:
        vacuum(spark, path, retention.hours)
    report["files_after"] = file_count(spark, path)
    log.info("%s: kept removed files for %d h and the log for %d h because %s; files %d -> %d%s",
             name, retention.hours, retention.log_hours, retention.why, report["files_before"],
             report["files_after"], ", vacuumed" if clean else "")
    return report
