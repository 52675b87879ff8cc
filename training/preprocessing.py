"""Preprocessing state computed once in Spark from the train split and saved with the model.

Numeric features: signed log1p, then standardised with the train mean and std, plus quantile
bucket boundaries for the wide part and quantile bin edges for the deep part's piecewise-linear
embeddings. Categorical features: a vocabulary of frequent values
(index 0 is "unknown"). Crosses: lists of features hashed together into buckets. The state is
plain JSON; the Keras model builds its preprocessing layers from it, so training, evaluation and
scoring apply identical transforms.
"""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from demandcast.errors import DataQualityError
from demandcast.settings.train import TrainSettings
from training.dataset import TrainingSet, all_null_error, category_label_column

STATE_FILE = "preprocessing.json"
MAX_AUTO_CROSSES = 12


def signed_log1p(column: str):
    """The same transform as model.NumericFeature: heavy-tailed counts and amounts get tamed."""
    x = F.col(column).cast("double")
    return F.signum(x) * F.log1p(F.abs(x))


def distinct_finite(values) -> list[float]:
    return sorted({float(v) for v in values if v is not None and math.isfinite(v)})


def numeric_statistics(train: DataFrame, numeric: tuple[str, ...], buckets: int,
                       embedding_bins: int = 0) -> dict:
    """Mean, std and quantiles of every numeric feature after signed log1p, in two Spark passes.

    `boundaries` (buckets - 1 inner quantiles) bucketise the wide part; `embedding_edges`
    (embedding_bins + 1 quantiles from the minimum to the maximum, ties merged) are the bins of
    the deep part's piecewise-linear embeddings (absent when embedding_bins is 0).
    """
    if not numeric:
        return {}
    moments = train.select(*[
        agg for c in numeric for agg in (
            F.mean(signed_log1p(c)).alias(f"{c}__mean"),
            F.stddev_pop(signed_log1p(c)).alias(f"{c}__std"),
            F.count(F.col(c)).alias(f"{c}__n"))
    ]).first().asDict()
    all_null = [c for c in numeric if moments[f"{c}__n"] == 0]
    if all_null:  # a pinned version; a new training set is refused before it is written
        raise all_null_error(all_null)
    bucket_probs = [i / buckets for i in range(1, buckets)]
    edge_probs = [i / embedding_bins for i in range(embedding_bins + 1)] if embedding_bins else []
    probabilities = sorted(set(bucket_probs) | set(edge_probs))
    transformed = train.select(*[signed_log1p(c).alias(c) for c in numeric])
    quantiles = transformed.approxQuantile(list(numeric), probabilities, 0.001)
    stats = {}
    for column, values in zip(numeric, quantiles):
        at = dict(zip(probabilities, values))
        std = moments[f"{column}__std"] or 0.0
        stats[column] = {
            "mean": float(moments[f"{column}__mean"]),
            # A constant column keeps std 1 so it maps to 0 rather than dividing by zero.
            "std": float(std) if std > 1e-9 else 1.0,
            "boundaries": distinct_finite(at[q] for q in bucket_probs),
        }
        if edge_probs:
            stats[column]["embedding_edges"] = distinct_finite(at[q] for q in edge_probs)
    return stats


def vocabularies(train: DataFrame, categorical: tuple[str, ...], max_size: int,
                 min_count: int) -> dict:
    """The frequent values of every categorical column, in one Spark pass over the train rows."""
    if not categorical:
        return {}
    pairs = F.explode(F.array(*[
        F.struct(F.lit(c).alias("feature"), F.col(c).cast("string").alias("value"))
        for c in categorical]))
    counts = (train.select(pairs.alias("p")).select("p.feature", "p.value")
              .where(F.col("value").isNotNull() & (F.col("value") != ""))
              .groupBy("feature", "value").count().where(F.col("count") >= min_count).collect())
    by_feature: dict[str, list[tuple[int, str]]] = {c: [] for c in categorical}
    for row in counts:
        by_feature[row.feature].append((-int(row["count"]), row.value))
    return {c: {"vocabulary": [v for _, v in sorted(vals)[:max_size]]}
            for c, vals in by_feature.items()}


def default_crosses(numeric: tuple[str, ...], categorical: tuple[str, ...]) -> list[list[str]]:
    """Every pair of categoricals, then categoricals x the first numerics (as buckets)."""
    pairs = [list(p) for p in itertools.combinations(categorical, 2)]
    pairs += [[c, n] for c in categorical for n in numeric[:2]]
    if not categorical:
        pairs = [list(p) for p in itertools.combinations(numeric[:4], 2)]
    return pairs[:MAX_AUTO_CROSSES]


def label_statistics(train: DataFrame, n_categories: int) -> dict:
    row = train.select(
        F.mean("label_purchased").alias("base_rate"), F.mean("label_spend").alias("spend_mean"),
        *[F.mean(category_label_column(i)).alias(f"cat{i}") for i in range(n_categories)],
        F.count(F.lit(1)).alias("rows")).first()
    return {
        "rows": int(row["rows"]),
        "base_rate": float(row["base_rate"] or 0.0),
        "spend_mean": float(row["spend_mean"] or 0.0),
        "category_rates": [float(row[f"cat{i}"] or 0.0) for i in range(n_categories)],
    }


def compute_state(training_set: TrainingSet, train: DataFrame, settings: TrainSettings) -> dict:
    """Everything the model's preprocessing layers need, from the train split only."""
    cols = training_set.columns
    crosses = [list(c) for c in settings.crosses] or default_crosses(cols.numeric, cols.categorical)
    known = set(cols.numeric) | set(cols.categorical)
    for cross in crosses:
        unknown = [c for c in cross if c not in known]
        if unknown:
            raise DataQualityError(f"train.crosses names {unknown}, which are not feature columns "
                                   f"of training_set (features: {sorted(known)})")
    labels = label_statistics(train, len(training_set.category_ids))
    if labels["rows"] == 0:
        raise DataQualityError("the train split is empty")
    if labels["base_rate"] in (0.0, 1.0):
        raise DataQualityError(f"label_purchased is constant ({labels['base_rate']}) in the train "
                               "split: nothing to learn")
    return {
        "numeric": numeric_statistics(train, cols.numeric, settings.numeric_buckets,
                                      settings.numeric_embedding_bins),
        "categorical": vocabularies(train, cols.categorical, settings.vocab_max_size,
                                    settings.vocab_min_count),
        # Null numerics get a wide bucket of their own and a null flag in the deep part.
        "numeric_missing": True,
        "feature_order": [*cols.numeric, *cols.categorical],
        "crosses": crosses,
        "cross_hash_buckets": settings.cross_hash_buckets,
        "category_ids": list(training_set.category_ids),
        "labels": labels,
        # Platt scaling of the purchase logit, fitted on validation rows after training.
        "calibration": {"method": "none", "a": 1.0, "b": 0.0},
    }


def input_columns(state: dict) -> dict[str, str]:
    return {**{c: "numeric" for c in state["numeric"]},
            **{c: "categorical" for c in state["categorical"]}}


def save_state(state: dict, folder: str | Path) -> Path:
    path = Path(folder) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=1, sort_keys=True))
    return path


def load_state(folder: str | Path) -> dict:
    return json.loads((Path(folder) / STATE_FILE).read_text())
