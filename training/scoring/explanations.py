"""Per-user drivers of p_purchase by occlusion over feature groups.

A group's contribution for a user is p_purchase with the user's own values minus p_purchase with
the group's columns set to the training snapshot's typical values (median or most frequent
value). Positive means the user's values raise the propensity. All groups of a batch are scored
in one `predict` call over stacked copies of the rows, so the cost is one model call per batch.
"""
from __future__ import annotations

from typing import Callable, Collection, Mapping, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from demandcast.errors import ConfigError
from demandcast.logs import get_logger

log = get_logger("explain")


def feature_groups(input_columns: Sequence[str], configured: Mapping[str, Sequence[str]],
                   table_columns: Collection[str]) -> dict[str, list[str]]:
    """The configured groups restricted to the model's inputs; every other input is its own group.

    A configured column that is no column of the feature table (`table_columns`) is a typo and
    stops the stage; one the table has but this model does not use (excluded from its training)
    is left out with a warning, so one setting serves models trained on different features."""
    known = set(table_columns)
    unknown = [f"score.feature_groups.{group}: {sorted(set(columns) - known)}"
               for group, columns in configured.items() if not known.issuperset(columns)]
    if unknown:
        raise ConfigError(f"not columns of user_features (see the feature catalog): {'; '.join(unknown)}")
    inputs = set(input_columns)
    groups: dict[str, list[str]] = {}
    for group, columns in configured.items():
        kept = [c for c in columns if c in inputs]
        dropped = sorted(set(columns) - inputs)
        if dropped:
            log.warning("feature group %s: %s are not inputs of this model", group, dropped)
        if kept:
            groups[group] = kept
    grouped = {c for cols in groups.values() for c in cols}
    for column in input_columns:
        if column not in grouped:
            groups[column] = [column]
    return groups


def occlusion_contributions(predict_p: Callable[[pd.DataFrame], np.ndarray], rows: pd.DataFrame, base_p: np.ndarray,
                            groups: Mapping[str, Sequence[str]], typical: Mapping[str, object]
                            ) -> np.ndarray:
    """Contribution of each group (columns of the result, in `groups` order) for each row.

    `predict_p(frame) -> ndarray` is p_purchase of the model on `frame`.
    """
    n = len(rows)
    if n == 0 or not groups:
        return np.zeros((n, len(groups)))
    copies = []
    for columns in groups.values():
        occluded = rows.copy()
        for column in columns:
            occluded[column] = typical.get(column)
        copies.append(occluded)
    p_occluded = np.asarray(predict_p(pd.concat(copies, ignore_index=True)), dtype="float64")
    return base_p[:, None] - p_occluded.reshape(len(groups), n).T


def top_drivers(contributions: np.ndarray, group_names: Sequence[str], top_n: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Names and contributions of the `top_n` groups with the largest |contribution| per row."""
    k = min(top_n, contributions.shape[1])
    order = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :k]
    names = np.asarray(group_names, dtype=object)[order]
    values = np.take_along_axis(contributions, order, axis=1)
    return names, values


def global_importance(scored: DataFrame, contribution_columns: Mapping[str, str]
                      ) -> list[dict[str, object]]:
    """Mean |contribution| (and mean signed contribution) of each group over the explained users,
    from the per-group contribution columns (null for users not explained), in one aggregation."""
    if not contribution_columns:
        return []
    aggs = []
    for i, column in enumerate(contribution_columns.values()):
        aggs += [F.avg(F.abs(F.col(column))).alias(f"a{i}"), F.avg(F.col(column)).alias(f"m{i}")]
    row = scored.agg(*aggs).first()
    out = [{"feature_group": group,
            "mean_abs_contribution": row[f"a{i}"], "mean_contribution": row[f"m{i}"]}
           for i, group in enumerate(contribution_columns)]
    out = [r for r in out if r["mean_abs_contribution"] is not None]
    return sorted(out, key=lambda r: -r["mean_abs_contribution"])
