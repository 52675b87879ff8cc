"""Champion/challenger: a challenger replaces the champion only when it beats it by
`promote.min_gain` on the same out-of-time rows, the newest labelled snapshot neither trained on.

Both models score that snapshot with the scoring UDF on the executors; the metrics come from
Spark aggregates (ROC-AUC and PR-AUC from score histograms of HISTOGRAM_BINS bins), so nothing the
driver collects grows with users. The decision and a rollback are one MERGE into `models`
(training.model_status); with MLflow, the registry's champion alias follows.
"""
from __future__ import annotations

import datetime as dt
from typing import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from demandcast.config import PipelineConfig
from demandcast.errors import StageFailed
from demandcast.logs import get_logger
from demandcast.settings.promote import METRIC_HIGHER_IS_BETTER
from demandcast.tables import read_table
from training import tracking
from training.evaluation.champion import model_dir_of
from training.model_status import (CHALLENGER, CHAMPION, DECIDED, REJECTED, RETIRED, ROLLED_BACK,
                                   Decision, champion_of, commit_decisions, models_rows)
from training.scoring.model_loading import DEFAULT_LOADER, ScoringModel, cached_model
from training.scoring.udf import USER_KEY, ScoringPlan, check_model_inputs, score_users, udf_inputs

log = get_logger("training.evaluation.promotion")

# Score histogram resolution: pairs of rows whose scores fall in one bin of width 1e-5 count as
# ties (half a correctly ordered pair), which moves an AUC by far less than promote.min_gain.
HISTOGRAM_BINS = 100_000
_EPS = 1e-12


# --- which rows ---------------------------------------------------------------------------------

def trained_snapshots(row: dict) -> set[dt.date]:
    """The snapshots a model learnt from: its training set's, less the test snapshot of an
    out-of-time protocol (held out from fitting)."""
    dates = sorted(row.get("snapshot_dates") or [])
    if row.get("protocol") == "out_of_time" and dates:
        dates = dates[:-1]
    return set(dates)


def out_of_time_snapshot(labelled: list[dt.date], *models: dict) -> dt.date | None:
    """The newest labelled snapshot none of `models` trained on; None when there is none."""
    seen = set().union(*(trained_snapshots(m) for m in models))
    candidates = [d for d in labelled if d not in seen]
    return max(candidates) if candidates else None


def labelled_snapshots(spark: SparkSession, warehouse: str) -> list[dt.date]:
    """Snapshot dates of `labels` (one row per snapshot after the aggregate)."""
    return sorted(r[0] for r in read_table(spark, warehouse, "labels")
                  .select("snapshot_date").distinct().collect())


# --- metrics in Spark ---------------------------------------------------------------------------

def scored_with_labels(features: DataFrame, labels: DataFrame, model_dir: str, model_version: str,
                       loader: str | Callable[[str], ScoringModel] = DEFAULT_LOADER) -> DataFrame:
    """(user_key, p, y) of one snapshot's rows: the model's p_purchase next to the label."""
    model = cached_model(model_dir, loader)
    check_model_inputs(model.input_columns, features.schema, model_version)
    plan = ScoringPlan(model_dir=model_dir, input_columns=dict(model.input_columns),
                       category_ids=tuple(str(c) for c in model.category_ids), top_k=0,
                       loader=loader)
    scored = score_users(udf_inputs(features, plan.input_columns, F.lit(False)), plan)
    return (scored.select(USER_KEY, F.col("p_purchase").alias("p"))
            .join(labels.select(USER_KEY, F.col("label_purchased").cast("double").alias("y")),
                  USER_KEY))


