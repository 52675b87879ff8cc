"""The `models` table: one row per trained model version, with lineage and metrics."""
from __future__ import annotations

import datetime as dt
import json

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from demandcast.tables import TableSpec, merge_table, read_table, table_path, current_version

MODELS_SPEC = TableSpec(
    name="models",
    comment="Trained model versions: where they are, what data and code made them, their metrics",
    column_comments={
        "model_version": "id of the model directory {runs_dir}/models/{model_version}",
        "training_set_version": "the pinned training_set Delta version the model trained on",
        "source_versions": "user_features / labels Delta versions the training set was built from",
        "val_roc_auc": "ROC-AUC on the validation split (calibrated model)",
        "test_roc_auc": "ROC-AUC on the test split, filled by `evaluate` (null until then)",
        "status": "champion (what score uses), challenger (not decided yet), challenger_rejected, "
                  "retired (replaced by a better challenger) or rolled_back",
        "decision_metric": "metric of the last decision (promote.metric) on the out-of-time set",
        "decision_value": "this model's decision_metric on decision_snapshot",
        "compared_to": "the model version the last decision compared this one with",
        "compared_value": "compared_to's decision_metric on the same rows",
        "decision_snapshot": "the out-of-time snapshot of the last decision (neither model trained on it)",
        "decision_reason": "why the last decision was taken, in words",
        "decided_at": "when the last decision was committed (UTC)",
        "promoted_over": "the champion this model replaced when promoted: where a rollback returns",
        "decisions": "every decision about this model, oldest first",
        "mlflow_run_id": "MLflow run of the training (null without mlflow.tracking_uri)",
        "mlflow_model_version": "version of the MLflow registered model (null without MLflow)",
    },
)

DECISION_TYPE = ("struct<decided_at:timestamp,status:string,metric:string,value:double,"
                 "compared_to:string,compared_value:double,snapshot_date:date,reason:string>")
# Columns after the training lineage: the champion/challenger state (training.model_status) and
# the MLflow copy. A table written before they existed gets them added (upgraded_models_table).
DECISION_COLUMNS = (
    ("status", "string"), ("decision_metric", "string"), ("decision_value", "double"),
    ("compared_to", "string"), ("compared_value", "double"), ("decision_snapshot", "date"),
    ("decision_reason", "string"), ("decided_at", "timestamp"), ("promoted_over", "string"),
    ("decisions", f"array<{DECISION_TYPE}>"), ("mlflow_run_id", "string"),
    ("mlflow_model_version", "string"))

SCHEMA = ("model_version string, created_at timestamp, model_dir string, training_set_path string, "
          "training_set_version long, source_versions map<string,long>, snapshot_dates array<date>, "
          "protocol string, code_version string, config_json string, ranks int, epochs_run int, "
          "val_roc_auc double, val_log_loss double, val_ece double, test_roc_auc double, "
          "test_pr_auc double, test_log_loss double, evaluated_at timestamp, "
          + ", ".join(f"{name} {kind}" for name, kind in DECISION_COLUMNS))


def model_row(result: dict, info: dict) -> dict:
    validation = result["metrics"]["validation"]["calibrated"]
    ts = info["training_set"]
    return {
        "model_version": info["model_version"],
        "created_at": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None),
        "model_dir": result["model_dir"], "training_set_path": ts["path"],
        "training_set_version": int(ts["version"]),
        "source_versions": {k: int(v) for k, v in ts["source_versions"].items()},
        "snapshot_dates": [dt.date.fromisoformat(d) for d in ts["snapshot_dates"]],
        "protocol": ts["protocol"], "code_version": info["code_version"],
        "config_json": json.dumps(info["config"], sort_keys=True, default=str),
        "ranks": int(result["size"]), "epochs_run": int(result["start_epoch"] + result["epochs_run"]),
        "val_roc_auc": validation["roc_auc"], "val_log_loss": validation["log_loss"],
        "val_ece": validation["ece"], "test_roc_auc": None, "test_pr_auc": None,
        "test_log_loss": None, "evaluated_at": None,
        **{name: None for name, _ in DECISION_COLUMNS}, "status": "challenger", "decisions": [],
    }


def upgraded_models_table(spark: SparkSession, warehouse: str) -> None:
    """Adds the decision and MLflow columns to a models table written before they existed
    (ALTER TABLE through Delta's SQL: a metadata-only commit, no rows rewritten)."""
    path = table_path(warehouse, "models")
    if current_version(spark, path) is None:
        return
    have = set(spark.read.format("delta").load(path).columns)
    missing = [(n, k) for n, k in DECISION_COLUMNS if n not in have]
    if missing:
        columns = ", ".join(f"{n} {k} COMMENT '{_sql_text(MODELS_SPEC.column_comments[n])}'"
                            for n, k in missing)
        spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({columns})")


def _sql_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def record_model(spark: SparkSession, warehouse: str, row: dict) -> int:
    """Adds (or, for a rerun of the same version, replaces) the model's row."""
    upgraded_models_table(spark, warehouse)
    df = spark.createDataFrame([row], SCHEMA)
    return merge_table(df, warehouse, MODELS_SPEC, ["model_version"], update_matched=True)


def record_evaluation(spark: SparkSession, warehouse: str, model_version: str, test: dict) -> int:
    upgraded_models_table(spark, warehouse)
    current = read_table(spark, warehouse, "models").where(F.col("model_version") == model_version)
    updated = (current.withColumn("test_roc_auc", F.lit(test["roc_auc"]).cast("double"))
               .withColumn("test_pr_auc", F.lit(test["pr_auc"]).cast("double"))
               .withColumn("test_log_loss", F.lit(test["log_loss"]).cast("double"))
               .withColumn("evaluated_at", F.current_timestamp()))
    return merge_table(updated, warehouse, MODELS_SPEC, ["model_version"], update_matched=True)


def latest_model_version(spark: SparkSession, warehouse: str) -> str | None:
    if current_version(spark, table_path(warehouse, "models")) is None:
        return None
    row = read_table(spark, warehouse, "models").orderBy(F.desc("created_at")).select("model_version").first()
    return row[0] if row else None


def model_record(spark: SparkSession, warehouse: str, model_version: str) -> dict:
    row = read_table(spark, warehouse, "models").where(F.col("model_version") == model_version).first()
    return row.asDict(recursive=True) if row else {}
