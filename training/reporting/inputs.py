"""What the run report shows, read in one place: `gather_inputs` reads the warehouse tables and
the run folders (ledger summaries, model directory, evaluation and scoring reports) into a plain
`RunInputs`.

An input that is missing (a run without evaluate, a table never written) leaves its field None
and a reason in `RunInputs.missing`, which the report shows as a note instead of failing.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import NumericType

from demandcast.config import PipelineConfig
from demandcast.logs import get_logger
from demandcast.pipeline import STAGE_ORDER
from demandcast.run_folders import local_dir
from demandcast.stage_ledger import StageLedger
from demandcast.tables import is_delta_table, read_table, table_path

log = get_logger("run_report")

# Importance rankings in an evaluation's metrics.json that can pick the features to draw.
_IMPORTANCE_KEYS = ("wide_and_deep (AUC drop when shuffled)", "lightgbm (gain)")
_NOT_FEATURES = {"user_key", "snapshot_date"}


@dataclass
class RunInputs:
    """Everything the report shows, as plain values. None = not available (see `missing`)."""

    title: str
    stages: list[dict[str, Any]] = field(default_factory=list)   # stage, status, seconds, note
    model_version: str | None = None
    snapshot_date: str | None = None
    reference_snapshot_date: str | None = None
    rows_in: int | None = None                                   # rows in the events table
    events_per_day: dict[str, tuple[list[dt.date], list[int]]] | None = None  # type -> series
    funnel: list[dict[str, Any]] | None = None                   # step, event_type, events, users
    quarantine_by_reason: dict[str, int] | None = None
    users_scored: int | None = None
    feature_samples: dict[str, dict[str, list[float]]] | None = None  # feature -> label -> values
    drift: list[dict[str, Any]] | None = None                    # score report: feature, kind, psi
    psi_threshold: float = 0.2
    history: list[dict[str, Any]] | None = None                  # per epoch: loss, val_auc, ...
    evaluation: dict[str, Any] | None = None                     # evaluations/<v>/metrics.json
    curves: dict[str, Any] | None = None                         # evaluations/<v>/curves.json
    category_demand: list[dict[str, Any]] | None = None
    global_importance: dict[str, float] | None = None
    importance_source: str = ""
    driver_examples: list[dict[str, Any]] | None = None
    missing: dict[str, str] = field(default_factory=dict)        # input -> why it is missing
    remarks: dict[str, str] = field(default_factory=dict)        # input -> caveat worth showing


def ledger_summaries(cfg: PipelineConfig) -> tuple[dict[str, dict], list[dict[str, Any]]]:
    """Stage summaries and status rows as the ledger recorded the last successful runs."""
    ledger = StageLedger(local_dir(cfg.runs_dir) / "ledger")
    summaries, stages = {}, []
    for stage in STAGE_ORDER:
        record = ledger.load(stage)
        if record is None:
            stages.append({"stage": stage, "status": "no record", "seconds": None, "finished": ""})
            continue
        summaries[stage] = record.summary
        stages.append({"stage": stage, "status": "recorded", "seconds": record.duration_s,
                       "finished": record.finished_at})
    return summaries, stages


def gather_inputs(spark: SparkSession, cfg: PipelineConfig, summaries: Mapping[str, dict],
                  stages: Sequence[dict[str, Any]], title: str = "demandcast run") -> RunInputs:
    """Reads what the report needs. Each input is read on its own: one that fails or is absent
    becomes a note in `missing` and the others are still read."""
    inputs = RunInputs(title=title, stages=list(stages))
    runs = local_dir(cfg.runs_dir)

    def attempt(name: str, read: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            read()
        except Exception as exc:  # a report shows why a section is empty rather than failing
            log.warning("run report: %s not available: %s: %s", name, type(exc).__name__, exc)
            inputs.missing.setdefault(name, f"could not be read ({type(exc).__name__}: {exc})")
        log.info("run report: %s read in %.1f s", name, time.monotonic() - started)

    def table(name: str) -> DataFrame | None:
        if not is_delta_table(spark, table_path(cfg.warehouse, name)):
            inputs.missing.setdefault(name, f"table {name} does not exist at "
                                            f"{table_path(cfg.warehouse, name)}")
            return None
        return read_table(spark, cfg.warehouse, name)

    attempt("events", lambda: _read_events(table, cfg, inputs))
    attempt("quarantine", lambda: _read_quarantine(table, inputs))
    attempt("scored model", lambda: _choose_scored(table, summaries, inputs))
    score_report = None
    if inputs.model_version and inputs.snapshot_date:
        path = runs / "reports" / "score" / inputs.snapshot_date / f"{inputs.model_version}.json"
        if path.is_file():
            score_report = json.loads(path.read_text())
            inputs.drift = score_report.get("drift") or None
            inputs.psi_threshold = float(score_report.get("psi_warn_threshold", inputs.psi_threshold))
            inputs.reference_snapshot_date = score_report.get("reference_snapshot_date")
            if inputs.users_scored is None:
                inputs.users_scored = score_report.get("users_scored")
            if not inputs.drift:
                inputs.missing["drift"] = ("the scoring report has no drift figures (no reference "
                                           "snapshot: set score.reference_snapshot_date)")
        else:
            inputs.missing["score report"] = f"no scoring report at {path}"
            inputs.missing["drift"] = f"no scoring report at {path}"
    attempt("evaluation", lambda: _read_evaluation(runs, summaries, inputs))
    attempt("training history", lambda: _read_history(runs, summaries, inputs))
    attempt("feature distributions", lambda: _read_feature_samples(table, cfg, inputs))
    attempt("category demand", lambda: _read_category_demand(table, cfg, inputs))
    attempt("drivers", lambda: _read_drivers(table, cfg, score_report, inputs))
    return inputs


def _read_events(table, cfg: PipelineConfig, inputs: RunInputs) -> None:
    events = table("events")
    if events is None:
        return
    # One scan: events per (type, day) and distinct users per type (rollup levels 0 and 1).
    rows = (events.rollup("event_type", "event_date")
            .agg(F.grouping_id().alias("level"), F.count(F.lit(1)).alias("events"),
                 F.countDistinct("user_key").alias("users"))
            .where(F.col("level") < 3).collect())
    series: dict[str, tuple[list, list]] = {}
    users: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: (r["event_type"] or "", r["event_date"] or dt.date.min)):
        event_type = row["event_type"] if row["event_type"] is not None else "(null)"
        if row["level"] == 1:
            users[event_type] = int(row["users"])
            continue
        dates, counts = series.setdefault(event_type, ([], []))
        dates.append(row["event_date"])
        counts.append(int(row["events"]))
    inputs.events_per_day = series
    inputs.rows_in = sum(sum(counts) for _, counts in series.values())
    steps = [("view", cfg.features.view_event), ("cart", cfg.features.cart_event),
             ("purchase", cfg.features.purchase_event)]
    inputs.funnel = [{"step": step, "event_type": event_type,
                      "events": sum(series.get(event_type, ([], []))[1]),
                      "users": users.get(event_type, 0)} for step, event_type in steps]


def _read_quarantine(table, inputs: RunInputs) -> None:
    quarantine = table("quarantine")
    if quarantine is None:
        return
    rows = quarantine.groupBy("reason").count().collect()
    inputs.quarantine_by_reason = dict(sorted(((r["reason"] or "(none)", int(r["count"]))
                                               for r in rows), key=lambda kv: -kv[1]))


def _choose_scored(table, summaries: Mapping[str, dict], inputs: RunInputs) -> None:
    """The snapshot and model of this run's predictions: the score stage's summary, else the
    latest partition of the predictions table, else the evaluated or trained model."""
    score = summaries.get("score") or {}
    if score.get("model_version") and score.get("snapshot_date"):
        inputs.model_version, inputs.snapshot_date = score["model_version"], score["snapshot_date"]
        inputs.users_scored = score.get("users_scored")
        return
    predictions = table("predictions")
    if predictions is not None:
        row = (predictions.groupBy("snapshot_date", "model_version")
               .agg(F.max("scored_at").alias("at"), F.count(F.lit(1)).alias("users"))
               .orderBy(F.desc("snapshot_date"), F.desc("at")).first())
        if row is not None:
            inputs.model_version, inputs.snapshot_date = row["model_version"], str(row["snapshot_date"])
            inputs.users_scored = int(row["users"])
            return
    for stage in ("evaluate", "train"):
        if (summaries.get(stage) or {}).get("model_version"):
            inputs.model_version = summaries[stage]["model_version"]
            break
    inputs.missing["scored model"] = "nothing is scored yet (run `demandcast score`)"


def _read_evaluation(runs: Path, summaries: Mapping[str, dict], inputs: RunInputs) -> None:
    candidates = [v for v in (inputs.model_version, (summaries.get("evaluate") or {}).get("model_version"))
                  if v]
    for version in dict.fromkeys(candidates):
        folder = runs / "evaluations" / version
        if (folder / "metrics.json").is_file():
            inputs.evaluation = json.loads((folder / "metrics.json").read_text())
            if version != inputs.model_version:
                inputs.remarks["evaluation"] = (f"The scored model {inputs.model_version} has no "
                                                f"evaluation; shown: model {version}, the last one evaluated.")
            if (folder / "curves.json").is_file():
                inputs.curves = json.loads((folder / "curves.json").read_text())
            return
    where = runs / "evaluations" / (inputs.model_version or "<model_version>") / "metrics.json"
    inputs.missing["evaluation"] = (f"no evaluation of model {inputs.model_version or '(none)'} at {where} "
                                    "(run `demandcast evaluate`)")


def _read_history(runs: Path, summaries: Mapping[str, dict], inputs: RunInputs) -> None:
    version = inputs.model_version or (summaries.get("train") or {}).get("model_version")
    if not version:
        inputs.missing["training history"] = "no model is known to this run (run `demandcast train`)"
        return
    for path in (runs / "models" / version / "metrics.json",
                 runs / "train_runs" / version / "result.json"):
        if path.is_file():
            history = json.loads(path.read_text()).get("history")
            if history:
                inputs.history = history
                return
    inputs.missing["training history"] = (f"no per-epoch history for model {version} under "
                                          f"{runs / 'models' / version}")


def _feature_ranking(inputs: RunInputs) -> list[str]:
    """Candidate features, most important first: evaluation importances, then drift (PSI)."""
    ranked: list[str] = []
    importance = (inputs.evaluation or {}).get("feature_importance") or {}
    for key in (*_IMPORTANCE_KEYS, *importance):
        values = importance.get(key) or {}
        ranked += [f for f, _ in sorted(values.items(), key=lambda kv: -(kv[1] or 0.0))]
    ranked += [d["feature"] for d in inputs.drift or []]
    return list(dict.fromkeys(ranked))


def _table_of_scored_snapshot(table, name: str, section: str, inputs: RunInputs) -> DataFrame | None:
    """The table a section reads for the scored snapshot, or None with the reason noted."""
    if not inputs.snapshot_date:
        inputs.missing[section] = "nothing is scored yet (run `demandcast score`)"
        return None
    df = table(name)
    if df is None:
        inputs.missing[section] = inputs.missing[name]
    return df


def _read_feature_samples(table, cfg: PipelineConfig, inputs: RunInputs) -> None:
    features = _table_of_scored_snapshot(table, "user_features", "feature distributions", inputs)
    if features is None:
        return
    numeric = [f.name for f in features.schema.fields
               if isinstance(f.dataType, NumericType) and f.name not in _NOT_FEATURES]
    settings = cfg.report
    if settings.features:
        unknown = [c for c in settings.features if c not in numeric]
        if unknown:
            inputs.remarks["feature distributions"] = (f"report.features {unknown} are not numeric "
                                                       "columns of user_features: left out.")
        chosen = [c for c in settings.features if c in numeric]
    else:
        chosen = [c for c in _feature_ranking(inputs) if c in numeric] or numeric
    chosen = chosen[:settings.max_features]
    snapshots = {f"scored {inputs.snapshot_date}": inputs.snapshot_date}
    if inputs.reference_snapshot_date and inputs.reference_snapshot_date != inputs.snapshot_date:
        snapshots[f"reference {inputs.reference_snapshot_date}"] = inputs.reference_snapshot_date
    samples: dict[str, dict[str, list[float]]] = {c: {} for c in chosen}
    for label, snapshot in snapshots.items():
        rows = features.where(F.col("snapshot_date") == F.lit(snapshot).cast("date"))
        n = rows.count()
        if n > settings.sample_rows:
            rows = rows.sample(fraction=min(1.0, 1.2 * settings.sample_rows / n), seed=cfg.seed)
        frame = rows.select(*[F.col(c).cast("double").alias(c) for c in chosen]) \
            .limit(settings.sample_rows).toPandas()
        for column in chosen:
            samples[column][label] = frame[column].dropna().tolist()
    if not chosen or not any(v for s in samples.values() for v in s.values()):
        inputs.missing["feature distributions"] = f"user_features has no rows for snapshot {inputs.snapshot_date}"
        return
    inputs.feature_samples = samples


def _scored_partition(df: DataFrame, inputs: RunInputs) -> DataFrame:
    return df.where((F.col("snapshot_date") == F.lit(inputs.snapshot_date).cast("date"))
                    & (F.col("model_version") == F.lit(inputs.model_version)))


def _read_category_demand(table, cfg: PipelineConfig, inputs: RunInputs) -> None:
    demand = _table_of_scored_snapshot(table, "category_demand", "category demand", inputs)
    if demand is None:
        return
    rows = (_scored_partition(demand, inputs).orderBy(F.desc("expected_buyers"))
            .limit(cfg.report.max_categories).collect())
    if not rows:
        inputs.missing["category demand"] = (f"category_demand has no rows for snapshot "
                                             f"{inputs.snapshot_date} and model {inputs.model_version}")
        return
    inputs.category_demand = [{"category_id": r["category_id"], "expected_buyers": float(r["expected_buyers"]),
                               "expected_revenue": float(r["expected_revenue"]), "n_users": int(r["n_users"])}
                              for r in rows]


def _read_drivers(table, cfg: PipelineConfig, score_report: dict | None, inputs: RunInputs) -> None:
    importance = (score_report or {}).get("global_importance") or []
    if importance:
        inputs.global_importance = {g["feature_group"]: float(g["mean_abs_contribution"]) for g in importance}
        inputs.importance_source = ("mean |occlusion contribution| to p_purchase over the users "
                                    "explained at scoring")
    else:
        evaluated = ((inputs.evaluation or {}).get("feature_importance") or {}).get(_IMPORTANCE_KEYS[0])
        if evaluated:
            inputs.global_importance = evaluated
            inputs.importance_source = ("test AUC lost when the input is shuffled (evaluation); "
                                        "scoring explained no users")
        else:
            inputs.missing["global importance"] = ("neither the scoring report nor the evaluation "
                                                   "has a global importance")
    if cfg.report.driver_examples == 0:
        inputs.missing["driver examples"] = "report.driver_examples is 0"
        return
    predictions = _table_of_scored_snapshot(table, "predictions", "driver examples", inputs)
    if predictions is None:
        return
    rows = (_scored_partition(predictions, inputs).where(F.col("drivers").isNotNull())
            .select("user_key", "p_purchase", "decile", "drivers")
            .orderBy(F.desc("p_purchase")).limit(cfg.report.driver_examples).collect())
    if not rows:
        inputs.missing["driver examples"] = (
            "no user was explained when this snapshot was scored: set score.explain_fraction "
            "(e.g. 0.01) or score.explain_user_keys and rescore (score.force=true)")
        return
    inputs.driver_examples = [
        {"user_key": r["user_key"][:12] + "…", "p_purchase": float(r["p_purchase"]), "decile": r["decile"],
         "drivers": "; ".join(f"{d['feature_group']} {d['contribution']:+.4f}" for d in r["drivers"])}
        for r in rows]
