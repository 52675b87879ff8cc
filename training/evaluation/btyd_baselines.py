"""The field's reference models as baselines: BG/NBD and Pareto/NBD (and Gamma-Gamma for spend),
and a logistic regression over recency, frequency, monetary value and their expected counts.

The models are fitted per snapshot on the purchases before it, in the features stage
(features.families.btyd), and their scores are feature columns of the training set: the
baselines read them on the same test rows and labels as the other scorers. A model's score is
its expected purchase days in the label window, turned into a probability by a logistic
calibration fitted on the train split (log expected count and a no-purchase flag): monotone in
the expected count among customers, so it keeps the model's ranking of them, and it gives users
without a purchase before the snapshot, whom the models do not describe, the rate such users
had in train. Log loss and Brier score are then comparable with the other scorers'.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from features.families.btyd import definitions as btyd_definitions
from features.feature_spec import FeatureSpec

# Recency, frequency and monetary value among the catalog's features (default windows).
RFM_FEATURES = ("days_since_last_purchase", "days_since_first_event", "purchases_last_365d",
                "purchases_last_90d", "spend_last_365d", "active_days_last_30d")


def btyd_columns(label_window_days: int) -> dict[str, str]:
    """Scorer name -> its feature column (the expected purchase days in the label window)."""
    names = [f.name for f in btyd_definitions(FeatureSpec(label_window_days=label_window_days))]
    return {"bgnbd": names[0], "pareto_nbd": names[2]}


def spend_column(label_window_days: int) -> str:
    return btyd_definitions(FeatureSpec(label_window_days=label_window_days))[4].name


def _design(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """log1p of each column's magnitude with nulls at 0, and one null flag per column."""
    values = np.column_stack([pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64) for c in columns])
    missing, filled = np.isnan(values), np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    return np.hstack([np.sign(filled) * np.log1p(np.abs(filled)), missing.astype(np.float64)])


def calibrated(train: pd.DataFrame, columns: list[str], label: str = "label_purchased"):
    """A logistic regression over _design(columns) fitted on `train`; returns df -> P(buy)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x = _design(train, columns)
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(x), train[label].to_numpy())
    return lambda df: model.predict_proba(scaler.transform(_design(df, columns)))[:, 1]


def btyd_scores(train: pd.DataFrame, test: pd.DataFrame, label_window_days: int
                ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(P(buy) on `test` per scorer, the reason per scorer skipped).

    Scorers: `bgnbd`, `pareto_nbd` (calibrated expected counts) and
    `logistic_regression_rfm_btyd` (RFM features plus both expected counts and P(alive))."""
    probabilities, skipped = {}, {}
    for name, column in btyd_columns(label_window_days).items():
        if column not in test.columns:
            skipped[name] = f"feature {column!r} is not a model input (left out or excluded)"
            continue
        if pd.to_numeric(train[column], errors="coerce").notna().sum() == 0:
            skipped[name] = f"feature {column!r} is null in every train row (model not fitted)"
            continue
        probabilities[name] = calibrated(train, [column])(test)
    spec = FeatureSpec(label_window_days=label_window_days)
    btyd_inputs = [f.name for f in btyd_definitions(spec)[:4]]
    inputs = [c for c in (*RFM_FEATURES, *btyd_inputs) if c in test.columns
              and pd.to_numeric(train[c], errors="coerce").notna().any()]
    if inputs:
        probabilities["logistic_regression_rfm_btyd"] = calibrated(train, inputs)(test)
    else:
        skipped["logistic_regression_rfm_btyd"] = "no recency, frequency or BTYD feature among the inputs"
    return probabilities, skipped


def expected_spend(test: pd.DataFrame, label_window_days: int) -> np.ndarray | None:
    """BG/NBD x Gamma-Gamma expected spend (0 for users without a purchase history); None when
    the feature is not among the inputs or was never fitted."""
    column = spend_column(label_window_days)
    if column not in test.columns:
        return None
    values = pd.to_numeric(test[column], errors="coerce").to_numpy(np.float64)
    return None if np.isnan(values).all() else np.nan_to_num(values, nan=0.0)
