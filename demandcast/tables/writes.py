"""The one place that writes Delta tables.

Writes go through `write_table` / `merge_table`, which apply the table's partitioning, comments
and properties the same way for every stage, retry the commit when Delta reports a
concurrent-write conflict, explain a schema mismatch in one line, and record the commit for the
job's rollback. Only Delta's public API: DataFrameWriter (replaceWhere) and DeltaTable.
"""
from __future__ import annotations

import json
import time
from typing import Callable, Literal, Mapping, Sequence, TypeVar

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructField, StructType

from demandcast.errors import StageFailed
from demandcast.logs import get_logger
from demandcast.tables.history import current_version
from demandcast.tables.rollback import record_job_commit, version_before_job_commit
from demandcast.tables.specs import TableSpec, is_delta_table, table_path

log = get_logger("tables")

T = TypeVar("T")


def with_retries(action: Callable[[], T], what: str, attempts: int = 5,
                 also_retry: tuple[str, ...] = ()) -> T:
    """Runs a Delta commit again when another writer committed first (optimistic concurrency)."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:  # Delta's conflict errors arrive as Py4J/Spark exceptions
            retriable = "Concurrent" in type(exc).__name__ or "ConcurrentAppend" in str(exc) \
                or "ConcurrentWrite" in str(exc) or "ProtocolChanged" in str(exc) \
                or "MetadataChanged" in str(exc) or "DELTA_CONCURRENT" in str(exc) \
                or any(marker in str(exc) for marker in also_retry)
            if not retriable or attempt == attempts:
                raise
            wait = 0.5 * 2 ** (attempt - 1)
            log.warning("%s: concurrent Delta commit, retry %d/%d in %.1f s", what, attempt,
                        attempts - 1, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _sql_literal(value: object) -> str:
    text = str(value)
    if "'" in text or "\\" in text:
        raise ValueError(f"refusing to build a predicate from {text!r}")
    return f"'{text}'"


def partition_predicate(column: str, values: Sequence[object]) -> str:
    """A replaceWhere predicate `column IN (...)` built from checked literals."""
    if not column.isidentifier():
        raise ValueError(f"not a column name: {column!r}")
    if not values:
        raise ValueError("a replaceWhere needs at least one partition value")
    return f"{column} IN ({', '.join(_sql_literal(v) for v in values)})"


def replace_predicate(
    spec: TableSpec,
    replace_values: Sequence[object],
    replace_where: Mapping[str, Sequence[object]] | None,
) -> str:
    """The replaceWhere of a partition replace: the first partition column's values, or the
    ANDed values of several partition columns (each must partition the table)."""
    if not replace_where:
        return partition_predicate(spec.partition_by[0], replace_values)
    if replace_values:
        raise ValueError("give replace_values or replace_where, not both")
    not_partitions = set(replace_where) - set(spec.partition_by)
    if not_partitions:
        raise ValueError(f"table {spec.name}: replace_where on non-partition columns "
                         f"{sorted(not_partitions)}; partitions are {list(spec.partition_by)}")
    return " AND ".join(partition_predicate(c, v) for c, v in replace_where.items())


def ensure_table(spark: SparkSession, warehouse: str, spec: TableSpec, df: DataFrame) -> str:
    """Creates the table from its spec (schema, partitioning, comment, properties) if missing."""
    from delta.tables import DeltaTable

    path = table_path(warehouse, spec.name)
    builder = (DeltaTable.createIfNotExists(spark).location(path)
               .addColumns(documented_schema(df.schema, spec)).comment(spec.comment))
    if spec.partition_by:
        builder = builder.partitionedBy(*spec.partition_by)
    for key, value in spec.properties.items():
        builder = builder.property(key, value)
    # Two jobs creating the same table race: one may see the other's folder before its first
    # commit ("not empty and not a Delta table"), or its empty _delta_log ("table not found"),
    # or lose the put of version 0; all settle once version 0 lands.
    try:
        with_retries(builder.execute, f"create {spec.name}",
                     also_retry=("DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION", "FileAlreadyExists",
                                 "DELTA_TABLE_NOT_FOUND"))
    except Exception as exc:
        if "DELTA_TABLE_NOT_FOUND" not in str(exc):
            raise
        raise StageFailed(
            f"table '{spec.name}' at {path} has a _delta_log without any commit: another job is "
            f"creating it, or a job died while creating it; if no job is running, remove "
            f"{path} and run again") from exc
    return path


def documented_schema(schema: StructType, spec: TableSpec) -> StructType:
    """`schema` with the spec's column comments in the fields' metadata, as Delta stores them."""
    unknown = set(spec.column_comments) - set(schema.names)
    if unknown:
        raise ValueError(f"table {spec.name}: comments for missing columns {sorted(unknown)}")
    return StructType([
        StructField(f.name, f.dataType, f.nullable, {**f.metadata, "comment": spec.column_comments[f.name]})
        if f.name in spec.column_comments else f
        for f in schema.fields])


def documented(df: DataFrame, spec: TableSpec) -> DataFrame:
    """Attaches column comments as schema metadata, which Delta stores and SQL DESCRIBE shows."""
    from pyspark.sql import functions as F

    # df.schema asks the JVM every time: once, not per column (a hundred feature columns).
    fields = documented_schema(df.schema, spec).fields
    return df.select(*[F.col(f.name).alias(f.name, metadata=f.metadata) for f in fields])


def schema_differences(spark: SparkSession, path: str, spec: TableSpec, df: DataFrame) -> list[str]:
    """How the existing table at `path` differs from what `df` would write into it (column names,
    types ignoring nullability and comments, partitioning); empty when they agree."""
    from delta.tables import DeltaTable

    table = spark.read.format("delta").load(path)
    existing = {f.name: f.dataType.simpleString() for f in table.schema.fields}
    written = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    problems = [f"column '{c}' is {existing[c]} in the table, {t} in this write"
                for c, t in written.items() if c in existing and existing[c] != t]
    new = [c for c in written if c not in existing]
    if new:
        problems.append(f"columns not in the table: {new}")
    partitions = list(DeltaTable.forPath(spark, path).detail().select("partitionColumns").first()[0])
    if spec.partition_by and partitions != list(spec.partition_by):
        problems.append(f"partitioned by {partitions}, this job writes {list(spec.partition_by)}")
    return problems


def _schema_guard(action: Callable[[], T], spark: SparkSession, path: str, spec: TableSpec,
                  df: DataFrame) -> T:
    """Runs a write; when Delta refuses it and the table's schema explains why (the table was
    written by another version of the job, or by hand), one line saying how they differ replaces
    Delta's page-long AnalysisException. Nothing was committed: the table is at its last version."""
    from pyspark.errors import AnalysisException

    try:
        return action()
    except AnalysisException:
        try:
            problems = schema_differences(spark, path, spec, df)
        except Exception:  # cannot explain it: Delta's own error is the best message
            problems = []
        if not problems:
            raise
        raise _mismatch(spec, path, problems) from None


