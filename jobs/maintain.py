"""maintain: OPTIMIZE the tables that collect small files and VACUUM every table within a
retention that keeps each training_set version a model or an unfinished training run pins."""
from __future__ import annotations

import time

from demandcast.cli import job_main
from demandcast.config import PipelineConfig
from demandcast.session import build_spark_session
from demandcast.tables import require_some_table, table_path
from demandcast.tables.maintenance import maintain_table


def run(cfg: PipelineConfig) -> dict:
    from training.pins import training_set_pins

    settings = cfg.maintain
    spark = build_spark_session("maintain", cfg.spark)
    require_some_table(spark, cfg.warehouse)
    pins = {"training_set": training_set_pins(spark, cfg.warehouse, cfg.runs_dir)}
    now = time.time()
    tables = dict.fromkeys([*settings.optimize_tables, *settings.vacuum_tables])
    reports = [maintain_table(spark, name, table_path(cfg.warehouse, name),
                              compact=name in settings.optimize_tables,
                              clean=name in settings.vacuum_tables,
                              min_hours=settings.min_retention_hours,
                              min_log_hours=settings.min_log_retention_days * 24,
                              pins=pins.get(name, ()), now=now,
                              margin_hours=settings.pin_margin_hours)
               for name in tables]
    return {"tables": {r.pop("table"): r for r in reports}}


if __name__ == "__main__":
    job_main("maintain")
