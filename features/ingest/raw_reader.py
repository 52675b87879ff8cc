"""The I/O edge of ingest: finds raw files and reads them into uniform records, file by file safe.

Whatever the format, a record becomes `src` (map<string,string>: every source field by its
own name), `raw_record` (the original line, or the row as JSON), `malformed` and `source_file`.
A file that cannot be read (truncated gzip, corrupt Parquet, a CSV header that differs, a JSON
document that does not parse) or holds nothing is reported as a FileProblem and left out; the
other files are read.
"""
from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from demandcast.errors import ConfigError
from demandcast.logs import get_logger
from features.ingest.event_contract import Reason

log = get_logger("raw_reader")

_DATE_FOLDER = re.compile(r"(?:^|/)event_date=(\d{4}-\d{2}-\d{2})(?:/|$)")
_CORRUPT = "_corrupt_record"
UNPARSEABLE_DOCUMENT = "not one complete JSON document (cut off, or not JSON)"


@dataclass(frozen=True)
class InputFile:
    path: str
    size: int


@dataclass(frozen=True)
class FileProblem:
    path: str
    reason: str
    detail: str


@dataclass
class RawRecords:
    records: DataFrame  # src, raw_record, malformed, source_file (persisted: read once)
    rows_per_file: dict[str, int]
    problems: list[FileProblem]
    # CSV: a name the header repeats -> the names Spark gave its copies (e.g. price -> price2, price5).
    repeated_names: dict[str, list[str]] = field(default_factory=dict)

    def release(self) -> None:
        self.records.unpersist()


def _hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def list_files(spark: SparkSession, paths: Sequence[str], date_from=None, date_to=None) -> list[InputFile]:
    """Data files under `paths` (files, folders read recursively, or globs), sorted, deduplicated.

    Hidden files and folders (_SUCCESS, .crc, _delta_log) are skipped. With a date bound, files
    in `event_date=YYYY-MM-DD` folders outside it are skipped.
    """
    jvm = spark._jvm
    conf = spark._jsc.hadoopConfiguration()
    found: dict[str, int] = {}
    for raw in paths:
        root = jvm.org.apache.hadoop.fs.Path(raw)
        fs = root.getFileSystem(conf)
        statuses = fs.globStatus(root) if any(c in raw for c in "*?[") else (
            [fs.getFileStatus(root)] if fs.exists(root) else None)
        if not statuses:
            raise ConfigError(f"ingest input {raw!r} does not exist")
        for status in statuses:
            if status.isDirectory():
                listing = fs.listFiles(status.getPath(), True)
                while listing.hasNext():
                    f = listing.next()
                    rel = f.getPath().toString()[len(status.getPath().toString()):]
                    if not any(_hidden(part) for part in rel.split("/") if part):
                        found[f.getPath().toString()] = int(f.getLen())
            elif not _hidden(status.getPath().getName()):
                found[status.getPath().toString()] = int(status.getLen())
    selected = []
    for path, size in sorted(found.items()):
        match = _DATE_FOLDER.search(path)
        if match and ((date_from and match.group(1) < str(date_from)) or (date_to and match.group(1) > str(date_to))):
            continue
        selected.append(InputFile(path, size))
    return selected


def batch_id_of(files: Sequence[InputFile]) -> str:
    """Same files (paths and sizes) -> same batch id, so a rerun is recognisably the same batch."""
    digest = hashlib.sha256("\n".join(f"{f.path}|{f.size}" for f in sorted(files, key=lambda f: f.path))
                            .encode()).hexdigest()
    return f"b{digest[:16]}"


def _error_summary(exc: Exception) -> str:
    text = str(exc)
    # A loader's own raise_error message, without Spark's error class and SQLSTATE around it.
    raised = re.search(r"\[USER_RAISED_EXCEPTION\] (.*?)(?: SQLSTATE: \w+)?$", text, re.MULTILINE)
    if raised:
        return raised.group(1)[:500]
    causes = re.findall(r"Caused by: ([^\n]+)", text)
    head = re.search(r"\[[A-Z_.]+\][^\n]*", text)
    parts = [c.strip() for c in causes[-1:]] or ([head.group(0)] if head else [text.splitlines()[0] if text else type(exc).__name__])
    return parts[0][:500]


