"""A failed job leaves its tables at their last good version.

Every write helper records the commits it makes inside `rolled_back_on_failure` (around every
stage in the CLI); when the job fails, each table it committed to goes back to its version before
the job (RESTORE), or is removed when the job created it.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator, Sequence

from pyspark.sql import SparkSession

from demandcast.logs import get_logger
from demandcast.tables.history import current_version
from demandcast.tables.specs import TableSpec, table_path

log = get_logger("tables")

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
    """Removes a table's folder, through the Hadoop file system of its location (any scheme),
    and drops Spark's cached relations of it, so a later create at the same path starts afresh."""
    jvm = spark._jvm
    folder = jvm.org.apache.hadoop.fs.Path(path)
    folder.getFileSystem(spark._jsc.hadoopConfiguration()).delete(folder, True)
    spark.catalog.clearCache()


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




def version_before_job_commit(spark: SparkSession, warehouse: str, spec: TableSpec) -> int | None:
    """The table's version before a commit, read only inside `rolled_back_on_failure`."""
    if _JOB_WRITES.get() is None:
        return None
    return current_version(spark, table_path(warehouse, spec.name))


def record_job_commit(spark: SparkSession, spec: TableSpec, path: str, before: int | None,
                      after: int | None) -> None:
    """Inside a job, notes the commit so that a later failure of the job undoes it."""
    writes = _JOB_WRITES.get()
    if writes is not None:
        writes.append(TableWrite(spark, spec.name, path, before, after))
