"""run-all: the stages in order, each skipped when its inputs and outputs are unchanged since
its last successful run (unless forced), with banners, durations and a closing summary table."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from demandcast.config import PipelineConfig
from demandcast.logs import get_logger
from demandcast.stage_ledger import StageLedger, StageRecord, fingerprint, still_current
from demandcast.tables import absolute_uri, current_version, table_path

log = get_logger("pipeline")

STAGE_ORDER = ("generate", "ingest", "features", "train", "evaluate", "score")

# The warehouse tables each stage leaves behind; their versions decide whether it reruns.
STAGE_OUTPUT_TABLES: dict[str, tuple[str, ...]] = {
    "generate": (),
    "ingest": ("events", "quarantine", "users", "items", "ingested_files"),
    "features": ("user_daily", "user_features", "labels"),
    # Not `models`: evaluate writes test metrics back into it, which is no change to training.
    "train": ("training_set",),
    "evaluate": (),
    "score": ("predictions", "category_demand", "predictions_current"),
}

# Config that changes no stage's output (where and how Spark runs, logging, run-all itself,
# the run report written after the stages, table upkeep, catalog names, the MLflow copy of
# what the tables record).
_NEUTRAL_KEYS = {"spark", "log_level", "run_all", "report", "maintain", "catalog", "mlflow"}


@dataclass
class StageOutcome:
    stage: str
    status: str  # ran | skipped | not scheduled | missing | failed
    seconds: float
    summary: dict[str, Any]
    reason: str = ""


def _stage_config(cfg: PipelineConfig, stage: str) -> dict[str, Any]:
    shared = {k: v for k, v in cfg.model_dump(mode="json").items()
              if k not in _NEUTRAL_KEYS and k not in STAGE_ORDER}
    return {"shared": shared, "section": getattr(cfg, stage.replace("-", "_")).model_dump(mode="json")}


def _artifacts(summary: dict[str, Any]) -> list[str]:
    """Local files or folders a stage reports (keys ending in _path or _dir) that exist now."""
    found = []
    for key, value in summary.items():
        if (key.endswith("_path") or key.endswith("_dir")) and isinstance(value, str) \
                and "://" not in value and Path(value).exists():
            found.append(str(Path(value).resolve()))
    return sorted(found)


def run_pipeline(
    cfg: PipelineConfig,
    stages: list[str],
    run_stage: Callable[[str, PipelineConfig], dict],
    spark: Any,
    force: bool,
) -> list[StageOutcome]:
    ledger = StageLedger(Path(cfg.runs_dir) / "ledger")
    outcomes: list[StageOutcome] = []
    upstream = "root"
    rerun_from: str | None = None  # once a stage runs, every stage after it must run too
    for index, stage in enumerate(stages, start=1):
        fp = fingerprint(_stage_config(cfg, stage), upstream)
        upstream = fp
        tables = STAGE_OUTPUT_TABLES.get(stage, ())
        versions = {t: current_version(spark, table_path(cfg.warehouse, t)) for t in tables}
        record = ledger.load(stage)
        if force:
            reason: str | None = "forced"
        elif rerun_from is not None:
            reason = f"upstream stage {rerun_from} ran"
        else:
            reason = still_current(record, fp, versions)
        banner = f"[{index}/{len(stages)}] {stage}"
        if reason is None and record is not None:
            log.info("%s: skipped, unchanged since %s (use --force to rerun)", banner, record.finished_at)
            outcomes.append(StageOutcome(stage, "skipped", 0.0, record.summary))
            continue
        log.info("%s: running (%s)", banner, reason)
        started = time.monotonic()
        try:
            summary = run_stage(stage, _must_redo(cfg, stage)) or {}
        except BaseException:
            ledger.forget(stage)  # a failed stage must rerun, and so must everything after it
            outcomes.append(StageOutcome(stage, "failed", time.monotonic() - started, {}))
            log.error(render_summary(outcomes))
            raise
        seconds = time.monotonic() - started
        after = {t: current_version(spark, table_path(cfg.warehouse, t)) for t in tables}
        ledger.save(StageRecord(stage, fp, after, _artifacts(summary), summary, round(seconds, 1)))
        outcomes.append(StageOutcome(stage, "ran", seconds, summary, reason or ""))
        rerun_from = rerun_from or stage
    return outcomes


def _must_redo(cfg: PipelineConfig, stage: str) -> PipelineConfig:
    """The config a stage runs with once the ledger decided it must run (its config, its input
    tables or an upstream stage changed): score's own "this (snapshot, model) is already scored"
    shortcut would otherwise keep the predictions of the old features or settings, and the ledger
    would record them as fresh."""
    if stage == "score" and not cfg.score.force:
        return cfg.model_copy(update={"score": cfg.score.model_copy(update={"force": True})})
    return cfg


def table_locations(warehouse: str) -> dict[str, str]:
    """Where each table the pipeline writes lives (`models` is written by train and evaluate)."""
    names = dict.fromkeys([*(t for s in STAGE_ORDER for t in STAGE_OUTPUT_TABLES[s]), "models"])
    return {f"table {name}": table_path(absolute_uri(warehouse), name) for name in names}


def _is_location(key: str, value: Any) -> bool:
    return isinstance(value, str) and (key in ("report", "raw_dir") or key.endswith(("_path", "_dir")))


def _figures(summary: dict[str, Any], limit: int = 7) -> str:
    scalars = [(k, v) for k, v in summary.items()
               if isinstance(v, (int, float, str)) and not isinstance(v, bool)
               and not _is_location(k, v)]
    # Quality figures first: they are what a reader of the summary looks for.
    scalars.sort(key=lambda kv: not kv[0].startswith("auc_"))
    return ", ".join(f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in scalars[:limit])


def render_summary(outcomes: list[StageOutcome], figures: dict[str, Any] | None = None,
                   locations: dict[str, str] | None = None) -> str:
    """The stages table, then the run's key figures (rows in, quarantined, users scored, AUCs of
    model, baselines and oracle) and where each table and report is, when given."""
    rows = [("stage", "status", "seconds", "figures")]
    rows += [(o.stage, o.status, f"{o.seconds:.1f}", _figures(o.summary)) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [" | ".join(r[i].ljust(widths[i]) for i in range(3)) + " | " + r[3] for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths) + "-+-" + "-" * 20)
    if figures:
        width = max(len(k) for k in figures)
        lines += ["key figures:"] + [f"  {k.ljust(width)}  {_figure(v)}" for k, v in figures.items()]
    where = [f"  {o.stage}.{k}: {v}" for o in outcomes for k, v in o.summary.items()
             if _is_location(k, v)]
    where += [f"  {k}: {v}" for k, v in (locations or {}).items()]
    return "run-all summary\n" + "\n".join(lines) + ("\nwhere:\n" + "\n".join(where) if where else "")


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