def binary_metrics(scored: DataFrame) -> dict[str, float]:
    """ROC-AUC, PR-AUC (average precision), log loss and Brier of `p` against `y` (0/1), from
    one aggregation: rows, positives and loss sums per score bin."""
    p = F.least(F.greatest(F.col("p"), F.lit(_EPS)), F.lit(1 - _EPS))
    bins = (scored.groupBy(F.least(F.floor(F.col("p") * HISTOGRAM_BINS), F.lit(HISTOGRAM_BINS - 1))
                           .alias("bin"))
            .agg(F.sum("y").alias("pos"), F.count(F.lit(1)).alias("n"),
                 F.sum(-(F.col("y") * F.log(p) + (1 - F.col("y")) * F.log(1 - p))).alias("log_loss"),
                 F.sum((F.col("p") - F.col("y")) ** 2).alias("brier"))
            .collect())
    histogram = sorted((int(b["bin"]), int(b["pos"]), int(b["n"])) for b in bins)
    n, pos = sum(b[2] for b in histogram), sum(b[1] for b in histogram)
    if pos == 0 or pos == n:
        raise StageFailed(f"the out-of-time rows ({n}) have one class only: no AUC to compare")
    return {"roc_auc": _roc_auc(histogram, pos, n - pos), "pr_auc": _average_precision(histogram, pos),
            "log_loss": sum(b["log_loss"] for b in bins) / n, "brier": sum(b["brier"] for b in bins) / n,
            "rows": n, "positives": pos}


def _roc_auc(histogram: list[tuple[int, int, int]], pos: int, neg: int) -> float:
    below, pairs = 0, 0.0
    for _, b_pos, b_n in histogram:  # ascending scores
        b_neg = b_n - b_pos
        pairs += b_pos * (below + 0.5 * b_neg)
        below += b_neg
    return pairs / (pos * neg)


def _average_precision(histogram: list[tuple[int, int, int]], pos: int) -> float:
    hits, seen, ap = 0, 0, 0.0
    for _, b_pos, b_n in reversed(histogram):  # descending scores, one threshold per bin
        hits += b_pos
        seen += b_n
        ap += (b_pos / pos) * (hits / seen)
    return ap


def snapshot_metrics(spark: SparkSession, warehouse: str, snapshot: dt.date, row: dict,
                     runs_dir: str, loader=DEFAULT_LOADER) -> dict[str, float]:
    features = read_table(spark, warehouse, "user_features").where(F.col("snapshot_date") == snapshot)
    labels = read_table(spark, warehouse, "labels").where(F.col("snapshot_date") == snapshot)
    model_dir = row.get("model_dir") or model_dir_of(runs_dir, row["model_version"])
    return binary_metrics(scored_with_labels(features, labels, model_dir, row["model_version"], loader))


# --- the decision -------------------------------------------------------------------------------

def beats(challenger: float, champion: float, metric: str, min_gain: float) -> bool:
    gain = challenger - champion if METRIC_HIGHER_IS_BETTER[metric] else champion - challenger
    return gain >= min_gain - 1e-12


