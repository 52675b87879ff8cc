"""A small feature snapshot, a models table and model directories for the scoring tests.

`LinearScoringModel` is a deterministic stand-in for the trained Wide & Deep model with the same
interface as training.model_directory.load_scoring_model (input_columns, category_ids, predict), saved
as JSON in a model directory. It fills missing numerics with the training mean and maps unknown
categories to zero, as the real preprocessing does. The scoring machinery (UDF, caching, table
writes) is model-agnostic; the real model is exercised by test_scoring_real_model.py.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Sequence


import numpy as np
import pytest
import pandas as pd
from pyspark import cloudpickle  # the copy Spark pickles UDFs with

from demandcast.tables import NO_DELETION_VECTORS, TableSpec, write_table
from training.model_directory import category_score_column

MODELS_SPEC = TableSpec("models", "test models", properties=NO_DELETION_VECTORS)
FEATURES_SPEC = TableSpec("user_features", "test features", ("snapshot_date",),
                          properties=NO_DELETION_VECTORS)
SNAPSHOTS = [dt.date(2026, 3, 1), dt.date(2026, 4, 1)]
CREATED = dt.datetime(2026, 4, 2, 12, 0)
N_USERS = 400
PROJECT_ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = ["books", "garden", "toys", "tech"]
FEATURE_SCHEMA = ("user_key string, snapshot_date date, days_since_last_purchase double, "
                  "purchases_last_30d long, spend_last_30d double, sessions_last_7d int, "
                  "region string, device string")
INPUTS = {"days_since_last_purchase": "numeric", "purchases_last_30d": "numeric",
          "spend_last_30d": "numeric", "sessions_last_7d": "numeric",
          "region": "categorical", "device": "categorical"}


def feature_frame(n_users: int, snapshot: dt.date, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Users with missing values in places (null recency, null region) and an optional shift of
    the session counts (drift)."""
    rng = np.random.default_rng(seed)
    purchases = rng.poisson(1.2, n_users)
    days = np.where(purchases > 0, rng.integers(0, 90, n_users).astype(float), np.nan)
    region = rng.choice(["north", "south", "east", "west"], n_users).astype(object)
    region[rng.random(n_users) < 0.05] = None
    return pd.DataFrame({
        "user_key": [f"key{i:05d}" for i in range(n_users)],
        "snapshot_date": snapshot,
        "days_since_last_purchase": days,
        "purchases_last_30d": purchases.astype("int64"),
        "spend_last_30d": np.round(purchases * rng.gamma(2.0, 15.0, n_users), 2),
        "sessions_last_7d": (rng.poisson(3 + shift, n_users)).astype("int32"),
        "region": region,
        "device": rng.choice(["mobile", "desktop"], n_users),
    })


def write_features(spark, warehouse: str, frames: Sequence[pd.DataFrame]) -> int:
    data = pd.concat(frames, ignore_index=True)
    rows = data.astype(object).where(data.notna(), None).values.tolist()
    return write_table(spark.createDataFrame(rows, FEATURE_SCHEMA), warehouse, FEATURES_SPEC,
                       "overwrite")


class LinearScoringModel:
    """p = sigmoid(w . standardised numerics + one-hot weights); category scores likewise."""

    def __init__(self, state: dict) -> None:
        self.state = state
        self.input_columns = dict(state["input_columns"])
        self.category_ids = list(state["category_ids"])

    def _design(self, features: pd.DataFrame) -> np.ndarray:
        parts = []
        for column, kind in self.input_columns.items():
            if kind == "numeric":
                x = pd.to_numeric(features[column], errors="coerce").to_numpy(dtype="float64")
                mean, std = self.state["mean"][column], self.state["std"][column]
                parts.append((np.where(np.isnan(x), mean, x) - mean) / std)
            else:
                values = features[column].astype(object)
                for value in self.state["vocabulary"][column]:
                    parts.append((values == value).to_numpy(dtype="float64"))
        return np.column_stack(parts)

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        x = self._design(features)
        w = np.asarray(self.state["weights"])            # (d, 2 + categories)
        z = x @ w + np.asarray(self.state["bias"])
        p = 1 / (1 + np.exp(-z[:, 0]))
        out = {"p_purchase": p, "expected_spend": p * 40 * np.exp(0.3 * np.tanh(z[:, 1]))}
        for i, c in enumerate(self.category_ids):
            out[category_score_column(c)] = 1 / (1 + np.exp(-z[:, 2 + i]))
        return pd.DataFrame(out, index=features.index)


def load_linear_model(model_dir: str) -> LinearScoringModel:
    """Loads the model and records the loading process id in loads.log (the caching test)."""
    with open(Path(model_dir) / "loads.log", "a") as log:
        log.write(f"{os.getpid()}\n")
    return LinearScoringModel(json.loads((Path(model_dir) / "model.json").read_text()))


# Workers cannot import tests/: ship this module's functions and classes by value.
import sys as _sys  # noqa: E402

cloudpickle.register_pickle_by_value(_sys.modules[__name__])