def _mismatch(spec: TableSpec, path: str, problems: list[str]) -> StageFailed:
    return StageFailed(
        f"table '{spec.name}' at {path} does not match this write: {'; '.join(problems)}. "
        "Nothing was written; the table was made by another version of the job or by hand: "
        "migrate it, or move it aside and run again")


def require_same_schema(warehouse: str, writes: Sequence[tuple[TableSpec, DataFrame]]) -> None:
    """Before a job publishes several tables one commit after the other: every existing table
    must take its write, so that a mismatch in the second cannot leave the first published."""
    for spec, df in writes:
        path = table_path(warehouse, spec.name)
        if is_delta_table(df.sparkSession, path):
            problems = schema_differences(df.sparkSession, path, spec, df)
            if problems:
                raise _mismatch(spec, path, problems)


WriteMode = Literal["overwrite", "append", "replace_partitions"]


def write_table(
    df: DataFrame,
    warehouse: str,
    spec: TableSpec,
    mode: WriteMode,
    replace_values: Sequence[object] = (),
    replace_where: Mapping[str, Sequence[object]] | None = None,
    user_metadata: Mapping[str, object] | None = None,
) -> int:
    """Writes `df` to the table in one Delta commit and returns the new table version.

    - overwrite: the table's content becomes `df` (schema may change).
    - append: rows added (callers deduplicate first).
    - replace_partitions: rows whose first partition column is in `replace_values` are
      replaced by `df` atomically (replaceWhere), which makes per-snapshot reruns idempotent.
      `replace_where` instead names values for several partition columns (ANDed), e.g. one
      (snapshot, model version) pair, so other partitions sharing the snapshot are kept.
    `user_metadata` is stored as JSON with the commit (history's userMetadata), in the same
    atomic commit as the rows: what the job's next run needs to know about this one
    (history.metadata_of_current_state).
    A failed write leaves the table at its last good version: Delta commits all or nothing.
    """
    spark = df.sparkSession
    before = version_before_job_commit(spark, warehouse, spec)
    path = ensure_table(spark, warehouse, spec, df)
    writer = documented(df, spec).write.format("delta")
    if user_metadata:
        writer = writer.option("userMetadata", json.dumps(dict(user_metadata), sort_keys=True, default=str))
    if spec.partition_by:
        writer = writer.partitionBy(*spec.partition_by)
    if mode == "overwrite":
        writer = writer.mode("overwrite").option("overwriteSchema", "true")
    elif mode == "append":
        writer = writer.mode("append")
    elif mode == "replace_partitions":
        if not spec.partition_by:
            raise ValueError(f"table {spec.name} has no partitions to replace")
        writer = writer.mode("overwrite").option(
            "replaceWhere", replace_predicate(spec, replace_values, replace_where))
    else:
        raise ValueError(f"unknown write mode {mode!r}")
    _schema_guard(lambda: with_retries(lambda: writer.save(path), f"write {spec.name}"),
                  spark, path, spec, df)
    version = current_version(spark, path)
    log.info("wrote table %s (%s) -> version %s", spec.name, mode, version)
    record_job_commit(spark, spec, path, before, version)
    return int(version or 0)


