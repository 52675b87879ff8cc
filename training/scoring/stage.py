"""The score stage: choose the model and snapshot, check the model fits the features, score every
user once, write predictions and category_demand, and report drift and feature importance."""
from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Callable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from demandcast.config import PipelineConfig
from demandcast.errors import StageFailed
from demandcast.logs import get_logger
from demandcast.settings.score import ScoreSettings
from demandcast.tables import last_commit_time, read_table, require_same_schema, table_path
from training.evaluation.champion import choose_model
from training.model_directory import load_failed
from training.scoring.current import publish_current_predictions
from training.scoring.drift import feature_drift, reference_profile
from training.scoring.explanations import feature_groups, global_importance
from training.scoring.model_loading import DEFAULT_LOADER, ScoringModel, cached_model
from training.scoring.output_tables import (CATEGORY_DEMAND, PREDICTIONS, category_demand_rows,
                                            partition_scored_at, prediction_rows, write_scores)
from training.scoring.udf import USER_KEY, ScoringPlan, check_model_inputs, score_snapshot

log = get_logger("score")

ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"
# Explained users: a hash of the key below fraction * this many buckets (deterministic sample).
_SAMPLE_BUCKETS = 1_000_000


def choose_snapshot(features: DataFrame, settings: ScoreSettings) -> dt.date:
    if settings.snapshot_date is None:
        latest = features.agg(F.max("snapshot_date")).first()[0]
        if latest is None:
            raise StageFailed("user_features is empty; run the features stage first")
        return latest
    if features.where(F.col("snapshot_date") == F.lit(settings.snapshot_date)).limit(1).count() == 0:
        raise StageFailed(f"user_features has no rows for snapshot {settings.snapshot_date}; "
                          "run the features stage for it first")
    return settings.snapshot_date


def already_scored(spark: SparkSession, warehouse: str, snapshot: dt.date, model_version: str) -> bool:
    """True when both tables hold the (snapshot, model version) partition and user_features has not
    changed since it was scored; a features rebuild after scoring (a fix, a late backfill) makes
    the scores stale, and they are computed again rather than kept."""
    scored = [partition_scored_at(spark, warehouse, spec, snapshot, model_version)
              for spec in (PREDICTIONS, CATEGORY_DEMAND)]
    if any(at is None for at in scored):
        return False
    features_changed = last_commit_time(spark, table_path(warehouse, "user_features"))
    if features_changed is not None and features_changed > min(scored):
        log.info("snapshot %s was scored by model %s at %s, before user_features last changed (%s): "
                 "scoring it again", snapshot, model_version, _utc(min(scored)), _utc(features_changed))
        return False
    return True


def _utc(epoch_seconds: float) -> str:
    return dt.datetime.fromtimestamp(epoch_seconds, dt.timezone.utc).isoformat(timespec="seconds")


def explained_users(settings: ScoreSettings) -> Column:
    """The users whose drivers are computed: the listed keys and a hash sample of the rest."""
    flag = F.lit(False)
    if settings.explain_user_keys:
        flag = flag | F.col(USER_KEY).isin(list(settings.explain_user_keys))
    if settings.explain_fraction > 0:
        cut = int(round(settings.explain_fraction * _SAMPLE_BUCKETS))
        flag = flag | (F.pmod(F.xxhash64(USER_KEY), F.lit(_SAMPLE_BUCKETS)) < F.lit(cut))
    return flag


