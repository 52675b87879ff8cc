"""What a table's Delta history says: versions, commit times, commit metrics, the files of a
version, and the metadata a job attached to its own commits. All through DeltaTable's public
history and Spark's Delta reader."""
from __future__ import annotations

import json

from pyspark.sql import SparkSession
from pyspark.sql import functions as F


def _latest_commit(spark: SparkSession, path: str):
    """The table's latest commit (version, timestamp as epoch seconds); None when there is no table."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return None
    return (DeltaTable.forPath(spark, path).history(1)
            .select("version", F.col("timestamp").cast("double").alias("timestamp")).first())


def current_version(spark: SparkSession, path: str) -> int | None:
    commit = _latest_commit(spark, path)
    return None if commit is None else int(commit.version)


def last_commit_time(spark: SparkSession, path: str) -> float | None:
    """When the table's latest commit was made, in epoch seconds; None when there is no table."""
    commit = _latest_commit(spark, path)
    return None if commit is None else float(commit.timestamp)


def commit_info(spark: SparkSession, path: str, version: int) -> dict:
    """The operation metrics Delta recorded for one commit (rows written, files added...)."""
    from delta.tables import DeltaTable

    row = (DeltaTable.forPath(spark, path).history()
           .where(f"version = {int(version)}").select("operation", "operationMetrics").first())
    return {"operation": row[0], "metrics": dict(row[1] or {})} if row else {}


def files_of_version(spark: SparkSession, path: str, version: int) -> list[str]:
    """Absolute data-file URIs of one table version, read from the Delta log (never a listing)."""
    df = spark.read.format("delta").option("versionAsOf", int(version)).load(path)
    return sorted(df.inputFiles())


def effective_commit_metadata(spark: SparkSession, path: str) -> list[tuple[int, dict]]:
    """(version, JSON user metadata) of the commits behind the table's current content, newest
    first; [] when there is no table.

    Commits without metadata (OPTIMIZE, VACUUM) are passed over; a RESTORE sends the search to
    the version it restored, so a rolled-back write's metadata is never taken for the table's.
    """
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return []
    commits = (DeltaTable.forPath(spark, path).history()
               .select("version", "operation", "operationParameters", "userMetadata")
               .orderBy(F.col("version").desc()).collect())
    found = []
    limit = None  # versions above it were undone by a RESTORE
    for commit in commits:
        if limit is not None and commit.version > limit:
            continue
        if commit.operation == "RESTORE":
            limit = int((commit.operationParameters or {}).get("version", -1))
            continue
        if commit.userMetadata:
            try:
                metadata = json.loads(commit.userMetadata)
            except ValueError:
                continue
            if isinstance(metadata, dict):
                found.append((int(commit.version), metadata))
    return found


def metadata_of_current_state(spark: SparkSession, path: str, key: str) -> object | None:
    """The value under `key` of the JSON user metadata (DataFrameWriter option `userMetadata`)
    of the newest commit behind the table's current content that has one; None when none has."""
    for _, metadata in effective_commit_metadata(spark, path):
        if metadata.get(key) is not None:
            return metadata[key]
    return None
