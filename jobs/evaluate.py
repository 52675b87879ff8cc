"""`demandcast evaluate`: metrics JSON + HTML report for a model and its baselines."""
from __future__ import annotations

from demandcast.cli import job_main
from demandcast.config import PipelineConfig
from demandcast.session import build_spark_session


def run(cfg: PipelineConfig) -> dict:
    from training.evaluation.stage import evaluate

    spark = build_spark_session("evaluate", cfg.spark)
    return evaluate(spark, cfg)


if __name__ == "__main__":
    job_main("evaluate")