def run_score(spark: SparkSession, cfg: PipelineConfig,
              loader: str | Callable[[str], ScoringModel] = DEFAULT_LOADER) -> dict:
    settings = cfg.score
    features = read_table(spark, cfg.warehouse, "user_features")
    snapshot = choose_snapshot(features, settings)
    choice = choose_model(spark, cfg)
    summary: dict = {"snapshot_date": str(snapshot), "model_version": choice.model_version,
                     "model_dir": choice.model_dir}
    if not settings.force and already_scored(spark, cfg.warehouse, snapshot, choice.model_version):
        log.info("snapshot %s is already scored by model %s; nothing to do "
                 "(--set score.force=true rescores it)", snapshot, choice.model_version)
        # The champion may have changed since (a promotion or a rollback to a model that had
        # scored this snapshot): the current table follows it without rescoring.
        return {**summary, "skipped": "already scored", **publish_current_predictions(spark, cfg)}

    try:
        model = cached_model(choice.model_dir, loader)
    except StageFailed:  # already says what is wrong with the directory
        raise
    except Exception as exc:  # an unreadable directory: say which model and where, in one line
        raise load_failed(choice.model_version, choice.model_dir, exc) from exc
    # Before anything is computed or written: the model must fit the feature table.
    check_model_inputs(model.input_columns, features.schema, choice.model_version)
    explain = bool(settings.explain_user_keys) or settings.explain_fraction > 0
    groups = (feature_groups(list(model.input_columns), settings.feature_groups, features.columns)
              if explain else {})
    current = features.where(F.col("snapshot_date") == F.lit(snapshot))
    reference_date = settings.reference_snapshot_date or choice.train_snapshot_date
    drift, profile_source = _drift(features, current, reference_date, model, settings)

    plan = ScoringPlan(
        model_dir=choice.model_dir, input_columns=dict(model.input_columns),
        category_ids=tuple(str(c) for c in model.category_ids), top_k=settings.top_categories,
        groups={g: tuple(c) for g, c in groups.items()}, typical=dict(profile_source.typical),
        top_n_drivers=settings.explain_top_n, loader=loader)

    batch_size = settings.arrow_batch_size or cfg.spark.arrow_batch_size
    previous_batch = spark.conf.get(ARROW_BATCH_CONF, None)
    spark.conf.set(ARROW_BATCH_CONF, str(batch_size))
    # Timezone-aware, so Spark stores the same instant whatever the machine's local zone.
    scored_at = dt.datetime.now(dt.timezone.utc)
    # Two tables, two commits: both must take their rows (the schemas follow from the plan) before
    # anything is scored, so that a mismatch in the second cannot leave the first published.
    shape = spark.createDataFrame([], plan.output_schema())
    require_same_schema(cfg.warehouse, [
        (PREDICTIONS, prediction_rows(shape, plan, snapshot, choice.model_version, scored_at, [])),
        (CATEGORY_DEMAND, category_demand_rows(shape, plan, snapshot, choice.model_version, scored_at))])
    try:
        scored = score_snapshot(current, plan, explained_users(settings))
        try:
            predictions_version = write_scores(
                prediction_rows(scored.frame, plan, snapshot, choice.model_version, scored_at,
                                scored.deciles),
                cfg.warehouse, PREDICTIONS, snapshot, choice.model_version)
            demand_version = write_scores(
                category_demand_rows(scored.frame, plan, snapshot, choice.model_version, scored_at),
                cfg.warehouse, CATEGORY_DEMAND, snapshot, choice.model_version)
            importance = global_importance(
                scored.frame, {g: f"contribution_{i}" for i, g in enumerate(plan.groups)}) \
                if scored.n_explained else []
        finally:
            scored.release()
    finally:
        if previous_batch is not None:
            spark.conf.set(ARROW_BATCH_CONF, previous_batch)
    # Last, after both tables: a failure before leaves the current scores as they were, and
    # one after is undone with the stage's other commits (tables.rollback).
    summary.update(publish_current_predictions(spark, cfg))
    summary.update({
        "users_scored": scored.n_users, "users_explained": scored.n_explained,
        "predictions_version": predictions_version, "category_demand_version": demand_version,
        "arrow_batch_size": batch_size, "reference_snapshot_date": str(reference_date),
        "drift_warnings": [d.feature for d in drift if d.alert],
    })
    report = {**summary, "scored_at": scored_at.isoformat(),
              "psi_warn_threshold": settings.psi_warn_threshold,
              "drift": [d.as_dict() for d in drift], "global_importance": importance}
    summary["report"] = write_report(cfg.runs_dir, snapshot, choice.model_version, report)
    return summary


