"""The two tables the score stage publishes, and their idempotent writes.

Both are partitioned by (snapshot_date, model_version): a rerun replaces exactly its own
(snapshot, model) partition in one Delta commit, and another model's scores of the same snapshot
stay side by side (README "Table contracts").
"""
from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from demandcast.tables import NO_DELETION_VECTORS, TableSpec, is_delta_table, table_path, write_table

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
