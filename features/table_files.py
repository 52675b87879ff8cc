"""Reading and writing a Delta table's Parquet files in a Python worker, without Spark's reader
or writer.

user_daily aggregates each event date whole, and a snapshot sums each user's user_daily rows.
Read through Spark, the rows must be shuffled to meet and converted from Spark rows to Arrow;
read here, a worker takes the files it needs (listed from the Delta log, see
demandcast.tables.partition_files) straight into Arrow. Only for tables whose files hold
exactly their rows: no deletion vectors, no column mapping.

Written here, a worker's Arrow table goes straight to a Parquet file and the driver commits the
files to the Delta log (demandcast.tables.replace_partitions_with_files): Spark's writer would
turn the Arrow batches into rows and encode them again, most of user_daily's cost (bench/
RESULTS.md, sessions 17-18).
"""
from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from features.day_aggregates import RAW_EVENT_SCHEMA


def file_system(root: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's file system for the table location `root` (a URI as Hadoop prints it) and the
    location's path in it. Raises for a scheme pyarrow cannot open (s3a, or hdfs without libhdfs)."""
    if root.startswith("file:"):  # Hadoop prints file:/a/b, which is no URI with spaces in it
        return pafs.LocalFileSystem(), re.sub(r"^/+", "/", root[len("file:"):])
    return pafs.FileSystem.from_uri(root)


def read_files(root: str, files: list[str], schema: pa.Schema) -> pa.Table:
    """The `schema` columns of `files` (paths under the table location `root`), of the schema's
    types. A column a file lacks (written before the column existed) is null, as Spark reads it."""
    fs, base = file_system(root)
    tables = []
    for name in files:
        with fs.open_input_file(f"{base.rstrip('/')}/{name}") as source:
            parquet = pq.ParquetFile(source)
            present = set(parquet.schema_arrow.names)
            table = parquet.read(columns=[c for c in schema.names if c in present])
        # INT96 times arrive as naive nanoseconds; Spark reads them as UTC microseconds.
        tables.append(pa.table({
            field.name: (pc.cast(table[field.name], field.type,
                                 safe=not pa.types.is_timestamp(field.type))
                         if field.name in present else pa.nulls(table.num_rows, field.type))
            for field in schema}))
    return pa.concat_tables(tables) if tables else schema.empty_table()


def read_event_files(root: str, files: list[str], event_date: dt.date) -> pa.Table:
    """The RAW_EVENT_SCHEMA columns of `files`, all of partition `event_date`, with event_date
    added."""
    raw = read_files(root, files, RAW_EVENT_SCHEMA)
    return raw.append_column("event_date", pa.array([event_date] * raw.num_rows, pa.date32()))


def _new_partition_file(root: str, column: str, value: dt.date) -> tuple[pafs.FileSystem, str, str]:
    """(file system, path relative to `root`, full path) of a new data file in the partition's
    folder, named as Spark names data files."""
    fs, base = file_system(root)
    folder = f"{column}={value.isoformat()}"
    fs.create_dir(f"{base.rstrip('/')}/{folder}", recursive=True)
    relative = f"{folder}/part-{uuid.uuid4()}.c000.snappy.parquet"
    return fs, relative, f"{base.rstrip('/')}/{relative}"


def _add_action(fs: pafs.FileSystem, relative: str, full: str, column: str, value: dt.date,
                rows: int) -> str:
    """The Delta log's add action (JSON) for a written file, with numRecords statistics."""
    written = fs.get_file_info(full)
    return json.dumps({"add": {
        "path": relative, "partitionValues": {column: value.isoformat()}, "size": written.size,
        "modificationTime": written.mtime_ns // 1_000_000, "dataChange": True,
        "stats": json.dumps({"numRecords": rows})}})


def check_not_null(rows: pa.Table | pa.RecordBatch, not_null: Sequence[str]) -> None:
    """Raises, naming the column, when `rows` hold a null in a column of `not_null` (the table's
    NOT NULL columns, which Spark's writer would refuse the same way)."""
    for name in not_null:
        if name in rows.schema.names and rows.column(name).null_count:
            raise ValueError(f"NOT NULL column {name!r} would get {rows.column(name).null_count} "
                             "null values; nothing is committed")


def write_partition_file(root: str, column: str, value: dt.date, table: pa.Table,
                         not_null: Sequence[str] = ()) -> str:
    """Writes `table` (rows of the partition `column`=`value`, without that column) as one new
    Parquet file in the partition's folder under the table location `root`, and returns the
    Delta log's add action for it (JSON), with numRecords statistics. The file belongs to the
    table only once the driver commits the action."""
    check_not_null(table, not_null)
    fs, relative, full = _new_partition_file(root, column, value)
    pq.write_table(table, full, filesystem=fs, compression="snappy")
    return _add_action(fs, relative, full, column, value, table.num_rows)


def write_partitioned_batches(root: str, column: str, batches: Iterable[pa.RecordBatch],
                              not_null: Sequence[str] = ()) -> list[str]:
    """Writes the rows of `batches` (a date partition `column` among their columns) as one new
    Parquet file per value of `column`, streamed batch by batch, and returns the files' add
    actions as write_partition_file does."""
    writers: dict = {}
    files: dict = {}
    rows_written: dict = {}
    try:
        for batch in batches:
            check_not_null(batch, not_null)
            values = batch.column(column)
            if values.null_count:
                raise ValueError(f"{values.null_count} rows have a null {column}: no partition "
                                 "folder to write them to")
            rows = batch.select([name for name in batch.schema.names if name != column])
            for value in pc.unique(values).to_pylist():
                if value not in writers:
                    files[value] = _new_partition_file(root, column, value)
                    fs, _, full = files[value]
                    writers[value] = pq.ParquetWriter(full, rows.schema, filesystem=fs, compression="snappy")
                    rows_written[value] = 0
                part = rows.filter(pc.equal(values, pa.scalar(value, values.type)))
                writers[value].write_batch(part)
                rows_written[value] += part.num_rows
    finally:
        for writer in writers.values():
            writer.close()
    return [_add_action(*files[value], column, value, rows_written[value]) for value in files]

