"""`evaluate`: the model and its baselines on the model's own test split, same metrics, one run.

The protocol is the one the training set was built with (train.protocol): `holdout` (users held
out by a stable hash at the same snapshots) or `out_of_time` (the last snapshot is the test set).
On simulated data the oracle (the simulator's true probabilities) is scored too.

The driver holds at most `evaluate.max_driver_rows` test rows: a larger test split is evaluated
on a uniform sample of that many rows (joined to the oracle in Spark), and metrics.json, the
report and the summary say so. The baselines fit on at most `evaluate.baseline_max_rows` rows.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from demandcast.config import PipelineConfig
from demandcast.errors import StageFailed
from demandcast.logs import get_logger
from demandcast.run_folders import local_dir
from demandcast.tables import absolute_uri, is_delta_table, read_table, table_path
from training import metrics as M
from training.dataset import KEYS, TrainingSet, category_label_column
from training.evaluation.btyd_baselines import btyd_scores, expected_spend
from training.evaluation.baselines import WideIds, lightgbm, logistic_regression, recency_scores
from training.evaluation.report import html_report
from training.evaluation.sampling import collect_bounded
from training.lineage import latest_model_version, model_record, record_evaluation
from training.model_directory import (EVALUATION_FILES, load_failed, load_keras_model,
                                      load_scoring_model, read_model_info, require_model_dir)

log = get_logger("training.evaluation.stage")


def keyed_ground_truth(spark: SparkSession, cfg: PipelineConfig) -> DataFrame | None:
    """The simulator's true p_purchase / expected_spend per (user_key, snapshot), None on real
    data. Resolved before any work: without the hashing key (cluster mode) this fails at once."""
    from features.ingest.pseudonymise import resolve_hash_key, with_user_key

    path = f"{absolute_uri(cfg.raw_dir)}/ground_truth"
    if not is_delta_table(spark, path):
        log.info("no ground truth at %s: no oracle (real data)", path)
        return None
    truth = (spark.read.format("delta").load(path)
             .where(F.col("window_days") == cfg.label_window_days)
             .select("user_id", F.col("cutoff_date").alias("snapshot_date"),
                     F.col("p_purchase").alias("oracle_p"),
                     F.col("expected_spend").alias("oracle_spend")))
    return with_user_key(truth, resolve_hash_key(cfg.user_hash_key_env, cfg.env))


def permutation_importance(predict, df: pd.DataFrame, columns: list[str], y: np.ndarray,
                           seed: int) -> dict[str, float]:
    """AUC lost when one column is shuffled (global importance of the model's inputs)."""
    rng = np.random.default_rng(seed)
    base = M.auc(y, predict(df))
    out = {}
    for column in columns:
        shuffled = df.copy()
        shuffled[column] = df[column].to_numpy()[rng.permutation(len(df))]
        out[column] = float(base - M.auc(y, predict(shuffled)))
    return out


def evaluate(spark: SparkSession, cfg: PipelineConfig) -> dict:
    settings = cfg.evaluate
    truth = keyed_ground_truth(spark, cfg) if settings.oracle else None
    version = settings.model_version or latest_model_version(spark, cfg.warehouse)
    if version is None:
        raise StageFailed("no model to evaluate: the models table is empty; run `train` first")
    record = model_record(spark, cfg.warehouse, version)
    model_dir = record.get("model_dir") or str(local_dir(cfg.runs_dir) / "models" / version)
    if not record and not Path(model_dir).exists():
        # A mistyped pin: say so (as score does), not "no model directory, retrain".
        known = sorted(r[0] for r in read_table(spark, cfg.warehouse, "models")
                       .select("model_version").distinct().collect()) \
            if is_delta_table(spark, table_path(cfg.warehouse, "models")) else []
        raise StageFailed(f"evaluate.model_version {version!r} is not in the models table "
                          f"(versions: {known}) and {model_dir} does not exist")
    require_model_dir(model_dir, EVALUATION_FILES)
    try:
        info = read_model_info(model_dir)
        training_set = TrainingSet.from_json(info["training_set"])
        scoring = load_scoring_model(model_dir)
        keras_model, state = load_keras_model(model_dir)
    except Exception as exc:
        raise load_failed(version, model_dir, exc) from exc
    features = list(scoring.input_columns)
    categories = list(scoring.category_ids)
    label_cols = ["label_purchased", "label_spend",
                  *[category_label_column(i) for i in range(len(categories))]]
    wanted = [*KEYS, *features, *label_cols]

    with_oracle = (lambda df: df.join(truth.select(*KEYS, "oracle_p", "oracle_spend"), list(KEYS),
                                      "left")) if truth is not None else None
    test, test_rows = collect_bounded(training_set.read(spark, "test").select(*wanted),
                                      settings.max_driver_rows, cfg.seed, with_oracle)
    baseline_rows = min(settings.baseline_max_rows, settings.max_driver_rows)
    train, train_rows = collect_bounded(training_set.read(spark, "train").select(*wanted),
                                        baseline_rows, cfg.seed)
    validation, _ = collect_bounded(training_set.read(spark, "validation").select(*wanted),
                                    baseline_rows, cfg.seed)
    if test_rows.sampled:
        log.info("test split: %s (evaluate.max_driver_rows)", test_rows.statement("test rows"))
    y = test["label_purchased"].to_numpy(np.float64)
    if len(y) == 0 or y.sum() in (0, len(y)):
        raise StageFailed(f"the test split of training_set v{training_set.version} has {len(y)} rows "
                          "and one class only: AUC is undefined; retrain on a training set with "
                          "buyers and non-buyers in every split (more snapshots or users)")

    predictions = scoring.predict(test)
    scores: dict[str, np.ndarray] = {"wide_and_deep": predictions["p_purchase"].to_numpy()}
    skipped: dict[str, str] = {}
    if settings.recency_feature in test.columns:
        scores["recency_rule"] = recency_scores(test, settings.recency_feature)
    else:
        skipped["recency_rule"] = f"feature {settings.recency_feature!r} is not a model input"
    scores["logistic_regression_wide"] = logistic_regression(WideIds(keras_model, state), train)(test)
    lgb_predict, lgb_importance = lightgbm(train, validation, state, settings.lightgbm_rounds, cfg.seed)
    scores["lightgbm"] = lgb_predict(test)
    btyd, btyd_skipped = btyd_scores(train, test, cfg.label_window_days)
    scores.update(btyd)
    skipped.update(btyd_skipped)
    btyd_spend = expected_spend(test, cfg.label_window_days)

    # The test rows the simulator knows, in test order (the oracle columns were joined in Spark).
    index = np.flatnonzero(test["oracle_p"].notna().to_numpy()) if truth is not None else []
    oracle_block = None
    if len(index):
        oracle_p = test["oracle_p"].to_numpy(np.float64)[index]
        oracle_block = {
            "coverage": float(len(index) / len(test)),
            "oracle": M.classification_metrics(y[index], oracle_p, settings.threshold,
                                               settings.top_k_percent, settings.calibration_bins),
            "wide_and_deep_same_rows": M.classification_metrics(
                y[index], scores["wide_and_deep"][index], settings.threshold,
                settings.top_k_percent, settings.calibration_bins),
            "oracle_spend": M.spend_errors(test["label_spend"].to_numpy()[index],
                                           test["oracle_spend"].to_numpy(np.float64)[index]),
        }
        if len(index) == len(test):
            scores["oracle"] = oracle_p
    elif settings.oracle:
        skipped["oracle"] = "no simulator ground truth for these rows"

    # The recency rule ranks but is no probability: rank metrics only make sense for it; the
    # probability metrics use its rank turned into (0, 1) so the table stays complete.
    results = {}
    for name, s in scores.items():
        p = s if name != "recency_rule" else pd.Series(s).rank(pct=True).to_numpy() * 0.999
        results[name] = M.classification_metrics(y, p, settings.threshold, settings.top_k_percent,
                                                 settings.calibration_bins)
    curves = {name: M.curves(y, s if np.all(np.isfinite(s)) else np.nan_to_num(s, neginf=-1e9))
              for name, s in scores.items()}

    category_auc = {
        cat: M.defined_auc(test[category_label_column(i)], predictions[scoring.category_columns[i]])
        for i, cat in enumerate(categories)}
    sample = test.sample(n=min(len(test), settings.importance_rows), random_state=cfg.seed)
    importance = {
        "wide_and_deep (AUC drop when shuffled)": permutation_importance(
            lambda d: scoring.predict(d)["p_purchase"].to_numpy(), sample, features,
            sample["label_purchased"].to_numpy(), cfg.seed),
        "lightgbm (gain)": lgb_importance,
    }
    report = {
        "model_version": version, "model_dir": model_dir, "protocol": training_set.protocol,
        "training_set_version": training_set.version,
        "snapshot_dates": [d.isoformat() for d in training_set.snapshot_dates],
        "threshold": settings.threshold, "top_k_percent": settings.top_k_percent,
        "scorers": results, "skipped": skipped,
        "spend": M.spend_errors(test["label_spend"], predictions["expected_spend"]),
        "spend_baselines": ({"bgnbd_gamma_gamma": M.spend_errors(test["label_spend"], btyd_spend)}
                            if btyd_spend is not None else {}),
        "category_roc_auc": category_auc, "oracle": oracle_block,
        "feature_importance": importance,
        "train_rows_for_baselines": int(len(train)),
        "test_rows": test_rows.to_json("test rows"),
        "baseline_train_rows": train_rows.to_json("train rows"),
    }
    out_dir = local_dir(cfg.runs_dir) / "evaluations" / version
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=1, sort_keys=True, default=str))
    # The thinned ROC and PR points, so the run report can redraw them without rescoring.
    (out_dir / "curves.json").write_text(json.dumps(curves, default=float))
    (out_dir / "report.html").write_text(html_report(report, curves))
    record_evaluation(spark, cfg.warehouse, version, results["wide_and_deep"])
    if cfg.mlflow.tracking_uri:
        from training import tracking

        tracking.log_evaluation(cfg.mlflow, record.get("mlflow_run_id"), version, report,
                                [out_dir / "metrics.json", out_dir / "report.html"])
    summary = {"model_version": version, "protocol": training_set.protocol,
               "test_rows": int(len(test)), "test_split_rows": test_rows.of_rows,
               "report": str(out_dir / "report.html"),
               **{f"auc_{k}": round(v["roc_auc"], 4) for k, v in results.items()}}
    if oracle_block:
        summary["auc_oracle_same_rows"] = round(oracle_block["oracle"]["roc_auc"], 4)
        summary["auc_model_same_rows"] = round(oracle_block["wide_and_deep_same_rows"]["roc_auc"], 4)
    if cfg.promote.on_evaluate:
        from training.evaluation.promotion import decide

        summary["promotion"] = decide(spark, cfg, version)
        summary["status"] = summary["promotion"]["status"]  # a scalar for run-all's table
    return summary
