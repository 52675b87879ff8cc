"""The two tables the score stage publishes: their specs, their rows from the UDF output, and
their idempotent writes.

Both are partitioned by (snapshot_date, model_version): a rerun replaces exactly its own
(snapshot, model) partition in one Delta commit, and another model's scores of the same snapshot
stay side by side (README "Table contracts").
"""
from __future__ import annotations

import datetime as dt
from typing import Sequence

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from demandcast.tables import NO_DELETION_VECTORS, TableSpec, is_delta_table, table_path, write_table
from training.scoring.udf import USER_KEY, ScoringPlan

PARTITIONS = ("snapshot_date", "model_version")

PREDICTIONS = TableSpec(
    name="predictions",
    comment=("Per-user purchase propensity for the next N days (N = label_window_days) of one "
             "feature snapshot, scored by one model version. Key (user_key, snapshot_date, "
             "model_version). Written by `demandcast score`."),
    partition_by=PARTITIONS,
    column_comments={
        "user_key": "pseudonymous user key: HMAC-SHA256 of the raw user id (hex)",
        "snapshot_date": "feature snapshot scored (features use events before this date)",
        "model_version": "model version that produced the scores (models table)",
        "p_purchase": "probability that the user buys at least once within N days after the snapshot",
        "expected_spend": "expected spend within N days after the snapshot (currency of prices)",
        "top_categories": "the model's best-scored categories for the user, best first: "
                          "category_id and its category score",
        "decile": "propensity decile within (snapshot, model version): 1 = highest p_purchase",
        "scored_at": "UTC time of the scoring run",
        "drivers": "top feature-group drivers of p_purchase by occlusion (change in p_purchase "
                   "when the group takes its training reference values); null unless explained",
    },
    properties=dict(NO_DELETION_VECTORS),
)

CATEGORY_DEMAND = TableSpec(
    name="category_demand",
    comment=("Expected demand per category in the next N days from one snapshot and model "
             "version: sums of the per-user expectations over every scored user."),
    partition_by=PARTITIONS,
    column_comments={
        "snapshot_date": "feature snapshot scored",
        "model_version": "model version that produced the scores",
        "category_id": "item category",
        "expected_buyers": "sum over users of the model's category score (expected number of buyers)",
        "expected_revenue": "sum over users of the expected spend allotted to the category",
        "n_users": "users scored in the snapshot",
        "computed_at": "UTC time of the scoring run",
    },
    properties=dict(NO_DELETION_VECTORS),
)


# Delta refuses NOT NULL inside arrays: the casts make every nested field nullable.
TOP_CATEGORIES_TYPE = "array<struct<category_id:string,score:double>>"
DRIVERS_TYPE = "array<struct<feature_group:string,contribution:double>>"


def decile(p: Column, edges: Sequence[float]) -> Column:
    """1 for the highest-propensity tenth, 10 for the lowest."""
    above = sum((F.when(p > F.lit(float(e)), 1).otherwise(0) for e in edges), F.lit(0))
    return (F.lit(10) - above).cast("int")


def prediction_rows(scored: DataFrame, plan: ScoringPlan, snapshot_date: dt.date,
                    model_version: str, scored_at: dt.datetime, edges: Sequence[float]) -> DataFrame:
    """The predictions table's columns (README "Table contracts")."""
    ids = F.array(*[F.lit(str(c)) for c in plan.category_ids]) if plan.category_ids \
        else F.array().cast("array<string>")
    top = F.array(*[
        F.struct(F.element_at(ids, F.col(f"top_{j}_index") + 1).alias("category_id"),
                 F.col(f"top_{j}_score").alias("score"))
        for j in range(plan.n_top)]) if plan.n_top else \
        F.array().cast(TOP_CATEGORIES_TYPE)
    if plan.n_drivers:
        drivers = F.array(*[F.struct(F.col(f"driver_{j}_group").alias("feature_group"),
                                     F.col(f"driver_{j}_value").alias("contribution"))
                            for j in range(plan.n_drivers)])
        drivers = F.when(F.col("driver_0_group").isNotNull(),
                         F.filter(drivers, lambda d: d["feature_group"].isNotNull()))
    else:
        drivers = F.lit(None)
    return scored.select(
        F.col(USER_KEY),
        F.lit(snapshot_date).cast("date").alias("snapshot_date"),
        F.lit(model_version).alias("model_version"),
        F.col("p_purchase"),
        F.col("expected_spend"),
        top.cast(TOP_CATEGORIES_TYPE).alias("top_categories"),
        decile(F.col("p_purchase"), edges).alias("decile"),
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
        drivers.cast(DRIVERS_TYPE).alias("drivers"),
    )


