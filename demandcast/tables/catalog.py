"""The warehouse's tables in the session's catalog: `<database>.<table>` names for SQL users.

The tables stay path-based Delta tables (every stage reads and writes them by path); the catalog
entry is an external table pointing at the path, so registering changes no data and dropping
the entry never deletes any. Which metastore the session uses (Hive, Glue, Unity) is the
platform's Spark configuration.
"""
from __future__ import annotations

from pyspark.sql import SparkSession

from demandcast.logs import get_logger
from demandcast.tables.specs import TABLE_NAMES, is_delta_table, table_path

log = get_logger("tables")


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def registered_location(spark: SparkSession, database: str, name: str) -> str | None:
    """Where the catalog's `database.name` points; None when it is not registered."""
    if not spark.catalog.tableExists(f"{database}.{name}"):
        return None
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {database}.{name}").collect()
    return next((r.data_type for r in rows if r.col_name == "Location"), None)


def register_tables(spark: SparkSession, warehouse: str, database: str) -> list[str]:
    """Registers every pipeline table that exists under `warehouse` as `database.<table>` and
    returns the names registered now. Safe to repeat: a registered name is left alone, and
    one pointing elsewhere (another warehouse using the same database) is named in a warning,
    not moved: a catalog entry other readers rely on is changed by hand, not by a batch job."""
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {database}")
    added = []
    for name in TABLE_NAMES:
        path = table_path(warehouse, name)
        if not is_delta_table(spark, path):
            continue
        location = registered_location(spark, database, name)
        if location is None:
            spark.sql(f"CREATE TABLE IF NOT EXISTS {database}.{name} USING DELTA "
                      f"LOCATION {_sql_string(path)}")
            added.append(name)
        elif location.rstrip("/").removeprefix("file:") != path.rstrip("/").removeprefix("file:"):
            log.warning("catalog table %s.%s points at %s, not at %s: left as it is", database,
                        name, location, path)
    if added:
        log.info("registered in catalog database %s: %s", database, ", ".join(added))
    return added
