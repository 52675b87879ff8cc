"""report: rebuild the run report (HTML) from the tables and run folders as the last run left
them, without rerunning any stage."""
from __future__ import annotations

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
