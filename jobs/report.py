"""report: rebuild the run report (HTML) from the tables and run folders as the last run left
them, without rerunning any stage."""
from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

if __name__ == "__main__":
    # `spark-submit jobs/<stage>.py` puts jobs/ first on sys.path, where jobs/features.py hides
    # the `features` package: the project root (or, on a cluster, the shipped zip) comes first.
    _sys.path[0] = str(_Path(__file__).resolve().parent.parent)

from demandcast.cli import job_main
from demandcast.config import PipelineConfig
from demandcast.session import build_spark_session
from demandcast.tables import require_some_table


def run(cfg: PipelineConfig) -> dict:
    from training.reporting.inputs import ledger_summaries
    from training.reporting.run_report import make_run_report
    from training.reporting.sections import key_figures

    spark = build_spark_session("report", cfg.spark)
    require_some_table(spark, cfg.warehouse)
    summaries, stages = ledger_summaries(cfg)
    path, inputs = make_run_report(spark, cfg, summaries, stages)
    return {**key_figures(inputs), "missing": sorted(inputs.missing), "report_html": str(path)}


if __name__ == "__main__":
    job_main("report")
