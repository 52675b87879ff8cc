"""run-all: generate (local only), ingest, features, train, evaluate, score, for the configured
snapshots; stages whose outputs are current are skipped unless --force."""
from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

if __name__ == "__main__":
    # `spark-submit jobs/<stage>.py` puts jobs/ first on sys.path, where jobs/features.py hides
    # the `features` package: the project root (or, on a cluster, the shipped zip) comes first.
    _sys.path[0] = str(_Path(__file__).resolve().parent.parent)

import importlib.util

from demandcast.cli import STAGES, job_main, run_stage
from demandcast.config import PipelineConfig
from demandcast.logs import get_logger
from demandcast.pipeline import STAGE_ORDER, render_summary, run_pipeline
from demandcast.session import build_spark_session
from demandcast.tables import absolute_uri

log = get_logger("run_all")


def run(cfg: PipelineConfig) -> dict:
    built = [s for s in STAGE_ORDER if importlib.util.find_spec(STAGES[s])]
    missing = [s for s in STAGE_ORDER if s not in built]
    if missing:
        log.warning("stages not built yet, skipped: %s", ", ".join(missing))
    stages = [s for s in built if s != "generate" or cfg.env == "local"]
    spark = build_spark_session("run-all", cfg.spark)
    outcomes = run_pipeline(cfg, stages, run_stage, spark, force=cfg.run_all.force)
    print(render_summary(outcomes), flush=True)
    print(f"tables: {absolute_uri(cfg.warehouse)}/<table>", flush=True)
    return {
        "stages": {o.stage: o.status for o in outcomes},
        "missing": missing,
        **{f"{o.stage}_seconds": round(o.seconds, 1) for o in outcomes},
    }


if __name__ == "__main__":
    job_main("run-all")
