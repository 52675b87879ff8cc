"""Small user_features + labels tables that follow docs/CONTRACTS.md, with a planted signal.

Used by the training and evaluation tests until (and besides) the real features stage: the
purchase probability depends on recency, frequency, sessions and a region x device interaction,
so a model using all features beats the recency rule, and the true probability is known.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os

import numpy as np
import pandas as pd

from demandcast.tables import NO_DELETION_VECTORS, TableSpec, write_table

FEATURES_SPEC = TableSpec("user_features", "test features", ("snapshot_date",),
                          properties=NO_DELETION_VECTORS)
LABELS_SPEC = TableSpec("labels", "test labels", ("snapshot_date",), properties=NO_DELETION_VECTORS)
CATEGORIES = ["books", "garden", "toys", "tech"]
SNAPSHOTS = [dt.date(2026, 3, 1), dt.date(2026, 4, 1)]


def user_key(user_id: str) -> str:
    """HMAC-SHA256 as features.ingest.pseudonymise computes it, with the test key from conftest."""
    secret = os.environ["DEMANDCAST_USER_HASH_KEY"].encode()
    return hmac.new(secret, user_id.encode(), hashlib.sha256).hexdigest()


def simulate(n_users: int, snapshots: list[dt.date], seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for s, snapshot in enumerate(snapshots):
        n = n_users
        purchases = rng.poisson(1.2, n)
        days = np.where(purchases > 0, rng.integers(0, 90, n), np.nan)
        sessions = rng.poisson(3, n)
        region = rng.choice(["north", "south", "east", "west"], n)
        device = rng.choice(["mobile", "desktop"], n)
        top_category = np.where(purchases > 0, rng.choice(CATEGORIES, n), None)
        logit = (-1.6 + 0.7 * np.log1p(purchases) - 0.02 * np.nan_to_num(days, nan=120)
                 + 0.25 * sessions + 1.4 * ((region == "north") & (device == "mobile"))
                 - 0.8 * ((region == "south") & (device == "desktop")))
        p = 1 / (1 + np.exp(-logit))
        bought = rng.random(n) < p
        spend = np.where(bought, rng.gamma(2.0, 20.0, n) * (1 + purchases * 0.2), 0.0)
        frames.append(pd.DataFrame({
            "user_id": [f"u{i:05d}" for i in range(n)],
            "user_key": [user_key(f"u{i:05d}") for i in range(n)],
            "snapshot_date": snapshot,
            "days_since_last_purchase": days,
            "purchases_last_30d": purchases.astype("int64"),
            "spend_last_30d": np.round(purchases * rng.gamma(2.0, 15.0, n), 2),
            "sessions_last_7d": sessions.astype("int32"),
            "region": region, "device": device, "top_category": top_category,
            "p_true": p,
            "label_purchased": bought.astype("int32"),
            "label_spend": spend,
            "label_n_purchases": (bought * (1 + rng.poisson(0.5, n))).astype("int32"),
            "bought_category": np.where(bought, rng.choice(CATEGORIES, n, p=[0.4, 0.3, 0.2, 0.1]), None),
        }))
    return pd.concat(frames, ignore_index=True)


def write_contract_tables(spark, warehouse: str, data: pd.DataFrame) -> tuple[int, int]:
    """Writes user_features and labels (contract types) and returns their versions."""
    feature_cols = ["user_key", "snapshot_date", "days_since_last_purchase", "purchases_last_30d",
                    "spend_last_30d", "sessions_last_7d", "region", "device", "top_category"]
    features = spark.createDataFrame(
        data[feature_cols].astype(object).where(data[feature_cols].notna(), None).values.tolist(),
        "user_key string, snapshot_date date, days_since_last_purchase double, "
        "purchases_last_30d long, spend_last_30d double, sessions_last_7d int, region string, "
        "device string, top_category string")
    label_rows = [
        (r.user_key, r.snapshot_date, int(r.label_purchased), float(r.label_spend),
         int(r.label_n_purchases), {r.bought_category: float(r.label_spend)} if r.bought_category else {})
        for r in data.itertuples()
    ]
    labels = spark.createDataFrame(
        label_rows, "user_key string, snapshot_date date, label_purchased int, label_spend double, "
        "label_n_purchases int, label_category_spend map<string,double>")
    return (write_table(features, warehouse, FEATURES_SPEC, "overwrite"),
            write_table(labels, warehouse, LABELS_SPEC, "overwrite"))


def write_ground_truth(spark, raw_dir: str, data: pd.DataFrame, window_days: int = 30) -> None:
    """The simulator's ground_truth contract (raw user ids, true probabilities) for the oracle."""
    rows = [(r.user_id, r.snapshot_date, window_days, float(r.p_true), float(r.p_true) * 40.0, {}, {})
            for r in data.itertuples()]
    df = spark.createDataFrame(rows, "user_id string, cutoff_date date, window_days int, "
                               "p_purchase double, expected_spend double, "
                               "p_purchase_by_category map<string,double>, "
                               "expected_spend_by_category map<string,double>")
    df.write.format("delta").mode("overwrite").save(f"{raw_dir}/ground_truth")