def category_demand_rows(scored: DataFrame, plan: ScoringPlan, snapshot_date: dt.date,
                         model_version: str, computed_at: dt.datetime) -> DataFrame:
    """Per category: sums over users of the category score and of the allotted expected spend.

    One aggregation with one sum per category column (no explode of users x categories)."""
    spark = scored.sparkSession
    schema = ("snapshot_date date, model_version string, category_id string, "
              "expected_buyers double, expected_revenue double, n_users long, computed_at timestamp")
    if not plan.category_ids:
        return spark.createDataFrame([], schema)
    sums = scored.agg(F.count(F.lit(1)).alias("n_users"), *[
        agg for i in range(len(plan.category_ids)) for agg in (
            F.sum(f"cat_score_{i}").alias(f"b{i}"), F.sum(f"cat_spend_{i}").alias(f"r{i}"))])
    per_category = F.explode(F.array(*[
        F.struct(F.lit(str(c)).alias("category_id"), F.col(f"b{i}").alias("expected_buyers"),
                 F.col(f"r{i}").alias("expected_revenue"))
        for i, c in enumerate(plan.category_ids)])).alias("c")
    return sums.select(
        F.lit(snapshot_date).cast("date").alias("snapshot_date"),
        F.lit(model_version).alias("model_version"),
        per_category, F.col("n_users").cast("long").alias("n_users"),
        F.lit(computed_at).cast("timestamp").alias("computed_at"),
    ).select("snapshot_date", "model_version", "c.category_id", "c.expected_buyers",
             "c.expected_revenue", "n_users", "computed_at")


def _partition(snapshot_date: dt.date, model_version: str) -> dict[str, list[object]]:
    return {"snapshot_date": [snapshot_date], "model_version": [model_version]}


def write_scores(df: DataFrame, warehouse: str, spec: TableSpec, snapshot_date: dt.date,
                 model_version: str) -> int:
    """Replaces the table's (snapshot, model version) partition by `df` in one commit."""
    return write_table(df, warehouse, spec, "replace_partitions",
                       replace_where=_partition(snapshot_date, model_version))


# The column holding each table's scoring time: one value per run, taken before scoring starts.
SCORED_AT = {PREDICTIONS.name: "scored_at", CATEGORY_DEMAND.name: "computed_at"}


def partition_scored_at(spark: SparkSession, warehouse: str, spec: TableSpec,
                        snapshot_date: dt.date, model_version: str) -> float | None:
    """When the table's (snapshot, model version) partition was scored, in epoch seconds; None
    when the table, the partition or its time column does not exist. A run replaces the whole
    partition in one commit, so any one of its rows carries the time (a metadata-pruned lookup)."""
    path = table_path(warehouse, spec.name)
    if not is_delta_table(spark, path):
        return None
    table = spark.read.format("delta").load(path)
    column = SCORED_AT[spec.name]
    if column not in table.columns:  # a table of another schema: the write guard names it
        return None
    row = (table.where((F.col("snapshot_date") == F.lit(snapshot_date))
                       & (F.col("model_version") == F.lit(model_version)))
           .select(F.col(column).cast("double")).limit(1).first())
    return None if row is None else row[0]
