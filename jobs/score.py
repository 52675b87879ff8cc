"""score: score every user of a feature snapshot with the chosen model into predictions and
category_demand, and report feature drift and importance."""
from __future__ import annotations

import os

from demandcast.cli import job_main
from demandcast.config import PipelineConfig
from demandcast.session import build_spark_session


def run(cfg: PipelineConfig) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from training.scoring.stage import run_score

    spark = build_spark_session("score", cfg.spark)
    return run_score(spark, with_as_of_snapshot(cfg))


def with_as_of_snapshot(cfg: PipelineConfig) -> PipelineConfig:
    """A scheduled run (as_of) scores snapshot as_of unless score.snapshot_date pins another."""
    if cfg.as_of is None or cfg.score.snapshot_date is not None:
        return cfg
    return cfg.model_copy(update={"score": cfg.score.model_copy(update={"snapshot_date": cfg.as_of})})


if __name__ == "__main__":
    job_main("score")