def _persisted(load: Callable[[list[str]], DataFrame], paths: list[str]) -> tuple[DataFrame | None, list[FileProblem]]:
    """Loads and materialises `paths`; on failure, splits the list to isolate the bad files.

    A healthy batch is read once; each bad file costs about log2(files) extra reads.
    """
    df = None
    try:
        df = load(paths).persist(StorageLevel.MEMORY_AND_DISK)
        df.count()
        return df, []
    except Exception as exc:  # Spark reports read failures as Py4J/Spark errors of many kinds
        if df is not None:
            df.unpersist()
        if len(paths) == 1:
            summary = _error_summary(exc)
            # Spark's CSV reader refuses a file whose header differs from the batch's columns.
            foreign = re.search(r"CSV header", str(exc))
            log.warning("unreadable input file %s: %s", paths[0], summary)
            return None, [FileProblem(paths[0], Reason.FOREIGN_SCHEMA if foreign else Reason.UNREADABLE_FILE,
                                      summary)]
    middle = len(paths) // 2
    left, left_problems = _persisted(load, paths[:middle])
    right, right_problems = _persisted(load, paths[middle:])
    parts = [p for p in (left, right) if p is not None]
    merged = parts[0].unionByName(parts[1]) if len(parts) == 2 else (parts[0] if parts else None)
    return merged, left_problems + right_problems


def _as_string(column: str, dtype: T.DataType) -> Column:
    c = F.col(f"`{column}`")
    if isinstance(dtype, T.TimestampType):
        # An explicit offset, so the instant survives whatever zone ingest assumes.
        return F.date_format(c, "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX")
    if isinstance(dtype, T.TimestampNTZType):
        # A wall-clock time without zone (Parquet isAdjustedToUTC=false): no offset, so that
        # ingest.mapping.source_timezone applies as for text without one.
        return F.date_format(c, "yyyy-MM-dd'T'HH:mm:ss.SSSSSS")
    if isinstance(dtype, (T.StructType, T.ArrayType, T.MapType)):
        return F.to_json(c)
    return c.cast("string")


def _columns_as_map(df: DataFrame, columns: Sequence[str]) -> Column:
    types = {f.name: f.dataType for f in df.schema.fields}
    if not columns:
        return F.create_map().cast("map<string,string>")
    return F.map_from_arrays(F.array(*[F.lit(c) for c in columns]),
                             F.array(*[_as_string(c, types[c]) for c in columns]))


def _json_loader(spark: SparkSession) -> Callable[[list[str]], DataFrame]:
    def load(paths: list[str]) -> DataFrame:
        lines = spark.read.text(paths).select("value", F.col("_metadata.file_path").alias("source_file"))
        src = F.from_json("value", "map<string,string>")
        return lines.where(F.trim("value") != "").select(
            src.alias("src"), F.col("value").alias("raw_record"), src.isNull().alias("malformed"),
            "source_file")
    return load


def _json_document_loader(spark: SparkSession) -> Callable[[list[str]], DataFrame]:
    """Each file one JSON document: an array of objects (or one object), pretty-printed or not.

    A file is read whole (API dumps and small exports; big exports are JSON lines). A document
    that does not parse (cut off, or not JSON) fails the read, so `_persisted` reports its file
    as unreadable, like a truncated gzip, and reads the others; an element of a good document
    that is not an object is one malformed record.
    """
    def load(paths: list[str]) -> DataFrame:
        docs = spark.read.text(paths, wholetext=True).select(
            F.trim("value").alias("doc"), F.col("_metadata.file_path").alias("source_file"))
        as_array = F.when(F.col("doc").startswith("["), F.col("doc")).otherwise(F.concat(F.lit("["), "doc", F.lit("]")))
        # array<string>: each element keeps its own JSON text, which becomes the raw record.
        items = F.from_json(as_array, "array<string>")
        unreadable = F.raise_error(F.lit(UNPARSEABLE_DOCUMENT))
        rows = docs.select("source_file", F.explode(F.when(items.isNull(), unreadable).otherwise(items))
                           .alias("item"))
        src = F.from_json("item", "map<string,string>")
        return rows.select(src.alias("src"), F.col("item").alias("raw_record"), src.isNull().alias("malformed"),
                           "source_file")
    return load


def _parquet_loader(spark: SparkSession) -> Callable[[list[str]], DataFrame]:
    def load(paths: list[str]) -> DataFrame:
        df = spark.read.option("mergeSchema", "true").parquet(*paths)
        data = [c for c in df.columns]
        return df.select(
            _columns_as_map(df, data).alias("src"),
            F.to_json(F.struct(*[F.col(f"`{c}`") for c in data])).alias("raw_record"),
            F.lit(False).alias("malformed"),
            F.col("_metadata.file_path").alias("source_file"))
    return load