def _drift(features: DataFrame, current: DataFrame, reference_date: dt.date | None,
           model: ScoringModel, settings: ScoreSettings):
    """PSI of every input against the training snapshot; the profile also gives occlusion values."""
    reference = None
    if reference_date is not None:
        reference = features.where(F.col("snapshot_date") == F.lit(reference_date))
        if reference.limit(1).count() == 0:
            log.warning("reference snapshot %s is not in user_features: no drift check",
                        reference_date)
            reference = None
    else:
        log.warning("the model records no training snapshot and score.reference_snapshot_date "
                    "is not set: no drift check")
    source = reference if reference is not None else current
    profile = reference_profile(source, model.input_columns, settings.psi_bins,
                                settings.psi_max_categories)
    if reference is None:
        return [], profile
    if settings.psi_active_days is None or "days_since_last_event" not in reference.columns:
        drift_profile = profile
    else:
        reference, current, drift_profile = active_populations(reference, current, model.input_columns, settings)
    return feature_drift(reference, current, drift_profile, settings.psi_warn_threshold,
                         settings.psi_min_relative_change, settings.psi_min_null_share_change), profile


def active_populations(reference: DataFrame, current: DataFrame, input_columns, settings: ScoreSettings):
    """Both snapshots restricted to the users active in their last score.psi_active_days days,
    and the reference profile of those users (drift only: occlusion keeps the whole snapshot's);
    all users when the key is null or user_features has no days_since_last_event. The dormant
    shares of both sides are logged."""
    days = settings.psi_active_days
    if days is None or "days_since_last_event" not in reference.columns:
        return reference, current, reference_profile(reference, input_columns, settings.psi_bins,
                                                     settings.psi_max_categories)
    active = F.col("days_since_last_event") <= F.lit(days)
    shares = [df.agg(F.avg(F.when(active, 0.0).otherwise(1.0))).first()[0] for df in (reference, current)]
    log.info("drift: users dormant for more than %d days: %.1f%% of the reference snapshot, %.1f%% of "
             "the scored one; PSI compares the active ones (score.psi_active_days)", days,
             100 * (shares[0] or 0.0), 100 * (shares[1] or 0.0))
    reference, current = reference.where(active), current.where(active)
    return reference, current, reference_profile(reference, input_columns, settings.psi_bins,
                                                 settings.psi_max_categories)


def write_report(runs_dir: str, snapshot: dt.date, model_version: str, report: dict) -> str:
    """The JSON report and a short Markdown rendering under {runs_dir}/reports/score/."""
    # runs_dir is a file system path: the config refuses URIs and the CLI checks it is writable.
    path = Path(runs_dir) / "reports" / "score" / str(snapshot)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"{model_version}.json").write_text(json.dumps(report, indent=1, default=str))
    (path / f"{model_version}.md").write_text(render_report(report))
    return str(path / f"{model_version}.json")


def render_report(report: dict) -> str:
    threshold = report["psi_warn_threshold"]
    lines = [f"# Scoring report: snapshot {report['snapshot_date']}, model {report['model_version']}",
             "", f"- users scored: {report['users_scored']}",
             f"- users explained: {report['users_explained']}",
             f"- reference (training) snapshot: {report['reference_snapshot_date']}", "",
             f"## Feature drift (PSI, warning above {threshold})", "",
             "| feature | kind | PSI | |", "|---|---|---|---|"]
    for d in report["drift"]:
        flag = "WARNING" if d.get("alert", not math.isnan(d["psi"]) and d["psi"] > threshold) else ""
        lines.append(f"| {d['feature']} | {d['kind']} | {d['psi']:.4f} | {flag} |")
    lines += ["", "## Global importance (occlusion, explained users)", "",
              "| feature group | mean abs contribution | mean contribution |", "|---|---|---|"]
    for g in report["global_importance"]:
        lines.append(f"| {g['feature_group']} | {g['mean_abs_contribution']:.5f} | "
                     f"{g['mean_contribution']:+.5f} |")
    return "\n".join(lines) + "\n"
