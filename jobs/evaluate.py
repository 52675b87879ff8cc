"""`demandcast evaluate`: metrics JSON + HTML report for a model and its baselines."""
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


def run(cfg: PipelineConfig) -> dict:
    from training.evaluation.stage import evaluate

    spark = build_spark_session("evaluate", cfg.spark)
    return evaluate(spark, cfg)


if __name__ == "__main__":
    job_main("evaluate")