def merge_table(
    df: DataFrame,
    warehouse: str,
    spec: TableSpec,
    keys: Sequence[str],
    update_matched: bool,
    partition_values: Sequence[object] = (),
) -> int:
    """MERGE `df` into the table on `keys` in one commit and return the new version.

    update_matched=False makes the merge insert-only (exactly-once appends: a row whose keys
    exist is left as it is). `partition_values` limits the target scan to those values of the
    first partition column, so a merge touches only the affected partitions.
    """
    from delta.tables import DeltaTable

    spark = df.sparkSession
    before = version_before_job_commit(spark, warehouse, spec)
    path = ensure_table(spark, warehouse, spec, df)
    for key in keys:
        if not key.isidentifier():
            raise ValueError(f"not a column name: {key!r}")
    condition = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    if partition_values and spec.partition_by:
        condition += " AND t." + partition_predicate(spec.partition_by[0], partition_values)
    source = documented(df, spec)

    def _merge() -> None:
        merge = DeltaTable.forPath(spark, path).alias("t").merge(source.alias("s"), condition)
        if update_matched:
            merge = merge.whenMatchedUpdateAll()
        merge.whenNotMatchedInsertAll().execute()

    _schema_guard(lambda: with_retries(_merge, f"merge {spec.name}"), spark, path, spec, df)
    version = current_version(spark, path)
    log.info("merged into table %s on %s -> version %s", spec.name, list(keys), version)
    record_job_commit(spark, spec, path, before, version)
    return int(version or 0)


