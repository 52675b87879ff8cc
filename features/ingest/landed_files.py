"""Which raw files ingest has already committed: the `ingested_files` table.

A scheduled run (`--as-of DATE`) reads the landing folders of DATE and the late margin; the
folders of the margin were read by the days before, so a file already committed (same path and
size) is left out: a rerun of a day reads nothing and commits nothing, and the bad rows of a file
are quarantined once, under the batch that first read it. A file that grew or was replaced (a
different size) is read again; its events are inserted once all the same (insert-only MERGE on
event_id).

One row per committed file (path, size, landing date, batch): it grows with files, not events,
and a run reads only the rows of the landing dates it lists.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Sequence

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from demandcast.tables import TableSpec, merge_table, read_optional_table
from features.ingest.raw_reader import InputFile

_DATE_FOLDER = re.compile(r"(?:^|/)event_date=(\d{4}-\d{2}-\d{2})(?:/|$)")

INGESTED_FILES = TableSpec(
    name="ingested_files",
    comment="Raw files ingest committed (path, size, landing date, batch): a scheduled run "
            "skips the files of its late margin that an earlier day already read",
    column_comments={
        "path": "URI of the raw file",
        "size": "bytes of the file when it was read",
        "landing_date": "date of its event_date=YYYY-MM-DD landing folder; null outside one",
        "batch_id": "ingest batch that read it",
        "ingested_at": "clock of that batch (UTC)",
    },
    properties={"delta.enableDeletionVectors": "false"},
)


def landing_date(path: str) -> dt.date | None:
    match = _DATE_FOLDER.search(path)
    return dt.date.fromisoformat(match.group(1)) if match else None


def new_files(spark: SparkSession, warehouse: str, files: Sequence[InputFile]) -> list[InputFile]:
    """`files` minus those already committed with the same size. Only the table's rows of the
    listed files' landing dates are read (one row per such file reaches the driver)."""
    table = read_optional_table(spark, warehouse, "ingested_files")
    if table is None or not files:
        return list(files)
    dates = sorted({d for d in (landing_date(f.path) for f in files) if d is not None})
    in_dates = F.col("landing_date").isin(dates) if dates else F.lit(False)
    undated = any(landing_date(f.path) is None for f in files)
    known = table.where(in_dates | (F.col("landing_date").isNull() if undated else F.lit(False)))
    seen = {(r.path, int(r.size)) for r in known.select("path", "size").collect()}
    return [f for f in files if (f.path, f.size) not in seen]


def record_files(spark: SparkSession, warehouse: str, files: Sequence[InputFile], batch_id: str,
                 now: dt.datetime) -> int | None:
    """Notes the batch's files as committed (insert-only: a file read again keeps its first
    batch). Returns the table version, None when there were no files."""
    if not files:
        return None
    rows = [(f.path, int(f.size), landing_date(f.path), batch_id, now) for f in files]
    df = spark.createDataFrame(rows, "path string, size long, landing_date date, batch_id string, "
                                     "ingested_at timestamp")
    return merge_table(df, warehouse, INGESTED_FILES, keys=["path", "size"], update_matched=False)


__all__ = ["INGESTED_FILES", "landing_date", "new_files", "record_files"]
