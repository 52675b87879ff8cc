"""`demandcast train`: Wide & Deep on the pinned training set, data-parallel with Horovod."""
from __future__ import annotations

from demandcast.cli import job_main
from demandcast.config import PipelineConfig
from demandcast.session import build_spark_session


def run(cfg: PipelineConfig) -> dict:
    from training.run import train

    spark = build_spark_session("train", cfg.spark)
    return train(spark, cfg)


if __name__ == "__main__":
    job_main("train")
