"""Point-in-time joins with the dimensions (users, items), which keep one row per version of a
key's attributes: valid from `valid_from` (inclusive) to `valid_to` (exclusive; null = current)."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def attributes_on(facts: DataFrame, dimension: DataFrame, key: str, day_column: str) -> DataFrame:
    """`facts` left-joined with the version of `dimension` valid on each fact's `day_column`
    (valid_from <= day < valid_to): an equi-join on `key` with the range as a join filter. A
    dimension without validity columns holds one version per key, valid always."""
    if "valid_from" not in dimension.columns:
        return facts.join(dimension, key, "left")
    dim = dimension.withColumnRenamed(key, "_dim_key")
    day = F.col(day_column)
    condition = ((F.col(key) == F.col("_dim_key")) & (F.col("valid_from") <= day)
                 & (F.col("valid_to").isNull() | (day < F.col("valid_to"))))
    return facts.join(dim, condition, "left").drop("_dim_key", "valid_from", "valid_to")
