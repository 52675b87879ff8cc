"""One ingest batch: read raw files -> map to the contract -> validate -> deduplicate -> hash.

`prepare_batch` computes everything and commits nothing; `commit_batch` writes the tables. The
job checks the data-quality gate in between, so a refused batch leaves every table untouched.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from demandcast.config import PipelineConfig
from demandcast.errors import DataQualityError
from demandcast.logs import get_logger
from demandcast.settings.ingest import IngestSettings
from demandcast.tables import TableSpec, commit_info, current_version, merge_table, table_path, write_table
from features.ingest import landed_files, raw_reader
from features.ingest.column_mapping import copy_number, map_to_contract, source_field
from features.ingest.event_contract import REQUIRED, Reason
from features.ingest.pseudonymise import HashKey, with_user_key
from features.ingest.raw_reader import FileProblem, InputFile
from features.ingest.validation import validate_events

log = get_logger("ingest")

EVENTS = TableSpec(
    name="events",
    comment="Bronze behaviour events: validated, deduplicated on event_id, user ids pseudonymised",
    partition_by=("event_date",),
    column_comments={
        "event_id": "unique event id (insert-only MERGE key)",
        "user_key": "HMAC-SHA256 of the platform user id (hex)",
        "event_time": "event time, UTC",
        "extra": "source fields outside the event contract, as text",
        "source_file": "raw file the event was read from",
        "batch_id": "ingest batch that first inserted the event",
        "ingested_at": "clock of that batch (UTC)",
        "event_date": "UTC date of event_time",
    },
    # The change data feed tells the features stage which event dates a batch touched (late
    # events included), so user_daily recomputes only those.
    properties={"delta.enableDeletionVectors": "false", "delta.enableChangeDataFeed": "true"},
)
QUARANTINE = TableSpec(
    name="quarantine",
    comment="Rejected raw records and files of each ingest batch, with the reason",
    partition_by=("batch_id",),
    column_comments={
        "reason": "reason code (features.ingest.event_contract.Reason)",
        "detail": "every problem of the record, 'reason: detail; ...'",
        "raw_record": "the record as read (user id replaced by its keyed hash); null for file-level rows",
        "source_file": "raw file of the record",
    },
    properties={"delta.enableDeletionVectors": "false"},
)
EVENT_COLUMNS = ("event_id", "user_key", "session_id", "event_time", "event_type", "item_id", "category_id",
                 "price", "quantity", "device", "channel", "extra", "source_file", "batch_id", "ingested_at",
                 "event_date")


@dataclass
class IngestBatch:
    batch_id: str
    files: list[InputFile]
    problems: list[FileProblem]
    events: DataFrame
    quarantine: DataFrame
    event_dates: list[dt.date]
    now: dt.datetime
    counts: dict = field(default_factory=dict)
    _cached: list[DataFrame] = field(default_factory=list)

    @property
    def bad_fraction(self) -> float:
        judged = self.counts["good_rows"] + self.counts["bad_rows"]
        return self.counts["bad_rows"] / judged if judged else 0.0

    def release(self) -> None:
        for df in self._cached:
            df.unpersist()


def input_paths(cfg: PipelineConfig) -> list[str]:
    return list(cfg.ingest.paths) or [f"{cfg.raw_dir}/events/{cfg.ingest.format}"]


def _key_text() -> Column:
    """What a raw user id is replaced by in quarantine records and in events.extra."""
    return F.concat(F.lit("hmac:"), F.col("user_key"))


def _has_replaceable_id() -> Column:
    # Ids shorter than 3 characters would match inside unrelated text.
    return F.col("user_id").isNotNull() & (F.length("user_id") >= 3)


def redact_user_ids(records: DataFrame, s: IngestSettings) -> DataFrame:
    """raw_record with the raw user id replaced by its key (quarantine must not hold raw ids).

    Parsed records: every occurrence of the id. Malformed JSON: the value of the user-id field.
    """
    key_field = source_field(s.mapping, "user_id")
    pattern = '("' + key_field.replace("\\", "\\\\").replace(".", "\\.") + r'"\s*:\s*")[^"]*(")'
    return records.withColumn("raw_record", F.when(
        _has_replaceable_id(), F.replace("raw_record", F.col("user_id"), _key_text()))
        .otherwise(F.regexp_replace("raw_record", pattern, "$1<redacted>$2")))


def redact_user_ids_in_extra(records: DataFrame) -> DataFrame:
    """`extra` values with the raw user id replaced by its key: a nested source field (a JSON
    `user` object read through derive) would otherwise carry the raw id into `events`."""
    # Whole tokens only: visitor 400 must not rewrite an order number 4000 in another field.
    token = F.concat(F.lit(r"(?<![0-9A-Za-z_])\Q"), F.col("user_id"), F.lit(r"\E(?![0-9A-Za-z_])"))
    return records.withColumn("extra", F.when(
        _has_replaceable_id() & (F.size("extra") > 0),
        F.transform_values("extra", lambda _, v: F.regexp_replace(v, token, _key_text())))
        .otherwise(F.col("extra")))


def _file_problem_rows(spark: SparkSession, problems: list[FileProblem]) -> DataFrame:
    return spark.createDataFrame([(p.reason, p.detail, None, p.path) for p in problems],
                                 "reason string, detail string, raw_record string, source_file string")


def landing_bounds(cfg: PipelineConfig) -> tuple[dt.date | None, dt.date | None]:
    """The landing folders to read: ingest.date_from/date_to, else with as_of the day and its
    late margin (as_of - ingest.late_margin_days .. as_of), else all."""
    s = cfg.ingest
    if cfg.as_of is None:
        return s.date_from, s.date_to
    return (s.date_from or cfg.as_of - dt.timedelta(days=s.late_margin_days), s.date_to or cfg.as_of)


def files_to_read(spark: SparkSession, cfg: PipelineConfig) -> tuple[list[InputFile], int]:
    """The batch's input files and how many listed ones were left out as already ingested (a
    scheduled run, with as_of, only; an explicit run reads what it names, the same batch again)."""
    files = raw_reader.list_files(spark, input_paths(cfg), *landing_bounds(cfg))
    if cfg.as_of is None:
        return files, 0
    fresh = landed_files.new_files(spark, cfg.warehouse, files)
    return fresh, len(files) - len(fresh)


def prepare_batch(spark: SparkSession, cfg: PipelineConfig, key: HashKey, now: dt.datetime,
                  files: list[InputFile] | None = None) -> IngestBatch:
    s = cfg.ingest
    if files is None:
        files = files_to_read(spark, cfg)[0]
    batch_id = s.batch_id or raw_reader.batch_id_of(files)
    log.info("batch %s: %d input files (%s)", batch_id, len(files), s.format)
    raw = raw_reader.read_records(spark, files, s.format, s.csv_options)

    mapped = map_to_contract(raw.records, s.mapping, raw.repeated_names)
    checked = validate_events(mapped, s.validation, s.mapping, now)
    keyed = with_user_key(checked, key, drop_source=False).persist(StorageLevel.MEMORY_AND_DISK)
    # A file none of whose records carries the contract is a foreign file: reported as one
    # problem, its records quarantined as foreign_schema, and kept out of the bad-row gate.
    per_file = {r.source_file: r for r in keyed.groupBy("source_file").agg(F.sum(
        (F.size(F.filter("problems", lambda p: p.reason.isin(Reason.MALFORMED_RECORD, Reason.MISSING_REQUIRED)))
         == 0).cast("int")).alias("carrying"),
        *[F.max(F.col(name).isNotNull().cast("int")).alias(f"has_{name}") for name in REQUIRED]).collect()}
    raw.release()  # `keyed` is materialised: the raw records are not needed any more
    foreign = sorted(f for f, r in per_file.items() if r.carrying == 0)
    problems = list(raw.problems) + [FileProblem(f, Reason.FOREIGN_SCHEMA, foreign_schema_detail(per_file[f], s))
                                     for f in foreign]
    for f in foreign:
        log.warning("foreign schema in %s: its records are quarantined as %s", f, Reason.FOREIGN_SCHEMA)
    in_foreign = F.col("source_file").isin(*foreign) if foreign else F.lit(False)
    foreign_problem = F.array(F.struct(F.lit(Reason.FOREIGN_SCHEMA).alias("reason"),
                                       F.lit("file has no record with the contract fields").alias("detail")))
    judged = (keyed.withColumn("problems", F.when(in_foreign, foreign_problem).otherwise(F.col("problems")))
              .withColumn("is_good", F.size("problems") == 0))

    reasons = {r.reason: r.n for r in judged.where(~F.col("is_good")).groupBy(
        F.col("problems")[0].reason.alias("reason")).agg(F.count("*").alias("n")).collect()}
    totals = judged.where("is_good").agg(F.count("*").alias("good"),
                                        F.countDistinct("event_id").alias("unique"),
                                        F.collect_set(F.to_date("event_time")).alias("dates")).first()
    foreign_rows = reasons.get(Reason.FOREIGN_SCHEMA, 0)
    counts = {
        "files": len(files),
        "file_problems": len(problems),
        "records_read": sum(raw.rows_per_file.values()),
        "good_rows": int(totals.good),
        "duplicates_in_batch": int(totals.good - totals.unique),
        "bad_rows": sum(reasons.values()) - foreign_rows,
        "bad_by_reason": dict(sorted(reasons.items())),
    }

    events = (
        redact_user_ids_in_extra(judged.where("is_good"))
        .withColumn("_copy", copy_number(F.col("event_id"))).where("_copy = 1")
        .withColumn("batch_id", F.lit(batch_id))
        .withColumn("ingested_at", F.lit(now))
        .withColumn("event_date", F.to_date("event_time"))
        .select(*EVENT_COLUMNS)
    )
    bad = redact_user_ids(judged.where(~F.col("is_good")), s).select(
        F.col("problems")[0].reason.alias("reason"),
        F.array_join(F.transform("problems", lambda p: F.concat(p.reason, F.lit(": "), p.detail)), "; ")
        .alias("detail"),
        "raw_record", "source_file")
    quarantine = (bad.unionByName(_file_problem_rows(spark, [p for p in problems if p.path not in foreign]))
                  .withColumn("batch_id", F.lit(batch_id))
                  .withColumn("quarantined_at", F.lit(now)))
    return IngestBatch(batch_id=batch_id, files=files, problems=problems, events=events,
                       quarantine=quarantine, event_dates=sorted(totals.dates), now=now, counts=counts,
                       _cached=[keyed])


def foreign_schema_detail(file_counts, s: IngestSettings) -> str:
    """Names the required contract fields (and their source fields) no record of the file has."""
    never = [f"{name} (source field {source_field(s.mapping, name)!r})" for name in REQUIRED
             if not file_counts[f"has_{name}"]]
    return ("no record carries the required fields of the event contract"
            + (f"; no record has a usable value for: {', '.join(never)}" if never else "")
            + _FORMAT_HINTS.get(s.format, "").format(sep=s.csv_options.get("sep", s.csv_options.get("delimiter", ","))))


# What most often makes a whole file foreign when its fields are really there.
_FORMAT_HINTS = {
    "csv": "; check ingest.csv_options (sep is {sep!r}; header, encoding) and ingest.mapping.columns",
    "json": "; ingest.format json reads JSON lines (one object per line); for a JSON array or a "
            "pretty-printed document use ingest.format json_document",
}


def check_gate(batch: IngestBatch, max_bad_fraction: float) -> None:
    """Raises DataQualityError (exit 3) when the batch must not be committed."""
    c = batch.counts
    if batch.bad_fraction > max_bad_fraction:
        raise DataQualityError(
            f"batch {batch.batch_id}: {c['bad_rows']} of {c['good_rows'] + c['bad_rows']} rows are bad "
            f"({batch.bad_fraction:.2%} > ingest.max_bad_fraction {max_bad_fraction:.2%}); by reason "
            f"{c['bad_by_reason']}; nothing was committed")
    if c["good_rows"] == 0 and batch.problems:
        raise DataQualityError(f"batch {batch.batch_id}: no valid rows; file problems: "
                               f"{[(p.path, p.reason, p.detail) for p in batch.problems]}; "
                               "nothing was committed")


def enable_change_feed(spark: SparkSession, path: str) -> None:
    """Turns on the change data feed of an events table created without it (one commit, once):
    the features stage reads what changed from the next batch on."""
    from delta.tables import DeltaTable

    properties = DeltaTable.forPath(spark, path).detail().select("properties").first()[0] or {}
    if properties.get("delta.enableChangeDataFeed", "false").lower() != "true":
        log.info("events: turning on the change data feed (%s)", path)
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES (delta.enableChangeDataFeed = true)")


def commit_batch(batch: IngestBatch, warehouse: str) -> dict:
    """Events first (insert-only, exactly once), then this batch's quarantine rows (replaced)."""
    result: dict = {}
    spark = batch.events.sparkSession
    if batch.event_dates:
        before = current_version(spark, table_path(warehouse, "events"))
        if before is not None:
            enable_change_feed(spark, table_path(warehouse, "events"))
        version = merge_table(batch.events, warehouse, EVENTS, keys=["event_id"], update_matched=False,
                              partition_values=batch.event_dates)
        # A merge that inserts nothing commits nothing: then no version is new.
        metrics = (commit_info(spark, table_path(warehouse, "events"), version).get("metrics", {})
                   if version != before else {})
        result["events"] = {"version": version, "inserted": int(metrics.get("numTargetRowsInserted", 0)),
                            "dates": f"{batch.event_dates[0]}..{batch.event_dates[-1]}"}
    version = write_table(batch.quarantine, warehouse, QUARANTINE, "replace_partitions",
                          replace_values=[batch.batch_id])
    result["quarantine"] = {"version": version}
    landed = landed_files.record_files(spark, warehouse, batch.files, batch.batch_id, batch.now)
    result["ingested_files"] = {"version": landed}
    return result


__all__ = ["EVENTS", "QUARANTINE", "IngestBatch", "prepare_batch", "check_gate", "commit_batch"]
