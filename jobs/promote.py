"""`demandcast promote`: the champion/challenger decision for a model (promote.model_version,
default the newest), or with --rollback the previous champion back as champion."""
from __future__ import annotations

import os

from demandcast.cli import job_main
from demandcast.config import PipelineConfig
from demandcast.session import build_spark_session


def run(cfg: PipelineConfig) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from training.evaluation.promotion import decide, rollback

    spark = build_spark_session("promote", cfg.spark)
    return rollback(spark, cfg) if cfg.promote.rollback else decide(spark, cfg)


if __name__ == "__main__":
    job_main("promote")