def decide(spark: SparkSession, cfg: PipelineConfig, model_version: str | None = None,
           loader=DEFAULT_LOADER) -> dict:
    """Decides for a challenger (default promote.model_version, else the newest model) and
    commits the decision; a model already decided is left as it is (safe to rerun)."""
    rows = models_rows(spark, cfg.warehouse)
    if not rows:
        raise StageFailed("the models table is empty: run `train` first")
    version = model_version or cfg.promote.model_version or max(
        rows.values(), key=lambda r: (r["created_at"], r["model_version"]))["model_version"]
    if version not in rows:
        raise StageFailed(f"promote.model_version {version!r} is not in the models table "
                          f"(versions: {sorted(rows)})")
    row = rows[version]
    if row.get("status") in DECIDED:
        log.info("model %s is already decided (%s): nothing to do", version, row["status"])
        return _summary(row, "already decided")
    champion = champion_of(rows)
    if champion is None:
        decision = Decision(version, CHAMPION, "first model: there is no champion to compare with")
        return _commit(spark, cfg, rows, [decision], champion=version)
    settings = cfg.promote
    snapshot = settings.evaluation_snapshot or out_of_time_snapshot(
        labelled_snapshots(spark, cfg.warehouse), row, champion)
    if snapshot is None:
        reason = (f"undecided: no labelled snapshot that neither {version} nor the champion "
                  f"{champion['model_version']} trained on; decided once a newer snapshot has labels")
        if row.get("decision_reason") != reason:
            _commit(spark, cfg, rows, [Decision(version, CHALLENGER, reason)])
        return _summary({**row, "status": CHALLENGER, "decision_reason": reason}, "undecided")
    metric = settings.metric
    mine = snapshot_metrics(spark, cfg.warehouse, snapshot, row, cfg.runs_dir, loader)
    theirs = snapshot_metrics(spark, cfg.warehouse, snapshot, champion, cfg.runs_dir, loader)
    ours, best = mine[metric], theirs[metric]
    compared = dict(metric=metric, value=ours, compared_to=champion["model_version"],
                    compared_value=best, snapshot_date=snapshot)
    where = f"on snapshot {snapshot} ({mine['rows']} rows)"
    if beats(ours, best, metric, settings.min_gain):
        reason = (f"promoted: {metric} {ours:.4f} beats champion {champion['model_version']}'s "
                  f"{best:.4f} by at least {settings.min_gain} {where}")
        decisions = [Decision(version, CHAMPION, reason, promoted_over=champion["model_version"],
                              **compared),
                     Decision(champion["model_version"], RETIRED, f"replaced by {version}: {reason}",
                              metric=metric, value=best, compared_to=version, compared_value=ours,
                              snapshot_date=snapshot)]
        return _commit(spark, cfg, rows, decisions, champion=version)
    reason = (f"rejected: {metric} {ours:.4f} against champion {champion['model_version']}'s "
              f"{best:.4f} {where}; a challenger must beat it by {settings.min_gain}")
    return _commit(spark, cfg, rows, [Decision(version, REJECTED, reason, **compared)])


def rollback(spark: SparkSession, cfg: PipelineConfig) -> dict:
    """The champion is rolled back and the champion it replaced is champion again."""
    rows = models_rows(spark, cfg.warehouse)
    current = champion_of(rows)
    if current is None:
        raise StageFailed("--rollback: the models table has no champion to roll back")
    previous = current.get("promoted_over")
    if not previous:
        raise StageFailed(f"--rollback: champion {current['model_version']} was the first champion; "
                          "there is no previous champion to return to")
    if previous not in rows:
        raise StageFailed(f"--rollback: the previous champion {previous} is not in the models table")
    version = current["model_version"]
    decisions = [Decision(version, ROLLED_BACK, f"rolled back: {previous} is champion again",
                          compared_to=previous),
                 Decision(previous, CHAMPION, f"champion again: rollback of {version}",
                          compared_to=version)]
    return _commit(spark, cfg, rows, decisions, champion=previous)


def _commit(spark: SparkSession, cfg: PipelineConfig, rows: dict[str, dict],
            decisions: list[Decision], champion: str | None = None) -> dict:
    table_version = commit_decisions(spark, cfg.warehouse, rows, decisions)
    if champion is not None and cfg.mlflow.tracking_uri:
        tracking.move_champion_alias(cfg.mlflow, rows[champion])
    first = decisions[0]
    return {"model_version": first.model_version, "status": first.status,
            "reason": first.reason, "metric": first.metric, "value": first.value,
            "compared_to": first.compared_to, "compared_value": first.compared_value,
            "evaluation_snapshot": str(first.snapshot_date) if first.snapshot_date else None,
            "models_table_version": table_version,
            "champion": champion or (champion_of(rows) or {}).get("model_version")}


def _summary(row: dict, outcome: str) -> dict:
    return {"model_version": row["model_version"], "status": row.get("status"),
            "reason": row.get("decision_reason"), "outcome": outcome}