def save_linear_model(model_dir: Path, reference: pd.DataFrame, seed: int,
                      inputs: dict[str, str] | None = None) -> Path:
    inputs = dict(inputs or INPUTS)
    rng = np.random.default_rng(seed)
    numeric = [c for c, k in inputs.items() if k == "numeric"]
    vocab = {c: sorted(v for v in reference[c].dropna().unique()) for c, k in inputs.items()
             if k == "categorical"}
    width = len(numeric) + sum(len(v) for v in vocab.values())
    state = {
        "input_columns": inputs, "category_ids": CATEGORIES,
        "mean": {c: float(reference[c].mean()) for c in numeric},
        "std": {c: float(reference[c].std() or 1.0) for c in numeric},
        "vocabulary": vocab,
        "weights": rng.normal(0, 0.6, (width, 2 + len(CATEGORIES))).tolist(),
        "bias": rng.normal(-0.5, 0.3, 2 + len(CATEGORIES)).tolist(),
    }
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model.json").write_text(json.dumps(state))
    return model_dir


def write_models_table(spark, warehouse: str, rows: list[tuple]) -> int:
    """rows: (model_version, val_roc_auc, model_dir, train snapshot, created_at[, status]), in
    the columns of training.lineage's models table that scoring reads; status by default
    champion (what score uses unless a version is pinned)."""
    df = spark.createDataFrame(
        [(v, c, d, [t], m, s[0] if s else "champion") for v, m, d, t, c, *s in rows],
        "model_version string, created_at timestamp, model_dir string, snapshot_dates array<date>, "
        "val_roc_auc double, status string")
    return write_table(df, warehouse, MODELS_SPEC, "overwrite")


def save_wide_and_deep(features, model_dir: Path, model_version: str,
                       inputs: dict[str, str] | None = None, hidden_units=(16, 8)) -> Path:
    """A real model directory (training.model_directory layout, SavedModel with its preprocessing
    layers) of the project's Wide & Deep model, statistics from `features` (a Spark frame),
    weights at their initial values: scoring needs the real graph and I/O, not a fit."""
    from training.model import ModelParams, build_model
    from training.model_directory import save_model_dir
    from training.preprocessing import numeric_statistics, vocabularies

    inputs = dict(inputs or INPUTS)
    numeric = tuple(c for c, k in inputs.items() if k == "numeric")
    categorical = tuple(c for c, k in inputs.items() if k == "categorical")
    state = {
        "numeric": numeric_statistics(features, numeric, 8),
        "categorical": vocabularies(features, categorical, 100, 1),
        "feature_order": [*numeric, *categorical],
        "crosses": [list(categorical[:2])] if len(categorical) >= 2 else [],
        "cross_hash_buckets": 64,
        "category_ids": CATEGORIES,
        "labels": {"rows": 1000, "base_rate": 0.3, "spend_mean": 40.0,
                   "category_rates": [0.1, 0.08, 0.05, 0.02]},
        "calibration": {"method": "none", "a": 1.0, "b": 0.0},
    }
    params = ModelParams(embedding_dim=4, hidden_units=tuple(hidden_units), dropout=0.0, l2=0.0)
    model = build_model(state, params)
    info = {"model_version": model_version,
            "params": {"embedding_dim": 4, "hidden_units": list(hidden_units), "dropout": 0.0,
                       "l2": 0.0}}
    return save_model_dir(model, state, model_dir, info, metrics={})


_SHARED: dict[str, dict] = {}


@pytest.fixture(scope="session")
def scored_world(spark, tmp_path_factory):
    """Built once per session even though two test modules import this fixture."""
    if "world" not in _SHARED:
        _SHARED["world"] = _build_scored_world(spark, tmp_path_factory)
    return _SHARED["world"]


def _build_scored_world(spark, tmp_path_factory) -> dict:
    """One warehouse shared by the scoring and consumer tests (two scoring runs in all):
    two snapshots of features (sessions shifted in the second), models m1 and m2 (the champion,
    by status, not by its higher val_roc_auc) and m3 without a metric; the default run scores
    snapshot 2 with m2 and explains a subset, then m1 (pinned) scores the same snapshot beside it."""
    from demandcast.config import load_config
    from training.scoring.stage import run_score

    tmp = tmp_path_factory.mktemp("scored")
    warehouse = str(tmp / "warehouse")
    train = feature_frame(N_USERS, SNAPSHOTS[0], seed=1)
    current = feature_frame(N_USERS, SNAPSHOTS[1], seed=2, shift=2.0)
    write_features(spark, warehouse, [train, current])
    models = tmp / "runs" / "models"
    m1 = save_linear_model(models / "m1", train, seed=11)
    m2 = save_linear_model(models / "m2", train, seed=12)
    write_models_table(spark, warehouse, [
        ("m1", 0.70, str(m1), SNAPSHOTS[0], CREATED, "retired"),
        ("m2", 0.65, str(m2), SNAPSHOTS[0], CREATED, "champion"),
        ("m3", None, str(models / "m3"), SNAPSHOTS[0], CREATED, "challenger"),
    ])
    cfg = load_config(PROJECT_ROOT / "conf" / "local.yaml", [
        f"warehouse={warehouse}", f"runs_dir={tmp / 'runs'}", "spark.arrow_batch_size=64",
        "score.explain_fraction=0.1", "score.explain_user_keys=[key00007]",
        "score.feature_groups={recency: [days_since_last_purchase], "
        "activity: [purchases_last_30d, spend_last_30d, sessions_last_7d]}"])
    summary = run_score(spark, cfg, loader=load_linear_model)
    m2_loads = (m2 / "loads.log").read_text().split()
    pinned = cfg.model_copy(update={"score": cfg.score.model_copy(update={"model_version": "m1"})})
    summary_m1 = run_score(spark, pinned, loader=load_linear_model)
    return {"cfg": cfg, "summary": summary, "summary_m1": summary_m1, "current": current,
            "train": train, "m1": m1, "m2": m2, "warehouse": warehouse, "m2_loads": m2_loads}
