"""What the pipeline's tables are and where they live: names, specs, paths and reads.

Every table is a path-based Delta table under the warehouse root.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse

from pyspark.sql import DataFrame, SparkSession

from demandcast.errors import ConfigError, StageFailed

TABLE_NAMES = (
    "events", "quarantine", "user_daily", "user_features", "labels",
    "predictions", "category_demand", "models",
    # The latest scores of the champion, one row per user, replaced by every score run.
    "predictions_current",
    # The dimensions ingest pseudonymises, and the materialised training set whose pinned
    # version training reads.
    "users", "items", "training_set",
    # The raw files ingest committed, so a scheduled run reads each file of its late margin once.
    "ingested_files",
    # Written only by deploy/cluster_probe.py, the smoke test of a cluster's packaging.
    "cluster_check",
)

# Tables petastorm reads file by file: deletion vectors must stay off (README "Traps").
NO_DELETION_VECTORS = {"delta.enableDeletionVectors": "false"}

@dataclass(frozen=True)
class TableSpec:
    """What a table is: its name, partitioning, documentation and Delta properties."""

    name: str
    comment: str
    partition_by: tuple[str, ...] = ()
    column_comments: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in TABLE_NAMES:
            raise ValueError(f"unknown table {self.name!r}; tables are {TABLE_NAMES}")


def table_path(warehouse: str, name: str) -> str:
    """The location of table `name` under the warehouse root (a folder or a URI)."""
    if name not in TABLE_NAMES:
        raise ConfigError(f"unknown table {name!r}; tables are {', '.join(TABLE_NAMES)}")
    return f"{absolute_uri(warehouse)}/{name}"


def absolute_uri(location: str) -> str:
    """A URI stays as it is; a local path becomes absolute (Spark and petastorm agree on it)."""
    if urlparse(location).scheme and len(urlparse(location).scheme) > 1:
        return location.rstrip("/")
    return str(Path(location).resolve())


def is_delta_table(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def require_some_table(spark: SparkSession, warehouse: str) -> None:
    """A warehouse holding none of the pipeline's tables is a mistyped path, not an empty run."""
    if not any(is_delta_table(spark, table_path(warehouse, name)) for name in TABLE_NAMES):
        raise ConfigError(f"warehouse {absolute_uri(warehouse)} holds none of the pipeline's tables "
                          f"({', '.join(TABLE_NAMES)}): check the `warehouse` setting")


def read_table(spark: SparkSession, warehouse: str, name: str, version: int | None = None) -> DataFrame:
    path = table_path(warehouse, name)
    if not is_delta_table(spark, path):
        raise StageFailed(f"table '{name}' does not exist at {path}; run the stage that writes it first")
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


def read_optional_table(spark: SparkSession, warehouse: str, name: str) -> DataFrame | None:
    """The table, or None when the warehouse does not hold it (an optional input such as a
    dimension the source does not export)."""
    path = table_path(warehouse, name)
    return spark.read.format("delta").load(path) if is_delta_table(spark, path) else None
