"""The model the score stage uses: pinned, from the MLflow registry, or the champion of the
models table."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from demandcast.config import PipelineConfig
from demandcast.errors import StageFailed
from demandcast.tables import read_table


@dataclass(frozen=True)
class ModelChoice:
    model_version: str
    model_dir: str
    train_snapshot_date: dt.date | None


def model_dir_of(runs_dir: str, model_version: str) -> str:
    return f"{runs_dir.rstrip('/')}/models/{model_version}"


def choose_model(spark: SparkSession, cfg: PipelineConfig) -> ModelChoice:
    """The pinned version (score.model_version), the MLflow registry's (score.model_uri), or the
    champion: the row of the models table whose status is 'champion' (training.model_status)."""
    settings = cfg.score
    if settings.model_uri:
        from training import tracking

        version, model_dir = tracking.registry_model(cfg.mlflow, settings.model_uri, cfg.runs_dir)
        return ModelChoice(version, model_dir, _recorded_train_snapshot(model_dir))
    models = read_table(spark, cfg.warehouse, "models")
    columns = set(models.columns)
    if settings.model_version:
        rows = models.where(F.col("model_version") == settings.model_version).collect()
        if not rows:
            known = [r[0] for r in models.select("model_version").distinct().collect()]
            raise StageFailed(f"score.model_version {settings.model_version!r} is not in the models "
                              f"table (versions: {sorted(known)})")
        row = rows[-1]
    else:
        latest = [F.col("decided_at").desc_nulls_last()] if "decided_at" in columns else []
        champions = (models.where(F.col("status") == "champion")
                     .orderBy(*latest, F.col("model_version").desc())
                     if "status" in columns else models.limit(0))
        row = champions.first()
        if row is None:
            raise StageFailed(
                "the models table has no champion: run `train` (the first model becomes "
                "champion), `demandcast promote --set promote.model_version=<version>`, or pin "
                "one with --set score.model_version=<version>")
    version = str(row["model_version"])
    model_dir = row["model_dir"] if "model_dir" in columns and row["model_dir"] \
        else model_dir_of(cfg.runs_dir, version)
    return ModelChoice(version, model_dir, _train_snapshot(row))


def _recorded_train_snapshot(model_dir: str) -> dt.date | None:
    """The latest training snapshot model.json records (a registry model has no models row here)."""
    from training.model_directory import read_model_info

    dates = read_model_info(model_dir).get("training_set", {}).get("snapshot_dates") or []
    return dt.date.fromisoformat(max(dates)) if dates else None


def _train_snapshot(row) -> dt.date | None:
    """The latest snapshot the model was trained on (models.snapshot_dates, training.lineage)."""
    dates = row.asDict().get("snapshot_dates")
    return max(dates) if dates else None
