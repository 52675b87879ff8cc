"""Champion and challenger state in the `models` table: which model is champion, and each
decision about a model (status, metric, compared-to, reason).

A decision changes one or two model rows (a promotion makes the challenger champion and retires
the old champion; a rollback swaps them back) and is committed as one MERGE on model_version:
the table never shows two champions or none in between. Each row keeps its current state in flat
columns (`status`, `decision_*`, `compared_to`) for SQL, and every decision in `decisions`.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from demandcast.logs import get_logger
from demandcast.tables import current_version, merge_table, read_table, table_path
from training.lineage import MODELS_SPEC, SCHEMA, upgraded_models_table

log = get_logger("training.model_status")

CHAMPION = "champion"
CHALLENGER = "challenger"           # trained, not decided yet
REJECTED = "challenger_rejected"
RETIRED = "retired"                 # a champion a better challenger replaced
ROLLED_BACK = "rolled_back"         # a champion a rollback removed
DECIDED = (CHAMPION, REJECTED, RETIRED, ROLLED_BACK)


@dataclass(frozen=True)
class Decision:
    model_version: str
    status: str
    reason: str
    metric: str | None = None
    value: float | None = None
    compared_to: str | None = None
    compared_value: float | None = None
    snapshot_date: dt.date | None = None
    # Set on a promotion only: the champion the model replaced, where a rollback returns.
    promoted_over: str | None = None


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def applied(row: dict, decision: Decision, at: dt.datetime) -> dict:
    """`row` (a models row as a dict) after `decision`: its current state and its history."""
    entry = {"decided_at": at, "status": decision.status, "metric": decision.metric,
             "value": decision.value, "compared_to": decision.compared_to,
             "compared_value": decision.compared_value, "snapshot_date": decision.snapshot_date,
             "reason": decision.reason}
    out = {**row, "status": decision.status, "decision_metric": decision.metric,
           "decision_value": decision.value, "compared_to": decision.compared_to,
           "compared_value": decision.compared_value, "decision_snapshot": decision.snapshot_date,
           "decision_reason": decision.reason, "decided_at": at,
           "decisions": [*(row.get("decisions") or []), entry]}
    if decision.promoted_over is not None:
        out["promoted_over"] = decision.promoted_over
    return out


def models_rows(spark: SparkSession, warehouse: str) -> dict[str, dict]:
    """Every models row by version (one per trained model: small, whatever the user base)."""
    if current_version(spark, table_path(warehouse, "models")) is None:
        return {}
    upgraded_models_table(spark, warehouse)
    return {r["model_version"]: r.asDict(recursive=True)
            for r in read_table(spark, warehouse, "models").collect()}


def champion_of(rows: dict[str, dict]) -> dict | None:
    """The champion row; None before the first model. Decisions commit both sides of a swap
    together, so two champions only come from hand edits: the latest decided one counts."""
    champions = [r for r in rows.values() if r.get("status") == CHAMPION]
    if len(champions) > 1:
        log.warning("the models table has %d champions (%s): using the latest decided",
                    len(champions), sorted(r["model_version"] for r in champions))
    return max(champions, key=lambda r: (r.get("decided_at") or dt.datetime.min,
                                         r["model_version"]), default=None)


def commit_decisions(spark: SparkSession, warehouse: str, rows: dict[str, dict],
                     decisions: list[Decision]) -> int:
    """One MERGE with every row the decisions change; returns the models table version."""
    at = now_utc()
    changed = [applied(rows[d.model_version], d, at) for d in decisions]
    for d in decisions:
        log.info("model %s: %s (%s)", d.model_version, d.status, d.reason)
    df = spark.createDataFrame(changed, SCHEMA)
    return merge_table(df, warehouse, MODELS_SPEC, ["model_version"], update_matched=True)


def first_model_status(spark: SparkSession, warehouse: str, row: dict) -> dict:
    """A newly trained model's row: champion when the table has none (the first model has
    nothing to beat), else a challenger waiting for its decision."""
    if champion_of(models_rows(spark, warehouse)) is not None:
        return {**row, "status": CHALLENGER}
    return applied(row, Decision(row["model_version"], CHAMPION,
                                 "first model: there is no champion to compare with"), now_utc())