def _header_as_written(spark: SparkSession, path: str, options: dict[str, str]) -> list[str] | None:
    """The names of a CSV file's first line as written; None when they cannot be told."""
    sep, quote = options.get("sep", options.get("delimiter", ",")), options.get("quote", '"')
    if len(sep) != 1 or len(quote) != 1:
        return None
    try:
        line = spark.read.text(path).first()
    except Exception:  # unreadable files are reported by the loader
        return None
    return next(csv.reader([line.value.lstrip("\ufeff")], delimiter=sep, quotechar=quote), None) if line else None


def _repeated_names(written: list[str], fields: list[str]) -> dict[str, list[str]]:
    """Header names written more than once -> the names Spark gave the copies (by position)."""
    if len(written) != len(fields):
        return {}
    repeated: dict[str, list[str]] = {}
    for name, read_as in zip(written, fields):
        if name and written.count(name) > 1:
            repeated.setdefault(name, []).append(read_as)
    return repeated


def _csv_loader(spark: SparkSession, options: dict[str, str], header_from: list[str]
                ) -> tuple[Callable[[list[str]], DataFrame], dict[str, list[str]]]:
    """CSV with every field a string; files whose header differs from the first readable one
    fail. Also returns the header's repeated names (see RawRecords.repeated_names)."""
    schema, first = None, None
    for path in header_from:
        try:
            schema, first = spark.read.options(**options).option("inferSchema", "false").csv(path).schema, path
            break
        except Exception as exc:
            log.warning("cannot read the CSV header of %s: %s", path, _error_summary(exc))
    if schema is None:
        schema = T.StructType([])
    fields = [f.name for f in schema.fields]
    # Spark names an empty header field _c<i> and suffixes repeated names with their position
    # (pandas' to_csv writes an unnamed index column first). Its header check compares the names
    # as written with those, so it would refuse every such file: then the header is skipped
    # unchecked, and the fields are read by Spark's names (src['_c0'], src['price6']).
    check_header = True
    repeated: dict[str, list[str]] = {}
    if first is not None and options.get("header", "false").lower() == "true":
        written = _header_as_written(spark, first, options)
        repeated = _repeated_names(written or [], fields)
        if written is not None and written != fields:
            log.warning("CSV header of %s has empty or repeated names %s: read as %s, and the headers of "
                        "the batch's other files are not compared", first, written, fields)
            check_header = False
    with_corrupt = T.StructType([T.StructField(n, T.StringType()) for n in fields]
                                + [T.StructField(_CORRUPT, T.StringType())])
    separator = options.get("sep", options.get("delimiter", ","))

    def load(paths: list[str]) -> DataFrame:
        df = (spark.read.options(**options).option("enforceSchema", str(not check_header).lower())
              .option("mode", "PERMISSIVE")
              .option("columnNameOfCorruptRecord", _CORRUPT).schema(with_corrupt).csv(paths))
        return df.select(
            _columns_as_map(df, fields).alias("src"),
            F.coalesce(F.col(_CORRUPT), F.concat_ws(separator, *[F.coalesce(F.col(f"`{c}`"), F.lit(""))
                                                                   for c in fields])).alias("raw_record"),
            F.col(_CORRUPT).isNotNull().alias("malformed"),
            F.col("_metadata.file_path").alias("source_file"))
    return load, repeated


def read_records(spark: SparkSession, files: Sequence[InputFile], fmt: str,
                 csv_options: dict[str, str] | None = None) -> RawRecords:
    """Reads every readable file once; problems name the files left out and why."""
    problems = [FileProblem(f.path, Reason.EMPTY_FILE, "zero bytes") for f in files if f.size == 0]
    paths = [f.path for f in files if f.size > 0]
    repeated: dict[str, list[str]] = {}
    if fmt == "json":
        loader = _json_loader(spark)
    elif fmt == "json_document":
        loader = _json_document_loader(spark)
    elif fmt == "parquet":
        loader = _parquet_loader(spark)
    elif fmt == "csv":
        loader, repeated = _csv_loader(spark, dict(csv_options or {}), paths)
    else:
        raise ConfigError(f"unknown input format {fmt!r}")
    records, unreadable = _persisted(loader, paths) if paths else (None, [])
    problems += unreadable
    if records is None:
        empty = spark.createDataFrame([], "src map<string,string>, raw_record string, malformed boolean, "
                                          "source_file string")
        return RawRecords(empty, {}, problems, repeated)
    counts = {r.source_file: r.n for r in records.groupBy("source_file").agg(F.count("*").alias("n")).collect()}
    unread = {p.path for p in problems}
    for path in paths:
        if path not in unread and counts.get(path, 0) == 0:
            problems.append(FileProblem(path, Reason.EMPTY_FILE, "no records"))
    return RawRecords(records, counts, problems, repeated)
