"""Table names, paths and the one place that writes Delta tables.

Every table is a path-based Delta table under the warehouse root. Writes go through
`write_table` / `merge_table`, which apply the table's partitioning, comments and properties the
same way for every stage, and retry the commit when Delta reports a concurrent-write conflict.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, Mapping, Sequence, TypeVar
from urllib.parse import unquote, urlparse

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType

from demandcast.errors import ConfigError, StageFailed
from demandcast.logs import get_logger

log = get_logger("tables")

TABLE_NAMES = (
    "events", "quarantine", "user_daily", "user_features", "labels",
    "predictions", "category_demand", "models",
    # Beyond the eight of the design: the two dimensions ingest pseudonymises, and the
    # materialised training set whose pinned version training reads (README "Tables").
    "users", "items", "training_set",
    # Written only by deploy/cluster_probe.py, the smoke test of a cluster's packaging.
    "cluster_check",
)

# Tables petastorm reads file by file: deletion vectors must stay off (README "Traps").
NO_DELETION_VECTORS = {"delta.enableDeletionVectors": "false"}

T = TypeVar("T")


@dataclass(frozen=True)
class TableSpec:
    """What a table is: its name, partitioning, documentation and Delta properties."""

    name: str
    comment: str
    partition_by: tuple[str, ...] = ()
    column_comments: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in TABLE_NAMES:
            raise ValueError(f"unknown table {self.name!r}; tables are {TABLE_NAMES}")


def table_path(warehouse: str, name: str) -> str:
    """The location of table `name` under the warehouse root (a folder or a URI)."""
    if name not in TABLE_NAMES:
        raise ConfigError(f"unknown table {name!r}; tables are {', '.join(TABLE_NAMES)}")
    return f"{absolute_uri(warehouse)}/{name}"


def absolute_uri(location: str) -> str:
    """A URI stays as it is; a local path becomes absolute (Spark and petastorm agree on it)."""
    if urlparse(location).scheme and len(urlparse(location).scheme) > 1:
        return location.rstrip("/")
    return str(Path(location).resolve())


def qualified_location(spark: SparkSession, path: str) -> str:
    """`path` as Hadoop qualifies it (file:/a/b, hdfs://host/a/b), as the Delta log's dataPath
    prints a table's location; the table need not exist."""
    location = spark._jvm.org.apache.hadoop.fs.Path(path)
    return str(location.getFileSystem(spark._jsc.hadoopConfiguration()).makeQualified(location).toString())


def is_delta_table(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def require_some_table(spark: SparkSession, warehouse: str) -> None:
    """A warehouse holding none of the pipeline's tables is a mistyped path, not an empty run."""
    if not any(is_delta_table(spark, table_path(warehouse, name)) for name in TABLE_NAMES):
        raise ConfigError(f"warehouse {absolute_uri(warehouse)} holds none of the pipeline's tables "
                          f"({', '.join(TABLE_NAMES)}): check the `warehouse` setting")


def read_table(spark: SparkSession, warehouse: str, name: str, version: int | None = None) -> DataFrame:
    path = table_path(warehouse, name)
    if not is_delta_table(spark, path):
        raise StageFailed(f"table '{name}' does not exist at {path}; run the stage that writes it first")
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


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


# --- a failed job leaves its tables at their last good version ------------------------------

@dataclass(frozen=True)
class TableWrite:
    """One commit a job made: the table's version before the job touched it (None: the job
    created the table) and the version the commit produced."""

    spark: SparkSession
    name: str
    path: str
    before: int | None
    after: int | None


# The commits of the job running in this context; None outside `rolled_back_on_failure`.
_JOB_WRITES: ContextVar[list[TableWrite] | None] = ContextVar("demandcast_job_writes", default=None)


def tables_to_restore(writes: Sequence[TableWrite]) -> list[TableWrite]:
    """Per table, its version before the job's first commit to it and after its last one, in
    the reverse order of the first commits; a table the job did not change (a merge that
    inserted nothing commits nothing) drops out."""
    first: dict[str, TableWrite] = {}
    last: dict[str, TableWrite] = {}
    for write in writes:  # by path: the same name in two warehouses is two tables
        first.setdefault(write.path, write)
        last[write.path] = write
    spans = [TableWrite(w.spark, w.name, path, first[path].before, w.after) for path, w in last.items()]
    return [w for w in reversed(spans) if w.after != w.before]


def _remove_table(spark: SparkSession, path: str) -> None:
    jvm = spark._jvm
    folder = jvm.org.apache.hadoop.fs.Path(path)
    folder.getFileSystem(spark._jsc.hadoopConfiguration()).delete(folder, True)
    # The session caches each table's log: a later create at the same path must not see it.
    jvm.org.apache.spark.sql.delta.DeltaLog.invalidateCache(spark._jsparkSession, folder)


def restore_table(write: TableWrite) -> str:
    """Puts one table back to its version before the job and says what was done.

    Only when the table is still at the version the job left: a later commit is another job's,
    whose version is good, and stays. So running it again changes nothing.
    """
    from delta.tables import DeltaTable

    current = current_version(write.spark, write.path)
    if current == write.before:
        return f"table {write.name} is at version {current}, as before the job: nothing to undo"
    if current != write.after:
        return (f"table {write.name} is at version {current}, not the version {write.after} this job "
                "wrote: another job committed since, left as it is")
    if write.before is None:
        _remove_table(write.spark, write.path)
        return f"table {write.name} removed: this job had created it (version {write.after})"
    DeltaTable.forPath(write.spark, write.path).restoreToVersion(write.before)
    return (f"table {write.name} restored to version {write.before} (this job had written version "
            f"{write.after}, kept in the history)")


@contextlib.contextmanager
def rolled_back_on_failure(job: str) -> Iterator[None]:
    """Runs a job so that, when it fails, every table it committed to goes back to its version
    before the job (RESTORE, or removal of a table it created), then the job's own error is
    raised unchanged. Delta makes each commit all or nothing; this makes the job so too, e.g.
    train's training_set version when training fails after writing it.

    Scopes nest: a job run inside another (run-all's stages) undoes only its own commits.
    """
    writes: list[TableWrite] = []
    token = _JOB_WRITES.set(writes)
    try:
        yield
    except BaseException as exc:
        for write in tables_to_restore(writes):
            try:
                log.warning("%s failed (%s): %s", job, type(exc).__name__, restore_table(write))
            except Exception as undo_error:  # the job's own error is the one to report
                log.error("%s failed (%s) and table %s could not be put back to version %s: %s",
                          job, type(exc).__name__, write.name, write.before, undo_error)
        raise
    finally:
        _JOB_WRITES.reset(token)


def schema_differences(spark: SparkSession, path: str, spec: TableSpec, df: DataFrame) -> list[str]:
    """How the existing table at `path` differs from what `df` would write into it (column names,
    types ignoring nullability and comments, partitioning); empty when they agree."""
    # From the log's current snapshot: DeltaTable.detail() would run a Spark job for the same.
    _, snapshot = _current_snapshot(spark, path)
    existing = {f.name: f.dataType.simpleString() for f in _table_schema(snapshot).fields}
    written = {f.name: f.dataType.simpleString() for f in df.schema.fields}
    problems = [f"column '{c}' is {existing[c]} in the table, {t} in this write"
                for c, t in written.items() if c in existing and existing[c] != t]
    new = [c for c in written if c not in existing]
    if new:
        problems.append(f"columns not in the table: {new}")
    partitions = list(spark._jvm.scala.jdk.javaapi.CollectionConverters.asJava(
        snapshot.metadata().partitionColumns()))
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


def _version_before_job_commit(spark: SparkSession, warehouse: str, spec: TableSpec) -> int | None:
    """The table's version before a commit, read only inside `rolled_back_on_failure`."""
    if _JOB_WRITES.get() is None:
        return None
    return current_version(spark, table_path(warehouse, spec.name))


def _record_job_commit(spark: SparkSession, spec: TableSpec, path: str, before: int | None,
                       after: int | None) -> None:
    """Inside a job, notes the commit so that a later failure of the job undoes it."""
    writes = _JOB_WRITES.get()
    if writes is not None:
        writes.append(TableWrite(spark, spec.name, path, before, after))


WriteMode = Literal["overwrite", "append", "replace_partitions"]


def write_table(
    df: DataFrame,
    warehouse: str,
    spec: TableSpec,
    mode: WriteMode,
    replace_values: Sequence[object] = (),
    replace_where: Mapping[str, Sequence[object]] | None = None,
) -> int:
    """Writes `df` to the table in one Delta commit and returns the new table version.

    - overwrite: the table's content becomes `df` (schema may change).
    - append: rows added (callers deduplicate first).
    - replace_partitions: rows whose first partition column is in `replace_values` are
      replaced by `df` atomically (replaceWhere), which makes per-snapshot reruns idempotent.
      `replace_where` instead names values for several partition columns (ANDed), e.g. one
      (snapshot, model version) pair, so other partitions sharing the snapshot are kept.
    A failed write leaves the table at its last good version: Delta commits all or nothing.
    """
    spark = df.sparkSession
    before = _version_before_job_commit(spark, warehouse, spec)
    path = ensure_table(spark, warehouse, spec, df)
    writer = documented(df, spec).write.format("delta")
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
    _record_job_commit(spark, spec, path, before, version)
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
    before = _version_before_job_commit(spark, warehouse, spec)
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
    _record_job_commit(spark, spec, path, before, version)
    return int(version or 0)


# Table features under which a Parquet file written outside Spark, committed as it is, holds
# exactly the table's rows: any other (generated or identity columns, column mapping, change
# data feed, Iceberg compatibility...) needs Spark's writer to compute or record something per
# row. appendOnly and check constraints are allowed as features but checked as settings below.
FILE_COMMIT_FEATURES = frozenset({
    "appendOnly", "invariants", "checkConstraints", "deletionVectors", "timestampNtz",
    "domainMetadata", "v2Checkpoint", "vacuumProtocolCheck", "inCommitTimestamp",
    "checkpointProtection"})


class FileCommitRefused(StageFailed):
    """The table needs Spark's writer (file_commit_refusal); nothing was written or committed."""


def _table_schema(snapshot):
    """The pyspark StructType of a Delta snapshot's metadata."""
    return StructType.fromJson(json.loads(snapshot.metadata().schemaString()))


def file_commit_refusal(spark: SparkSession, path: str) -> str:
    """Why Parquet files written outside Spark may not be committed to the Delta table at `path`
    as they are ("" when they may, or when there is no table yet): Spark's writer would rename
    columns, enforce constraints or invariants, or compute per-row values. NOT NULL columns do
    not refuse: the writers check them (replace_partitions_with_files passes them on)."""
    if not is_delta_table(spark, path):
        return ""
    _, snapshot = _current_snapshot(spark, path)
    metadata, protocol = snapshot.metadata(), snapshot.protocol()
    converters = spark._jvm.scala.jdk.javaapi.CollectionConverters
    features = {f.name() for f in converters.asJava(protocol.implicitlyAndExplicitlySupportedFeatures())}
    unsupported = sorted(features - FILE_COMMIT_FEATURES)
    if unsupported:
        return f"table features {unsupported} need Spark's writer"
    configuration = dict(converters.asJava(metadata.configuration()))
    if configuration.get("delta.appendOnly", "false").lower() == "true":
        return "the table is append-only (delta.appendOnly)"
    constraints = sorted(k for k in configuration if k.startswith("delta.constraints."))
    if constraints:
        return f"CHECK constraints {constraints} are enforced by Spark's writer"
    invariants = [f.name for f in _table_schema(snapshot).fields if "delta.invariants" in f.metadata]
    if invariants:
        return f"columns {invariants} carry invariants that Spark's writer enforces"
    return ""


def replace_partitions_with_files(spark: SparkSession, warehouse: str, spec: TableSpec,
                                  schema: DataFrame,
                                  write_files: Callable[[str, Sequence[str]], Sequence[str]],
                                  replace_values: Sequence[object]) -> int:
    """Replaces the table's files in the partitions `replace_values` of its first partition
    column by files written outside Spark, in one commit, and returns the new version: what
    `write_table(..., "replace_partitions", replace_values)` does with a DataFrame.

    `write_files(location, not_null)` writes the new data files under the table's location (a
    URI), failing on a null in a column of `not_null` (the table's NOT NULL columns), and
    returns their Delta add actions as JSON (see features.table_files); `schema` (a DataFrame,
    empty will do) gives the columns when the table is created first. Raises FileCommitRefused,
    before writing anything, when the table needs Spark's writer (file_commit_refusal).
    Delta's public API has no commit of ready files, so this uses its transaction API
    (DeltaLog, OptimisticTransaction, Action.fromJson), as `partition_files` reads its snapshot:
    pinned with delta-spark (README "Versions"). A failure before the commit leaves the new
    files unreferenced (VACUUM removes them) and the table at its last version.
    """
    if not spec.partition_by:
        raise ValueError(f"table {spec.name} has no partitions to replace")
    before = _version_before_job_commit(spark, warehouse, spec)
    path = ensure_table(spark, warehouse, spec, schema)
    problems = schema_differences(spark, path, spec, schema)
    if problems:
        raise _mismatch(spec, path, problems)
    refusal = file_commit_refusal(spark, path)
    if refusal:
        raise FileCommitRefused(f"table '{spec.name}' at {path} cannot take files written outside "
                                f"Spark: {refusal}; nothing was committed")
    _, snapshot = _current_snapshot(spark, path)
    not_null = [f.name for f in _table_schema(snapshot).fields if not f.nullable]
    added = write_files(qualified_location(spark, path), not_null)
    column = spec.partition_by[0]
    replaced = {str(v) for v in replace_values}
    jvm = spark._jvm
    converters = jvm.scala.jdk.javaapi.CollectionConverters
    delta = jvm.org.apache.spark.sql.delta

    def commit() -> int:
        txn = delta.DeltaLog.forTable(spark._jsparkSession, path).startTransaction()
        actions = [f.remove() for f in converters.asJava(txn.filterFiles())
                   if converters.asJava(f.partitionValues()).get(column) in replaced]
        removed = len(actions)
        actions += [delta.actions.Action.fromJson(a) for a in added]
        operation = getattr(delta, "DeltaOperations$Write")(
            jvm.org.apache.spark.sql.SaveMode.Overwrite,
            jvm.scala.Option.apply(converters.asScala(list(spec.partition_by)).toSeq()),
            jvm.scala.Option.apply(replace_predicate(spec, replace_values, None)),
            jvm.scala.Option.empty())
        version = txn.commit(converters.asScala(actions).toSeq(), operation)
        log.info("committed %d files written outside Spark to table %s in place of %d -> version %d",
                 len(added), spec.name, removed, version)
        return int(version)

    version = with_retries(commit, f"commit files to {spec.name}")
    _record_job_commit(spark, spec, path, before, version)
    return version


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


def _current_snapshot(spark: SparkSession, path: str):
    """(DeltaLog, current Snapshot) of the Delta table at `path`, JVM objects."""
    jvm = spark._jvm
    delta_log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
    return delta_log, delta_log.update(False, jvm.scala.Option.empty(), jvm.scala.Option.empty())


def _partition_value_parser(table: DataFrame, column: str) -> Callable[[str | None], object]:
    """The log keeps partition values as text; a date column's become datetime.date."""
    from pyspark.sql.types import DateType

    if isinstance(table.schema[column].dataType, DateType):
        return lambda v: v if v is None else dt.date.fromisoformat(v)
    return lambda v: v


def partition_record_counts(spark: SparkSession, path: str, column: str) -> dict:
    """Rows per value of partition `column` in the current version of the Delta table at `path`,
    from the `numRecords` statistics of the log's add actions (less rows hidden by deletion
    vectors): no data file is read. Values whose files carry no statistics are counted by a
    scan of those partitions only.
    """
    _, snapshot = _current_snapshot(spark, path)
    added = DataFrame(snapshot.allFiles().toDF(), spark)
    rows = (added.select(F.col("partitionValues")[column].alias("value"),
                         (F.get_json_object("stats", "$.numRecords").cast("long")
                          - F.coalesce(F.col("deletionVector.cardinality"), F.lit(0))).alias("n"))
            .groupBy("value").agg(F.sum("n").alias("n"),
                                  F.count(F.when(F.col("n").isNull(), 1)).alias("no_stats"))
            .collect())
    table = spark.read.format("delta").load(path)
    as_value = _partition_value_parser(table, column)
    counts = {as_value(r["value"]): r["n"] for r in rows if r["no_stats"] == 0}
    unknown = [as_value(r["value"]) for r in rows if r["no_stats"] > 0]
    if unknown:
        log.info("%s: %d partitions without numRecords statistics, counted by a scan", path, len(unknown))
        scanned = table.where(F.col(column).isin([v for v in unknown if v is not None])
                              | (F.col(column).isNull() if None in unknown else F.lit(False)))
        counts.update({r[0]: r[1] for r in scanned.groupBy(column).count().collect()})
    return counts


@dataclass(frozen=True)
class PartitionFiles:
    """The data files of some partitions of a Delta table's current version, as plain Parquet:
    `root` is the table's location (a URI) and `files` the paths under it per partition value."""

    root: str
    files: dict


@dataclass(frozen=True)
class TableFiles:
    """All data files of a Delta table's current version, as plain Parquet: `root` is the
    table's location (a URI) and `files` the paths under it."""

    root: str
    files: list


def _plain_parquet_refusal(snapshot) -> str:
    """Why a table's files do not hold its rows as plain Parquet, as far as its metadata goes
    ("" when they do)."""
    mode = snapshot.metadata().columnMappingMode().name()
    if mode != "none":
        return f"column mapping mode '{mode}' renames the columns inside the files"
    return ""


def _plain_file_refusal(path: str, has_dv: bool, where: str) -> str:
    """Why a data file (its path in the log) is not plain Parquet of the rows it holds ("" when
    it is): deletion vectors hide some, shallow clones keep files outside the table folder."""
    if has_dv:
        return f"deletion vectors hide rows of files of {where}"
    if urlparse(path).scheme:
        return f"data file {path} lies outside the table folder"
    return ""


def _added_files(spark: SparkSession, snapshot, *columns: Column) -> list:
    """(path, has_dv, *columns) of every data file of `snapshot`, from the Delta log."""
    return (DataFrame(snapshot.allFiles().toDF(), spark)
            .select("path", F.col("deletionVector").isNotNull().alias("has_dv"), *columns).collect())


def partition_files(spark: SparkSession, path: str, column: str, values: Sequence[object]
                    ) -> tuple[PartitionFiles | None, str]:
    """The current data files of the partitions `values` of `column`, from the Delta log, when
    reading them as plain Parquet files gives the table's rows; else (None, why not): deletion
    vectors hide rows of a file, column mapping renames columns inside the files."""
    delta_log, snapshot = _current_snapshot(spark, path)
    why_not = _plain_parquet_refusal(snapshot)
    if why_not:
        return None, why_not
    if None in values:
        return None, f"rows with a null {column} sit in a partition of their own"
    as_value = _partition_value_parser(spark.read.format("delta").load(path), column)
    wanted = {str(v) for v in values}
    files: dict = {}
    for row in _added_files(spark, snapshot, F.col("partitionValues")[column].alias("value")):
        if row["value"] not in wanted:
            continue
        value = as_value(row["value"])
        why_not = _plain_file_refusal(row["path"], row["has_dv"], f"{column}={value}")
        if why_not:
            return None, why_not
        files.setdefault(value, []).append(unquote(row["path"]))
    return PartitionFiles(str(delta_log.dataPath().toString()), {v: sorted(f) for v, f in files.items()}), ""


def table_files(spark: SparkSession, path: str) -> tuple[TableFiles | None, str]:
    """Every current data file of the table at `path`, from the Delta log, when reading them as
    plain Parquet files gives the table's rows; else (None, why not), as partition_files."""
    delta_log, snapshot = _current_snapshot(spark, path)
    why_not = _plain_parquet_refusal(snapshot)
    if why_not:
        return None, why_not
    files = []
    for row in _added_files(spark, snapshot):
        why_not = _plain_file_refusal(row["path"], row["has_dv"], "the table")
        if why_not:
            return None, why_not
        files.append(unquote(row["path"]))
    return TableFiles(str(delta_log.dataPath().toString()), sorted(files)), ""


def dumps_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)
