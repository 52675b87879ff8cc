"""run-all: generate (local only), ingest, features, train, evaluate, score, for the configured
snapshots; stages whose outputs are current are skipped unless --force."""
from __future__ import annotations

import importlib.util

from demandcast.cli import STAGES, job_main, run_stage
from demandcast.config import PipelineConfig
from demandcast.logs import get_logger
from demandcast.pipeline import (STAGE_ORDER, StageOutcome, render_summary, run_pipeline,
                                 table_locations)
from demandcast.session import build_spark_session

log = get_logger("run_all")


def run(cfg: PipelineConfig) -> dict:
    built = [s for s in STAGE_ORDER if importlib.util.find_spec(STAGES[s])]
    missing = [s for s in STAGE_ORDER if s not in built]
    if missing:
        log.warning("stages not built yet, skipped: %s", ", ".join(missing))
    wanted = set(cfg.run_all.stages or STAGE_ORDER)
    stages = [s for s in built if s in wanted and (s != "generate" or cfg.env == "local")]
    unscheduled = not_scheduled(cfg, stages)
    stages = [s for s in stages if s not in unscheduled]
    spark = build_spark_session("run-all", cfg.spark)
    outcomes = run_pipeline(cfg, stages, run_stage, spark, force=cfg.run_all.force)
    for stage in unscheduled:
        index = next((i for i, o in enumerate(outcomes) if STAGE_ORDER.index(o.stage) > STAGE_ORDER.index(stage)),
                     len(outcomes))
        outcomes.insert(index, StageOutcome(stage, "not scheduled", 0.0, {}, unscheduled[stage]))
    report, figures = _run_report(spark, cfg, outcomes)
    locations = {**table_locations(cfg.warehouse), "run report": report or "not written (see log)"}
    print(render_summary(outcomes, figures, locations), flush=True)
    summary = {
        "stages": {o.stage: o.status for o in outcomes},
        "missing": missing,
        **{f"{o.stage}_seconds": round(o.seconds, 1) for o in outcomes},
    }
    if report:
        summary["report_html"] = report  # the CLI prints it as the last line
    return summary


def not_scheduled(cfg: PipelineConfig, stages: list[str]) -> dict[str, str]:
    """Stages a scheduled run (as_of) leaves out today, with the reason: train and evaluate
    outside train.schedule."""
    from training.window import retrain_due

    if cfg.as_of is None or "train" not in stages or retrain_due(cfg.train, cfg.as_of):
        return {}
    why = (f"as of {cfg.as_of} ({cfg.as_of.strftime('%A')}): train.schedule is weekly on "
           f"{cfg.train.schedule_weekday}")
    log.info("train and evaluate not run today: %s", why)
    return {s: why for s in ("train", "evaluate") if s in stages}


def _run_report(spark, cfg: PipelineConfig, outcomes: list[StageOutcome]) -> tuple[str | None, dict]:
    """The run's HTML report, also when every stage was skipped. A report that cannot be written
    (runs_dir not writable, a bug in a plot) is logged and leaves the pipeline's result alone."""
    from training.reporting.run_report import make_run_report
    from training.reporting.sections import key_figures

    stages = [{"stage": o.stage, "status": o.status, "seconds": round(o.seconds, 1), "why": o.reason}
              for o in outcomes]
    try:
        path, inputs = make_run_report(spark, cfg, {o.stage: o.summary for o in outcomes}, stages)
    except Exception:
        log.exception("the run report could not be written")
        return None, {}
    return str(path), key_figures(inputs)


if __name__ == "__main__":
    job_main("run-all")
