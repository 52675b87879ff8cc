"""Reading a Delta table's Parquet files in a Python worker, without Spark's reader.

user_daily aggregates each event date whole, and a snapshot sums each user's user_daily rows.
Read through Spark, the rows must be shuffled to meet and converted from Spark rows to Arrow;
read here, a worker takes the files it needs (listed from the Delta log, see
demandcast.tables.partition_files) straight into Arrow. Only for tables whose files hold
exactly their rows: no deletion vectors, no column mapping.
"""
from __future__ import annotations

import datetime as dt
import re

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
