"""The users and items exports -> the `users` and `items` dimension tables."""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from demandcast.config import PipelineConfig
from demandcast.logs import get_logger
from demandcast.tables import TableSpec, merge_table
from features.ingest import raw_reader
from features.ingest.pseudonymise import HashKey, with_user_key

log = get_logger("ingest")

USERS = TableSpec(name="users", comment="User dimension, pseudonymised (user_key)",
                  column_comments={"user_key": "HMAC-SHA256 of the platform user id (hex)"},
                  properties={"delta.enableDeletionVectors": "false"})
ITEMS = TableSpec(name="items", comment="Item dimension", properties={"delta.enableDeletionVectors": "false"})


def _dimension_rows(spark: SparkSession, path: str) -> DataFrame | None:
    try:
        files = raw_reader.list_files(spark, [path])
    except Exception as exc:  # a missing folder is normal for platforms without dimension exports
        log.info("no dimension files at %s (%s): skipped", path, type(exc).__name__)
        return None
    raw = raw_reader.read_records(spark, files, "parquet")
    return raw.records if files else None


def _latest_per_key(df: DataFrame, key: str) -> DataFrame:
    w = Window.partitionBy(key).orderBy(F.col("source_file").desc(), F.col("raw_record").desc())
    return df.withColumn("_n", F.row_number().over(w)).where("_n = 1").drop("_n")


def ingest_dimensions(spark: SparkSession, cfg: PipelineConfig, key: HashKey) -> dict:
    """users and items files -> MERGE (update) into the dimension tables; rows without a key skipped."""
    s = cfg.ingest
    result = {}
    users_raw = _dimension_rows(spark, s.users_path or f"{cfg.raw_dir}/users")
    if users_raw is not None:
        src = F.col("src")
        users = users_raw.select(
            src["user_id"].alias("user_id"),
            src["signup_date"].try_cast("date").alias("signup_date"),
            src["region"].alias("region"), src["age_band"].alias("age_band"), src["gender"].alias("gender"),
            "raw_record", "source_file").where(F.col("user_id").isNotNull())
        users = with_user_key(_latest_per_key(users, "user_id"), key).drop("raw_record", "source_file")
        result["users"] = {"version": merge_table(users, cfg.warehouse, USERS, ["user_key"], update_matched=True)}
        users_raw.unpersist()
    items_raw = _dimension_rows(spark, s.items_path or f"{cfg.raw_dir}/items")
    if items_raw is not None:
        src = F.col("src")
        items = items_raw.select(
            src["item_id"].alias("item_id"), src["category_id"].alias("category_id"),
            src["brand"].alias("brand"), src["list_price"].try_cast("double").alias("list_price"),
            "raw_record", "source_file").where(F.col("item_id").isNotNull())
        items = _latest_per_key(items, "item_id").drop("raw_record", "source_file")
        result["items"] = {"version": merge_table(items, cfg.warehouse, ITEMS, ["item_id"], update_matched=True)}
        items_raw.unpersist()
    return result


__all__ = ["USERS", "ITEMS", "ingest_dimensions"]
