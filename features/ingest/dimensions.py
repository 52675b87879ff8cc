"""The users and items exports -> the `users` and `items` dimension tables, with history.

Each table is a type-2 slowly changing dimension: one row per version of a key's attributes,
valid on the days valid_from <= day < valid_to (valid_to null: the current version). Where
valid_from comes from, and how a late export is handled: demandcast/settings/ingest.py
(`users_valid_from_column`). Consumers join a version per day with features.dimensions.

One MERGE commit per table applies the change set that history_changes computes: the
documented SCD2 merge (a union of rows that close the current version and rows that insert the
new one), extended with rows that delete a version a late export made redundant. The history
of a key is recomputed only for keys in the export, by joins on the key: nothing grows on the
driver.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, DoubleType, StringType, StructField, StructType

from demandcast.config import PipelineConfig
from demandcast.errors import ConfigError, StageFailed
from demandcast.logs import get_logger
from demandcast.tables import (TableSpec, commit_info, current_version, ensure_table, is_delta_table,
                               schema_differences, table_path, with_retries)
from demandcast.tables.rollback import record_job_commit, version_before_job_commit
from features.ingest import raw_reader
from features.ingest.pseudonymise import HashKey, with_user_key

log = get_logger("ingest")

VALID_FROM_COMMENT = ("first day these attribute values are known (inclusive); from the export's "
                      "valid-from field, its export_date= folder, or the ingest date")
VALID_TO_COMMENT = "the next version's valid_from (exclusive); null for the current version"
USERS = TableSpec(name="users", comment="User dimension, pseudonymised (user_key), one row per version "
                                        "of a user's attributes (type-2 history)",
                  column_comments={"user_key": "HMAC-SHA256 of the platform user id (hex)",
                                   "valid_from": VALID_FROM_COMMENT, "valid_to": VALID_TO_COMMENT},
                  properties={"delta.enableDeletionVectors": "false"})
ITEMS = TableSpec(name="items", comment="Item dimension, one row per version of an item's attributes "
                                        "(type-2 history)",
                  column_comments={"valid_from": VALID_FROM_COMMENT, "valid_to": VALID_TO_COMMENT},
                  properties={"delta.enableDeletionVectors": "false"})
HISTORY_COLUMNS = ("valid_from", "valid_to")
# The landing folder that dates an export file: .../export_date=2025-03-01/part-0.parquet.
EXPORT_DATE_FOLDER = r"(?:^|/)export_date=(\d{4}-\d{2}-\d{2})(?:/|$)"
ACTION = "_action"


@dataclass(frozen=True)
class Dimension:
    """A dimension table: its key, its attributes (name, type) and the settings that feed it."""

    spec: TableSpec
    key: str
    source_key: str
    attributes: tuple[tuple[str, str], ...]
    setting: str  # "users" or "items": ingest.<setting>_path, ingest.<setting>_valid_from_column

    @property
    def attribute_names(self) -> list[str]:
        return [name for name, _ in self.attributes]

    @property
    def columns(self) -> list[str]:
        return [self.key, *self.attribute_names, *HISTORY_COLUMNS]


USERS_DIMENSION = Dimension(USERS, "user_key", "user_id", (
    ("signup_date", "date"), ("region", "string"), ("age_band", "string"), ("gender", "string")), "users")
ITEMS_DIMENSION = Dimension(ITEMS, "item_id", "item_id", (
    ("category_id", "string"), ("brand", "string"), ("list_price", "double")), "items")


def export_versions(records: DataFrame, dim: Dimension, valid_from_column: str | None,
                    export_date: dt.date) -> DataFrame:
    """Raw export records (src, raw_record, source_file) -> one row per (source key, valid_from):
    the typed attributes and valid_from (the rule of ingest.<x>_valid_from_column). Rows without
    a key are dropped; of two rows of a key and day, the later file's (then the greater record)."""
    src = F.col("src")
    from_column = (src[valid_from_column].try_cast("date") if valid_from_column
                   else F.lit(None).cast("date"))
    from_folder = F.regexp_extract("source_file", EXPORT_DATE_FOLDER, 1).try_cast("date")
    rows = records.select(
        src[dim.source_key].alias(dim.source_key),
        *[src[name].try_cast(kind).alias(name) for name, kind in dim.attributes],
        F.coalesce(from_column, from_folder, F.lit(export_date)).alias("valid_from"),
        "raw_record", "source_file").where(F.col(dim.source_key).isNotNull())
    latest = Window.partitionBy(dim.source_key, "valid_from").orderBy(
        F.col("source_file").desc(), F.col("raw_record").desc())
    return (rows.withColumn("_n", F.row_number().over(latest)).where("_n = 1")
            .select(dim.source_key, *dim.attribute_names, "valid_from"))


def _same(columns: list[str], left, right) -> Column:
    """Null-safe equality of every column of `left` and `right` (functions of a column name)."""
    same = F.lit(True)
    for name in columns:
        same = same & left(name).eqNullSafe(right(name))
    return same


