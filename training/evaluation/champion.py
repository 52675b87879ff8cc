"""The champion: the model version the score stage uses, pinned or the best one of the models
table by the configured metric."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from demandcast.config import PipelineConfig
from demandcast.errors import StageFailed
from demandcast.settings.score import ScoreSettings
from demandcast.tables import read_table


@dataclass(frozen=True)
class ModelChoice:
    model_version: str
    model_dir: str
    train_snapshot_date: dt.date | None


def model_dir_of(runs_dir: str, model_version: str) -> str:
    return f"{runs_dir.rstrip('/')}/models/{model_version}"


def choose_model(spark: SparkSession, cfg: PipelineConfig) -> ModelChoice:
    """The pinned version, or the best version by the configured metric (a models column; rows
    without it come last). A `status` column, when the table has one, must say 'ok'."""
    settings = cfg.score
    models = read_table(spark, cfg.warehouse, "models")
    columns = set(models.columns)
    if settings.model_version:
        rows = models.where(F.col("model_version") == settings.model_version).collect()
        if not rows:
            known = [r[0] for r in models.select("model_version").distinct().collect()]
            raise StageFailed(f"score.model_version {settings.model_version!r} is not in the models "
                              f"table (versions: {sorted(known)})")
        row = rows[-1]
        if "status" in columns and row["status"] != "ok":
            raise StageFailed(f"model {settings.model_version} has status {row['status']!r}, "
                              "not 'ok': refusing to score with it")
    else:
        candidates = models.where(F.col("status") == "ok") if "status" in columns else models
        metric = _metric_column(models, settings)
        order = metric.desc_nulls_last() if settings.selection_higher_is_better \
            else metric.asc_nulls_last()
        tiebreak = [F.col("created_at").desc()] if "created_at" in columns else []
        row = candidates.orderBy(order, *tiebreak, F.col("model_version").desc()).first()
        if row is None:
            raise StageFailed("the models table has no usable model; run train first")
    version = str(row["model_version"])
    model_dir = row["model_dir"] if "model_dir" in columns and row["model_dir"] \
        else model_dir_of(cfg.runs_dir, version)
    return ModelChoice(version, model_dir, _train_snapshot(row))


def _metric_column(models: DataFrame, settings: ScoreSettings) -> Column:
    if settings.selection_metric not in models.columns:
        raise StageFailed(f"score.selection_metric {settings.selection_metric!r} is not a column of "
                          f"the models table (columns: {models.columns})")
    return F.col(settings.selection_metric)


def _train_snapshot(row) -> dt.date | None:
    """The latest snapshot the model was trained on (models.snapshot_dates, training.lineage)."""
    dates = row.asDict().get("snapshot_dates")
    return max(dates) if dates else None
