"""How close to the oracle can any scorer on the training features get? (simulated data only)

The best scorer that sees only the features x is E[y | x] = E[p_true | x]. This script estimates
it by regressing the simulator's true probability p_true on the features (LightGBM; a far less
noisy target than the 0/1 labels) on the train split, and reports its test AUC beside the
oracle's and LightGBM-on-labels'. If that ceiling sits well below the oracle, the gap is in the
features (latent propensities 180 days of history do not reveal), not in the model.
Read-only on the warehouse.

    .venv/bin/python bench/oracle_ceiling.py --conf conf/demo.yaml --training-set-version 1
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.harness import emit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default="conf/demo.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--training-set-version", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()

    import lightgbm as lgb
    from pyspark.sql import functions as F
    from sklearn.metrics import roc_auc_score

    from demandcast.config import load_config
    from demandcast.session import build_spark_session
    from demandcast.tables import absolute_uri, table_path
    from features.ingest.pseudonymise import resolve_hash_key, with_user_key

    cfg = load_config(args.conf, args.overrides)
    spark = build_spark_session("oracle-ceiling", cfg.spark)
    rows = (spark.read.format("delta").option("versionAsOf", args.training_set_version)
            .load(table_path(cfg.warehouse, "training_set")))
    truth = (spark.read.format("delta").load(f"{absolute_uri(cfg.raw_dir)}/ground_truth")
             .where(F.col("window_days") == cfg.label_window_days)
             .select("user_id", F.col("cutoff_date").alias("snapshot_date"),
                     F.col("p_purchase").alias("oracle_p")))
    keyed = with_user_key(truth, resolve_hash_key(cfg.user_hash_key_env, cfg.env)).drop("user_id")
    df = rows.join(keyed, ["user_key", "snapshot_date"], "inner").toPandas()
    spark.stop()

    skip = {"user_key", "snapshot_date", "split", "oracle_p"}
    features = [c for c in df if c not in skip and not c.startswith("label_")]
    for c in features:
        if df[c].dtype == object:
            df[c] = df[c].astype("category")
    train, test = df[df.split == "train"], df[df.split == "test"]
    y = "label_purchased"

    def fit(target: str, objective: str):
        model = lgb.LGBMRegressor(objective=objective, n_estimators=args.rounds, learning_rate=0.02,
                                  num_leaves=31, min_child_samples=20, subsample=0.8,
                                  subsample_freq=1, colsample_bytree=0.8, verbose=-1,
                                  random_state=cfg.seed)
        return model.fit(train[features], train[target]).predict(test[features])

    ceiling = fit("oracle_p", "regression")
    on_labels = fit(y, "binary")
    residual = test["oracle_p"].to_numpy() - ceiling
    emit("oracle_ceiling", {
        "training_set_version": args.training_set_version, "features": len(features),
        "train_rows": len(train), "test_rows": len(test),
        "roc_auc": {"oracle": round(roc_auc_score(test[y], test["oracle_p"]), 4),
                    "best_on_features_E[p_true|x]": round(roc_auc_score(test[y], ceiling), 4),
                    "lightgbm_on_labels": round(roc_auc_score(test[y], on_labels), 4)},
        "p_true_r2_from_features": round(1 - np.mean(residual ** 2) / np.var(test["oracle_p"]), 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
    })


if __name__ == "__main__":
    main()
