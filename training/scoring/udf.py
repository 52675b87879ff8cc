"""Bulk scoring of one feature snapshot with one model, as a vectorised Spark pandas UDF.

The model is loaded once per Python worker (model_loading.cached_model, called from the iterator
form `mapInPandas`). Each Arrow batch is one `model.predict` call (plus one more for the explained
rows); the UDF returns flat columns (one per category score, per top category, per driver) so
the Arrow transfer stays columnar, and Spark assembles the arrays and structs of the tables.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from demandcast.errors import DataQualityError, StageFailed
from training.model_directory import category_score_column
from training.scoring.explanations import occlusion_contributions, top_drivers
from training.scoring.model_loading import DEFAULT_LOADER, ScoringModel, cached_model

USER_KEY = "user_key"
EXPLAIN_FLAG = "_explain"


# --- the contract between a model and a feature table -------------------------------------------

def input_mismatches(input_columns: Mapping[str, str], schema: T.StructType) -> list[str]:
    """Every way the feature table fails the model's expected inputs (empty when it fits)."""
    fields = {f.name: f.dataType for f in schema.fields}
    problems = []
    for column, kind in input_columns.items():
        if column not in fields:
            problems.append(f"missing column '{column}' ({kind})")
        elif kind == "numeric" and not isinstance(fields[column], (T.NumericType, T.BooleanType)):
            problems.append(f"column '{column}' must be numeric, is {fields[column].simpleString()}")
        elif kind == "categorical" and not isinstance(fields[column], T.StringType):
            problems.append(f"column '{column}' must be a string (categorical), is "
                            f"{fields[column].simpleString()}")
        elif kind not in ("numeric", "categorical"):
            problems.append(f"column '{column}': unknown input kind {kind!r} in the model")
    if USER_KEY not in fields:
        problems.append(f"missing key column '{USER_KEY}'")
    return problems


def check_model_inputs(input_columns: Mapping[str, str], schema: T.StructType, model_version: str,
                       table: str = "user_features") -> None:
    problems = input_mismatches(input_columns, schema)
    if problems:
        raise StageFailed(
            f"model {model_version} does not fit table {table}: " + "; ".join(problems)
            + ". Nothing was written; score with a model trained on this feature set "
              "(--set score.model_version=...) or rebuild the features.")


def udf_inputs(features: DataFrame, input_columns: Mapping[str, str], explain: Column) -> DataFrame:
    """The key, the model's inputs (numerics as double, so null arrives as NaN) and the flag of
    the users to explain. Missing values are left to the model's saved preprocessing."""
    cols = [F.col(USER_KEY)]
    for column, kind in input_columns.items():
        spark_type = "double" if kind == "numeric" else "string"
        cols.append(F.col(column).cast(spark_type).alias(column))
    return features.select(*cols, explain.alias(EXPLAIN_FLAG))


# --- the UDF ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScoringPlan:
    """Everything a worker needs besides the rows; small and picklable."""

    model_dir: str
    input_columns: Mapping[str, str]
    category_ids: tuple[str, ...]
    top_k: int
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    typical: Mapping[str, object] = field(default_factory=dict)
    top_n_drivers: int = 3
    loader: str | Callable[[str], ScoringModel] = DEFAULT_LOADER

    @property
    def n_top(self) -> int:
        return min(self.top_k, len(self.category_ids))

    @property
    def n_drivers(self) -> int:
        return min(self.top_n_drivers, len(self.groups))

    def output_schema(self) -> T.StructType:
        fields = [T.StructField(USER_KEY, T.StringType()),
                  T.StructField("p_purchase", T.DoubleType()),
                  T.StructField("expected_spend", T.DoubleType())]
        for i in range(len(self.category_ids)):
            fields += [T.StructField(f"cat_score_{i}", T.DoubleType()),
                       T.StructField(f"cat_spend_{i}", T.DoubleType())]
        for j in range(self.n_top):
            fields += [T.StructField(f"top_{j}_index", T.IntegerType()),
                       T.StructField(f"top_{j}_score", T.DoubleType())]
        for j in range(self.n_drivers):
            fields += [T.StructField(f"driver_{j}_group", T.StringType()),
                       T.StructField(f"driver_{j}_value", T.DoubleType())]
        for g in range(len(self.groups)):
            fields.append(T.StructField(f"contribution_{g}", T.DoubleType()))
        return T.StructType(fields)


def category_scores(prediction: pd.DataFrame, category_ids: Sequence[str]) -> np.ndarray:
    """The (rows, categories) matrix of the p_category_<id> columns of a predict() frame."""
    names = [category_score_column(c) for c in category_ids]
    missing = [n for n in names if n not in prediction.columns]
    if missing:
        raise StageFailed(f"model predict() did not return the category columns {missing}")
    return prediction[names].to_numpy(dtype="float64") if names else np.zeros((len(prediction), 0))


