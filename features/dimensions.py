"""Point-in-time reads of the users and items dimensions (type-2 history, written by ingest).

A dimension row is one version of a key's attributes, valid on the days
valid_from <= day < valid_to (valid_to null: still current). A fact is joined to the version
valid on its day, so a feature computed for a past day never sees attributes learnt later:
- users on a snapshot D: the version of day D - 1 (what was known before D; snapshot_day_of);
- items on an event: the version of the event's event_date.
"""
from __future__ import annotations

import datetime as dt
from typing import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

HISTORY_COLUMNS = ("valid_from", "valid_to")
# Stands for "no end" (valid_to null) in range conditions.
FAR_FUTURE = dt.date(9999, 12, 31)


def _valid(valid_from: Column, valid_to: Column, day: Column) -> Column:
    return (valid_from <= day) & (day < F.coalesce(valid_to, F.lit(FAR_FUTURE)))


def valid_on(dimension: DataFrame, day: Column) -> Column:
    """True on the row of `dimension` whose version is valid on `day` (a date column)."""
    return _valid(dimension["valid_from"], dimension["valid_to"], day)


def snapshot_day_of(snapshot_date: Column) -> Column:
    """The day whose users version a snapshot D reads: D - 1, the last day known before D."""
    return F.date_sub(snapshot_date, 1)


def attributes_on(facts: DataFrame, dimension: DataFrame, key: str, day_column: str,
                  attributes: Sequence[str] | None = None) -> DataFrame:
    """`facts` left-joined to the version of `dimension` valid on each fact's `day_column`: every
    fact row once, with the dimension's `attributes` (default: all but the key and the history
    columns), null when no version is valid that day or the key is unknown.

    An equi-join on `key` with the range as a further condition: Spark plans it as a sort-merge
    (or, for a small dimension, broadcast) join on the key, so a large dimension is never
    collected. Versions of a key do not overlap, so a fact matches at most one.
    """
    names = list(attributes) if attributes is not None else [
        c for c in dimension.columns if c != key and c not in HISTORY_COLUMNS]
    clash = sorted(set(names) & (set(facts.columns) - {key}))
    if clash:
        raise ValueError(f"facts already have columns {clash} of the dimension; rename them first")
    versions = dimension.select(F.col(key).alias("_dim_key"), *names, F.col("valid_from").alias("_dim_from"),
                                F.col("valid_to").alias("_dim_to"))
    condition = (facts[key] == versions["_dim_key"]) & _valid(
        versions["_dim_from"], versions["_dim_to"], facts[day_column])
    return facts.join(versions, condition, "left").drop("_dim_key", "_dim_from", "_dim_to")


__all__ = ["FAR_FUTURE", "HISTORY_COLUMNS", "valid_on", "snapshot_day_of", "attributes_on"]
