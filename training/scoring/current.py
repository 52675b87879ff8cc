"""predictions_current: one row per user, the champion's scores of the newest snapshot it scored.

`predictions` keeps every (snapshot, model version) side by side, which is what an analyst
comparing models wants and what a CRM export or a dashboard does not: they want "the" score of
each user. This table is that, derived from `predictions` alone and replaced as a whole in one
Delta overwrite commit, so a reader sees the old snapshot or the new one, never a mix.
"""
from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from demandcast.config import PipelineConfig
from demandcast.errors import StageFailed
from demandcast.logs import get_logger
from demandcast.tables import (TableSpec, current_version, metadata_of_current_state, read_table,
                               table_path, write_table)
from training.evaluation.champion import choose_model
from training.scoring.output_tables import PREDICTIONS

log = get_logger("score")

PREDICTIONS_CURRENT = TableSpec(
    name="predictions_current",
    comment=("One row per user: the champion model's scores of the newest snapshot it scored "
             "(a copy of those rows of `predictions`), replaced as a whole in one commit after "
             "each score run. Key user_key. Written by `demandcast score`."),
    column_comments=dict(PREDICTIONS.column_comments),
    properties=dict(PREDICTIONS.properties),
)

# The commit metadata key recording which predictions partition the table holds.
PUBLISHED = "published"


def champion_model_version(spark: SparkSession, cfg: PipelineConfig) -> str | None:
    """The model whose scores predictions_current holds: the one score picks when no version is
    pinned; None when there is none. A pinned run (a challenger scored beside the champion, an
    old model re-scored) writes its own predictions partition and leaves the current scores."""
    unpinned = cfg.model_copy(update={"score": cfg.score.model_copy(update={"model_version": None})})
    try:
        return choose_model(spark, unpinned).model_version
    except StageFailed as exc:  # a pinned run can score while no model qualifies as champion
        log.warning("no champion (%s): predictions_current keeps the scores it holds", exc)
        return None


def latest_snapshot_of(predictions: DataFrame, model_version: str) -> dt.date | None:
    """The newest snapshot `model_version` has scores for (partition columns only)."""
    return (predictions.where(F.col("model_version") == F.lit(model_version))
            .agg(F.max("snapshot_date")).first()[0])


def current_predictions(predictions: DataFrame, model_version: str, snapshot_date: dt.date) -> DataFrame:
    """The rows of one (snapshot, model version) partition of predictions, in its columns."""
    return predictions.where((F.col("model_version") == F.lit(model_version))
                             & (F.col("snapshot_date") == F.lit(snapshot_date)))


def publish_current_predictions(spark: SparkSession, cfg: PipelineConfig) -> dict:
    """Makes predictions_current hold the champion's newest scored snapshot.

    Nothing is committed when the table already holds that partition as last scored (same
    scoring time), or when the champion has not scored any snapshot yet (the table keeps the
    last scores it published). Rows come from one pinned version of predictions, so the
    snapshot looked up and the rows copied agree even if another run commits meanwhile.
    """
    predictions_path = table_path(cfg.warehouse, PREDICTIONS.name)
    version = current_version(spark, predictions_path)
    if version is None:
        return {"predictions_current": "no predictions yet"}
    predictions = read_table(spark, cfg.warehouse, PREDICTIONS.name, version=version)
    champion = champion_model_version(spark, cfg)
    if champion is None:
        return {"predictions_current": "kept: no champion"}
    snapshot = latest_snapshot_of(predictions, champion)
    if snapshot is None:
        log.warning("the champion %s has scored no snapshot yet: predictions_current keeps the "
                    "scores it holds", champion)
        return {"predictions_current": f"kept: champion {champion} has no scores yet"}
    rows = current_predictions(predictions, champion, snapshot)
    # One run writes a partition with one scoring time: any row carries it.
    scored_at = rows.select(F.col("scored_at").cast("double")).limit(1).first()[0]
    wanted = {"model_version": champion, "snapshot_date": str(snapshot), "scored_at": scored_at}
    path = table_path(cfg.warehouse, PREDICTIONS_CURRENT.name)
    held = metadata_of_current_state(spark, path, PUBLISHED)
    if isinstance(held, dict) and {k: held.get(k) for k in wanted} == wanted:
        return {"predictions_current": "unchanged", "predictions_current_version": current_version(spark, path)}
    written = write_table(rows, cfg.warehouse, PREDICTIONS_CURRENT, "overwrite",
                          user_metadata={PUBLISHED: {**wanted, "predictions_version": version}})
    log.info("predictions_current: snapshot %s of model %s (predictions version %s) -> version %s",
             snapshot, champion, version, written)
    return {"predictions_current": f"{champion} {snapshot}", "predictions_current_version": written}