def history(versions: DataFrame, dim: Dimension) -> DataFrame:
    """Versions (key, attributes, valid_from; one row per key and valid_from) -> the key's
    history: a version equal to the one before it is dropped (its values were already known),
    and valid_to is the next version's valid_from."""
    by_day = Window.partitionBy(dim.key).orderBy("valid_from")
    repeated = F.lag("valid_from").over(by_day).isNotNull() & _same(
        dim.attribute_names, F.col, lambda name: F.lag(name).over(by_day))
    return (versions.withColumn("_repeated", repeated).where(~F.col("_repeated"))
            .withColumn("valid_to", F.lead("valid_from").over(by_day))
            .select(*dim.columns))


def history_changes(table: DataFrame, incoming: DataFrame, dim: Dimension) -> DataFrame:
    """The rows that turn `table` (the dimension's rows) into the history with the `incoming`
    versions (key, attributes, valid_from) added, each with its `_action`: insert (a new
    version), update (a version whose valid_to changes, or, for a correction, its attributes)
    or delete (a version a late export made redundant). Only keys of `incoming` are touched;
    an incoming version replaces a table version of the same key and valid_from."""
    keys = incoming.select(dim.key).distinct()
    current = table.join(keys, dim.key, "left_semi").select(*dim.columns)
    candidates = (current.drop("valid_to").withColumn("_rank", F.lit(1))
                  .unionByName(incoming.select(dim.key, *dim.attribute_names, "valid_from")
                               .withColumn("_rank", F.lit(2))))
    one_per_day = Window.partitionBy(dim.key, "valid_from").orderBy(F.col("_rank").desc())
    wanted = history(candidates.withColumn("_n", F.row_number().over(one_per_day)).where("_n = 1"), dim)
    new = wanted.withColumn("_in", F.lit(True)).alias("new")
    old = current.withColumn("_in", F.lit(True)).alias("old")
    in_new, in_old = F.col("new._in").isNotNull(), F.col("old._in").isNotNull()
    unchanged = _same([*dim.attribute_names, "valid_to"], lambda n: F.col(f"new.{n}"), lambda n: F.col(f"old.{n}"))
    action = (F.when(~in_old, F.lit("insert")).when(~in_new, F.lit("delete"))
              .when(~unchanged, F.lit("update")))

    def value(name: str) -> Column:
        return F.when(in_new, F.col(f"new.{name}")).otherwise(F.col(f"old.{name}"))

    return (new.join(old, [dim.key, "valid_from"], "full_outer")
            .select(dim.key, *[value(n).alias(n) for n in dim.attribute_names], "valid_from",
                    value("valid_to").alias("valid_to"), action.alias(ACTION))
            .where(F.col(ACTION).isNotNull()))


# --- I/O: the exports in, one MERGE per table out -------------------------------------------

_TYPES = {"string": StringType(), "date": DateType(), "double": DoubleType()}


def table_schema(dim: Dimension) -> StructType:
    """The table's columns; valid_from is NOT NULL (every version has a first day)."""
    return StructType([StructField(dim.key, StringType()),
                       *[StructField(name, _TYPES[kind]) for name, kind in dim.attributes],
                       StructField("valid_from", DateType(), nullable=False),
                       StructField("valid_to", DateType())])


def require_history_tables(spark: SparkSession, warehouse: str, dims: tuple[Dimension, ...]) -> None:
    """Every existing dimension table must have this schema, checked before any is written: a
    table from before the history columns is refused, not migrated, since the first day of its
    current values is unknown and any made-up valid_from would be a false history."""
    for dim in dims:
        path = table_path(warehouse, dim.spec.name)
        if not is_delta_table(spark, path):
            continue
        have = spark.read.format("delta").load(path).columns
        missing = [c for c in HISTORY_COLUMNS if c not in have]
        if missing:
            raise StageFailed(
                f"table '{dim.spec.name}' at {path} has no {' or '.join(missing)} column: it was written "
                "before the dimensions kept their history and holds current values only. Nothing was "
                f"written to it; move it aside (or remove it) and run ingest again, which rebuilds it "
                f"from the {dim.setting} export with valid_from from ingest.{dim.setting}_valid_from_column, "
                "the export_date= folder or the run date")
        problems = schema_differences(spark, path, dim.spec, spark.createDataFrame([], table_schema(dim)))
        if problems:
            raise StageFailed(f"table '{dim.spec.name}' at {path} does not match the {dim.setting} "
                              f"dimension: {'; '.join(problems)}. Nothing was written")