def spend_by_category(expected_spend: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Allots each user's expected spend to categories in proportion to the category scores
    (the model has one spend head; the category head says where a purchase is likely to go)."""
    total = scores.sum(axis=1, keepdims=True)
    share = np.divide(scores, total, out=np.zeros_like(scores), where=total > 0)
    return share * expected_spend[:, None]


def score_frame(model: ScoringModel, batch: pd.DataFrame, plan: ScoringPlan) -> pd.DataFrame:
    """Scores one pandas batch (key, inputs, explain flag) into the UDF's flat output columns."""
    inputs = batch[list(plan.input_columns)]
    prediction = model.predict(inputs)
    p = prediction["p_purchase"].to_numpy(dtype="float64")
    spend = prediction["expected_spend"].to_numpy(dtype="float64")
    out: dict[str, object] = {USER_KEY: batch[USER_KEY].to_numpy(), "p_purchase": p,
                              "expected_spend": spend}
    scores = category_scores(prediction, plan.category_ids)
    allotted = spend_by_category(spend, scores)
    for i in range(scores.shape[1]):
        out[f"cat_score_{i}"] = scores[:, i]
        out[f"cat_spend_{i}"] = allotted[:, i]
    if plan.n_top:
        order = np.argsort(-scores, axis=1, kind="stable")[:, :plan.n_top]
        top = np.take_along_axis(scores, order, axis=1)
        for j in range(plan.n_top):
            out[f"top_{j}_index"] = order[:, j].astype("int32")
            out[f"top_{j}_score"] = top[:, j]
    frame = pd.DataFrame(out)
    if plan.groups:
        frame = frame.join(_drivers(model, inputs, p, batch[EXPLAIN_FLAG].to_numpy(dtype=bool), plan))
    return frame


def _drivers(model: ScoringModel, inputs: pd.DataFrame, p: np.ndarray, explain: np.ndarray,
             plan: ScoringPlan) -> pd.DataFrame:
    """Driver and contribution columns: null for the rows that are not explained."""
    n, n_groups = len(inputs), len(plan.groups)
    contributions = np.full((n, n_groups), np.nan)
    names = np.full((n, plan.n_drivers), None, dtype=object)
    values = np.full((n, plan.n_drivers), np.nan)
    rows = np.flatnonzero(explain)
    if len(rows):
        subset = inputs.iloc[rows].reset_index(drop=True)
        contrib = occlusion_contributions(
            lambda frame: model.predict(frame)["p_purchase"].to_numpy(dtype="float64"),
            subset, p[rows], plan.groups, plan.typical)
        contributions[rows] = contrib
        names[rows], values[rows] = top_drivers(contrib, list(plan.groups), plan.n_drivers)
    out = {}
    for j in range(plan.n_drivers):
        out[f"driver_{j}_group"] = names[:, j]
        out[f"driver_{j}_value"] = values[:, j]
    for g in range(n_groups):
        out[f"contribution_{g}"] = contributions[:, g]
    return pd.DataFrame(out, index=inputs.index)


def score_batches(plan: ScoringPlan, batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The mapInPandas function: one model per worker process, one predict per Arrow batch."""
    model = cached_model(plan.model_dir, plan.loader)
    for batch in batches:
        yield score_frame(model, batch, plan)


def score_users(inputs: DataFrame, plan: ScoringPlan) -> DataFrame:
    """Scores every row of `inputs` (see udf_inputs) on the executors."""
    return inputs.mapInPandas(functools.partial(score_batches, plan), plan.output_schema())


def decile_edges(scored: DataFrame, relative_error: float = 1e-4) -> list[float]:
    """The 10th..90th percentiles of p_purchase (approximate quantiles: no single-partition sort)."""
    return scored.approxQuantile("p_purchase", [i / 10 for i in range(1, 10)], relative_error)


@dataclass
class ScoredSnapshot:
    """The UDF output of one snapshot, cached once and reused by every table written from it."""

    frame: DataFrame
    plan: ScoringPlan
    n_users: int
    n_explained: int
    deciles: list[float]

    def release(self) -> None:
        self.frame.unpersist()


def score_snapshot(features: DataFrame, plan: ScoringPlan, explain: Column) -> ScoredSnapshot:
    """Runs the UDF over the snapshot once and keeps the result for the table writes."""
    inputs = udf_inputs(features, plan.input_columns, explain)
    scored = score_users(inputs, plan).persist(StorageLevel.MEMORY_AND_DISK)
    stats = scored.agg(F.count(F.lit(1)).alias("n"), F.countDistinct(USER_KEY).alias("keys"),
                       F.count(USER_KEY).alias("with_key"),
                       F.count("driver_0_group" if plan.n_drivers else F.lit(None)).alias("explained"),
                       F.sum(F.when(F.isnan("p_purchase") | F.col("p_purchase").isNull(), 1)
                             .otherwise(0)).alias("bad")).first()
    if stats["n"] != stats["keys"]:
        scored.unpersist()
        # countDistinct skips nulls: rows without a key are not "duplicates" (and say so).
        problems = [f"{stats['n'] - stats['with_key']} rows without a user_key"] \
            if stats["n"] != stats["with_key"] else []
        if stats["with_key"] != stats["keys"]:
            problems.append(f"{stats['with_key'] - stats['keys']} duplicate user_key rows")
        raise DataQualityError(f"the feature snapshot has {' and '.join(problems)}; "
                               "nothing was written")
    if stats["bad"]:
        scored.unpersist()
        raise StageFailed(f"the model returned NaN p_purchase for {stats['bad']} users; "
                          "nothing was written")
    return ScoredSnapshot(scored, plan, int(stats["n"]), int(stats["explained"] or 0),
                          decile_edges(scored))
