"""The training_set versions still read: each model's (evaluate and a retrain's comparison read
its test split again, and the models table is the lineage of every score) and each unfinished
training run's (`train --resume` continues on the same files). Table upkeep keeps them."""
from __future__ import annotations

import json

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from demandcast.logs import get_logger
from demandcast.run_folders import local_dir
from demandcast.tables import read_optional_table, table_path
from demandcast.tables.maintenance import Pin
from training.launch import SPEC_FILE
from training.run import unfinished_runs

log = get_logger("maintain")


def _same_location(a: str | None, b: str) -> bool:
    return a is None or a.rstrip("/").removeprefix("file:") == b.rstrip("/").removeprefix("file:")


def model_pins(spark: SparkSession, warehouse: str) -> list[Pin]:
    """One pin per model row of this warehouse's training_set (a row without the column pins
    nothing: a models table written by hand, or before models recorded their data)."""
    models = read_optional_table(spark, warehouse, "models")
    if models is None or "training_set_version" not in models.columns:
        return []
    path_column = F.col("training_set_path") if "training_set_path" in models.columns else F.lit(None)
    rows = (models.where(F.col("training_set_version").isNotNull())
            .select("model_version", "training_set_version", path_column.alias("path")).collect())
    here = table_path(warehouse, "training_set")
    return [Pin(int(r.training_set_version), f"model {r.model_version}")
            for r in rows if _same_location(r.path, here)]


def unfinished_run_pins(runs_dir: str, warehouse: str) -> list[Pin]:
    """One pin per resumable training run under runs_dir that trained on this warehouse."""
    here = table_path(warehouse, "training_set")
    pins = []
    for run in unfinished_runs(local_dir(runs_dir)):
        try:
            training_set = json.loads((run / SPEC_FILE).read_text())["model_info"]["training_set"]
            version, path = int(training_set["version"]), training_set.get("path")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("unfinished run %s: its spec names no training_set version (%s); it pins "
                        "nothing", run.name, exc)
            continue
        if _same_location(path, here):
            pins.append(Pin(version, f"unfinished training run {run.name}"))
    return pins


def training_set_pins(spark: SparkSession, warehouse: str, runs_dir: str) -> list[Pin]:
    return model_pins(spark, warehouse) + unfinished_run_pins(runs_dir, warehouse)
