"""Spark tasks that each take one snapshot and one range of user_key and read those users'
user_daily rows straight from the table's Parquet files (listed from the Delta log, see
demandcast.tables.partition_files) into a Python worker: every user's rows meet in one task
without a shuffle, and numpy sums them (features.snapshot_aggregates).

A task reads every date it needs whole and keeps its users' rows, so the files are decoded once
per range: the fewer ranges the better, as long as a range's sums fit in a worker's memory.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable, Sequence

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import from_arrow_schema

from demandcast.tables import PartitionFiles

# A task holds its range's keys (about 70 bytes per user_daily row) and its users' sums and
# output (about 2 kB per user) in memory: at 50M events a range of 4.6M rows and 253k users
# peaked at 972 MB RSS in one Python process. Above this many rows per range there are more
# ranges, a multiple of the cores.
ROWS_PER_TASK = 6_000_000

# compute(dates, keys, columns, snapshot): features.snapshot_aggregates' signature, less settings.
Compute = Callable[[Sequence[dt.date], Callable, Callable, dt.date], pa.Table]


@dataclass
class RangeReader:
    """keys(d) and columns(d, schema) of snapshot_aggregates for the user_key range [low, high)
    (None: open) of the files `files[d]` under `root`."""

    root: str
    files: dict
    low: str | None
    high: str | None

    def __post_init__(self) -> None:
        self.positions: dict = {}

    def keys(self, d: dt.date) -> pa.Array:
        from features.snapshot_aggregates import USER_KEY, key_range_positions
        from features.table_files import read_files

        day_keys = read_files(self.root, self.files[d], USER_KEY)["user_key"].combine_chunks()
        self.positions[d] = key_range_positions(day_keys, self.low, self.high)
        return day_keys.take(self.positions[d])

    def columns(self, d: dt.date, schema: pa.Schema) -> pa.Table:
        from features.table_files import read_files

        return read_files(self.root, self.files[d], schema).take(self.positions.pop(d))


def per_user_range(spark: SparkSession, source: PartitionFiles, rows_per_date: dict,
                   snapshot_dates: Sequence[dt.date], dates_of: Callable[[dt.date], list[dt.date]],
                   compute: Compute, schema: pa.Schema) -> DataFrame:
    """The rows `compute` returns for every snapshot and range of users, as a DataFrame of
    `schema`; `dates_of(snapshot)` names the user_daily dates (keys of source.files) it reads."""
    from features.snapshot_aggregates import USER_KEY, user_key_ranges
    from features.table_files import read_files

    root, files = source.root, source.files
    sample = read_files(root, files[max(files)], USER_KEY)["user_key"].combine_chunks()
    tasks = []
    for snapshot in sorted(set(snapshot_dates)):
        dates = dates_of(snapshot)
        rows = sum(rows_per_date.get(d, 0) for d in dates)
        cores = spark.sparkContext.defaultParallelism
        ranges = cores * max(1, -(-rows // (cores * ROWS_PER_TASK)))
        tasks += [(snapshot, dates, low, high) for low, high in user_key_ranges(sample, ranges)]

    def rows_of_tasks(batches):
        for batch in batches:
            for task in batch.to_pylist():
                reader = RangeReader(root, files, task["low"], task["high"])
                yield from compute(task["dates"], reader.keys, reader.columns,
                                   task["snapshot_date"]).to_batches()

    return (spark.createDataFrame(spark.sparkContext.parallelize(tasks, max(1, len(tasks))),
                                  "snapshot_date date, dates array<date>, low string, high string")
            .mapInArrow(rows_of_tasks, from_arrow_schema(schema)))