def merge_history(incoming: DataFrame, warehouse: str, dim: Dimension) -> dict:
    """Adds the `incoming` versions (key, attributes, valid_from) to the table's history in one
    MERGE on (key, valid_from) and returns the version with the rows inserted, updated and
    deleted. A change set that changes nothing commits nothing (the version stays)."""
    from delta.tables import DeltaTable

    spark = incoming.sparkSession
    before = version_before_job_commit(spark, warehouse, dim.spec)
    path = ensure_table(spark, warehouse, dim.spec, spark.createDataFrame([], table_schema(dim)))
    created = current_version(spark, path)
    updated = [*dim.attribute_names, "valid_to"]

    def _merge() -> None:
        # The change set is computed from the table inside each attempt: after a concurrent
        # commit, the retry starts from that commit's history.
        target = DeltaTable.forPath(spark, path)
        changes = history_changes(target.toDF(), incoming, dim)
        (target.alias("t").merge(changes.alias("s"),
                                 f"t.{dim.key} = s.{dim.key} AND t.valid_from = s.valid_from")
         .whenMatchedDelete(condition=f"s.{ACTION} = 'delete'")
         .whenMatchedUpdate(condition=f"s.{ACTION} = 'update'", set={c: f"s.{c}" for c in updated})
         .whenNotMatchedInsert(condition=f"s.{ACTION} = 'insert'",
                               values={c: f"s.{c}" for c in dim.columns})
         .execute())

    with_retries(_merge, f"merge {dim.spec.name} history")
    version = current_version(spark, path)
    record_job_commit(spark, dim.spec, path, before, version)
    metrics = commit_info(spark, path, version).get("metrics", {}) if version != created else {}
    counts = {what: int(metrics.get(f"numTargetRows{what.capitalize()}", 0))
              for what in ("inserted", "updated", "deleted")}
    log.info("%s history -> version %s: %s", dim.spec.name, version, counts)
    return {"version": int(version or 0), **counts}


def _export_records(spark: SparkSession, cfg: PipelineConfig, dim: Dimension) -> DataFrame | None:
    """The export's records (persisted), or None when the platform has none."""
    configured = getattr(cfg.ingest, f"{dim.setting}_path")
    path = configured or f"{cfg.raw_dir}/{dim.setting}"
    try:
        files = raw_reader.list_files(spark, [path])
    except ConfigError:
        if configured:
            raise ConfigError(f"ingest.{dim.setting}_path: {path} does not exist") from None
        files = []
    if not files:
        log.info("no %s export at %s: no %s table is created or changed (the features stage reads a "
                 "missing table as no dimension)", dim.setting, path, dim.spec.name)
        return None
    raw = raw_reader.read_records(spark, files, "parquet")
    for problem in raw.problems:
        log.warning("%s export: file problem %s %s (%s)", dim.setting, problem.reason, problem.path, problem.detail)
    return raw.records


def _log_dating(records: DataFrame, dim: Dimension, column: str | None, export_date: dt.date) -> int:
    """Logs how the export's rows are dated; returns the number of rows with a key."""
    keyed = records.where(F.col("src")[dim.source_key].isNotNull())
    dated = F.col("src")[column].try_cast("date") if column else F.lit(None)
    row = keyed.agg(F.count(F.lit(1)).alias("rows"), F.count(dated).alias("dated")).first()
    undated = f"dated by their export_date= folder or else {export_date}"
    if column and row.rows and not row.dated:
        log.warning("ingest.%s_valid_from_column %r: no row of the %s export has a date there; all %d "
                    "rows are %s", dim.setting, column, dim.setting, row.rows, undated)
    elif row.rows - row.dated:
        log.info("%s export: %d of %d rows %s", dim.setting, row.rows - row.dated, row.rows, undated)
    return int(row.rows)


def ingest_dimensions(spark: SparkSession, cfg: PipelineConfig, key: HashKey) -> dict:
    """The users and items exports -> their dimension tables' history (one MERGE each). A
    dimension without an export, or whose export has no row with a key, is skipped: no table
    is created for it."""
    s = cfg.ingest
    # A scheduled run's export is the one of the day it works for.
    export_date = s.dimensions_export_date or cfg.as_of or dt.datetime.now(dt.timezone.utc).date()
    dims = (USERS_DIMENSION, ITEMS_DIMENSION)
    require_history_tables(spark, cfg.warehouse, dims)
    result = {}
    for dim in dims:
        records = _export_records(spark, cfg, dim)
        if records is None:
            continue
        try:
            column = getattr(s, f"{dim.setting}_valid_from_column")
            if not _log_dating(records, dim, column, export_date):
                log.info("the %s export has no row with a %s: %s left as it is", dim.setting,
                         dim.source_key, dim.spec.name)
                continue
            versions = export_versions(records, dim, column, export_date)
            if dim.source_key != dim.key:
                versions = with_user_key(versions, key, source=dim.source_key, target=dim.key)
            result[dim.spec.name] = merge_history(versions, cfg.warehouse, dim)
        finally:
            records.unpersist()
    return result


__all__ = ["USERS", "ITEMS", "USERS_DIMENSION", "ITEMS_DIMENSION", "Dimension", "export_versions",
           "history", "history_changes", "merge_history", "require_history_tables", "ingest_dimensions"]
