"""What evaluate brings to the driver: a split's rows when they are few, a bounded uniform
sample of them when they are many, and always a statement of which it was."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

ROW = "_row_position"
DRAW = "_sample_draw"


@dataclass(frozen=True)
class DriverRows:
    """How many of a split's rows reached the driver."""

    rows: int
    of_rows: int

    @property
    def sampled(self) -> bool:
        return self.rows < self.of_rows

    def statement(self, what: str) -> str:
        if self.sampled:
            return f"computed on a uniform sample of {self.rows:,} of {self.of_rows:,} {what}"
        return f"computed on all {self.of_rows:,} {what}"

    def to_json(self, what: str) -> dict:
        return {"rows": self.rows, "of_rows": self.of_rows, "sampled": self.sampled,
                "statement": self.statement(what)}


def with_row_position(df: DataFrame) -> DataFrame:
    """Tags each row with its position in the DataFrame's own order (partition, then row), the
    order a plain toPandas() would return it in."""
    return df.withColumn(ROW, F.monotonically_increasing_id())


def uniform_sample(df: DataFrame, limit: int, total: int, seed: int) -> DataFrame:
    """`limit` rows drawn uniformly without replacement from the `total` rows of df, or all of
    them when total <= limit. Each row draws a uniform number; the rows below a threshold set a
    few standard deviations above limit / total pass a filter (no task holds more than its own
    rows), and the `limit` smallest draws of those, a uniform subset, are kept."""
    if total <= limit:
        return df
    margin = limit + 6 * math.sqrt(limit) + 20
    fraction = min(1.0, margin / total)
    drawn = df.withColumn(DRAW, F.rand(seed))
    return drawn.where(F.col(DRAW) < fraction).orderBy(DRAW).limit(limit).drop(DRAW)


def collect_bounded(df: DataFrame, limit: int, seed: int,
                    extend=None) -> tuple[pd.DataFrame, DriverRows]:
    """df's rows on the driver in df's own order (a uniform sample of `limit` when it has more),
    after `extend` (a DataFrame -> DataFrame function, e.g. a join that adds columns) ran on
    them in Spark."""
    total = df.count()
    chosen = uniform_sample(with_row_position(df), limit, total, seed)
    if extend is not None:
        chosen = extend(chosen)
    rows = chosen.toPandas().sort_values(ROW, kind="stable").drop(columns=[ROW])
    return rows.reset_index(drop=True), DriverRows(len(rows), total)
