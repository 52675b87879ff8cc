"""One training run end to end: pin the data, compute preprocessing, train on K ranks, record."""
from __future__ import annotations

import json
import time
from pathlib import Path

from pyspark.sql import SparkSession

from demandcast.config import PipelineConfig
from demandcast.errors import StageFailed
from demandcast.logs import get_logger
from demandcast.run_folders import local_dir
from demandcast.tables import read_optional_table
from training.dataset import TrainingSet, build_training_set, pin_training_set
from training.distributed import RESULT_FILE
from training.launch import SPEC_FILE, launch
from training.lineage import model_row, record_model
from training.model_directory import METRICS_JSON, code_version
from training.model_status import CHAMPION, first_model_status
from training.preprocessing import compute_state, save_state
from training.window import window_for

log = get_logger("training.run")


def new_model_version(training_set: TrainingSet) -> str:
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-ts{training_set.version}"


def unfinished_runs(runs_dir: Path) -> list[Path]:
    """Runs that have a spec but no result, oldest first: each can still be resumed."""
    return sorted((p for p in (runs_dir / "train_runs").glob("*")
                   if (p / SPEC_FILE).is_file() and not (p / RESULT_FILE).is_file()),
                  key=lambda p: p.name)


def unfinished_run(runs_dir: Path) -> Path:
    """The newest run that has a spec and a checkpoint but no result: what --resume continues."""
    candidates = unfinished_runs(runs_dir)
    if not candidates:
        raise StageFailed(f"--resume: no unfinished training run under {runs_dir / 'train_runs'} "
                          "(every run there finished, or none started): run `train` without --resume")
    return candidates[-1]


def missing_files(spark: SparkSession, uris: list[str]) -> list[str]:
    """Those of `uris` (data file URIs as Spark's inputFiles gives them, any Hadoop file system)
    that do not exist."""
    jvm, conf = spark._jvm, spark._jsc.hadoopConfiguration()
    missing = []
    for uri in uris:
        path = jvm.org.apache.hadoop.fs.Path(jvm.java.net.URI(uri))  # the URI form decodes %xx
        if not path.getFileSystem(conf).exists(path):
            missing.append(uri)
    return missing


def resumed_spec(spark: SparkSession, run_dir: Path) -> dict:
    """The spec of the unfinished run in `run_dir`, for --resume, once its training set's files
    are known to be there: when the failed run had created the training_set table, its
    rollback removed the table, and the run cannot continue on the same rows."""
    spec = {**json.loads((run_dir / SPEC_FILE).read_text()), "resume": True}
    version = spec["model_info"]["training_set"]["version"]
    missing = missing_files(spark, spec["train_files"] + spec["validation_files"])
    if missing:
        raise StageFailed(
            f"--resume: run {run_dir.name} trained on training_set version {version}, whose "
            f"files are gone ({len(missing)} missing, e.g. {missing[0]}): the failed run had "
            "created the training_set table and was rolled back, which removed it. Run `train` "
            "without --resume to build the training set again and start a new run")
    log.info("resuming run %s (training_set version %s)", run_dir.name, version)
    return spec


def training_snapshots(spark: SparkSession, cfg: PipelineConfig) -> list:
    """train.snapshot_dates; else, for a scheduled run (as_of), the rolling window of labelled
    snapshots up to as_of (training.window); else the root snapshot_dates."""
    settings = cfg.train
    if settings.snapshot_dates or cfg.as_of is None:
        return list(settings.snapshot_dates or cfg.snapshot_dates)
    labels = read_optional_table(spark, cfg.warehouse, "labels")
    labelled = set() if labels is None else {
        r[0] for r in labels.select("snapshot_date").distinct().collect() if r[0] is not None}
    dates = window_for(settings, labelled, cfg.as_of)
    log.info("as of %s: training on the labelled snapshots %s", cfg.as_of, [str(d) for d in dates])
    return dates


def prepare_run(spark: SparkSession, cfg: PipelineConfig) -> dict:
    """Pins (or builds) the training set, computes the preprocessing state, writes the run spec."""
    settings = cfg.train
    runs_dir = local_dir(cfg.runs_dir)
    if settings.training_set_version is not None:
        training_set = pin_training_set(spark, cfg.warehouse, settings.training_set_version, settings)
    else:
        dates = training_snapshots(spark, cfg)
        training_set = build_training_set(spark, cfg.warehouse, settings, dates)
    model_version = new_model_version(training_set)
    run_dir = runs_dir / "train_runs" / model_version
    state = compute_state(training_set, training_set.read(spark, "train"), settings)
    state_path = save_state(state, run_dir)
    return {
        "run_dir": str(run_dir),
        "model_dir": str(runs_dir / "models" / model_version),
        "state_path": str(state_path),
        "train_files": training_set.files(spark, "train"),
        "validation_files": training_set.files(spark, "validation"),
        "numeric": list(training_set.columns.numeric),
        "categorical": list(training_set.columns.categorical),
        "labels": training_set.label_columns(),
        "train_rows": training_set.row_counts.get("train", 0),
        "validation_rows": training_set.row_counts.get("validation", 0),
        "seed": cfg.seed,
        "settings": settings.model_dump(mode="json"),
        "resume": False,
        "model_info": {
            "model_version": model_version,
            "training_set": training_set.to_json(),
            "config": cfg.model_dump(mode="json"),
            "code_version": code_version(),
        },
    }


def train(spark: SparkSession, cfg: PipelineConfig) -> dict:
    settings = cfg.train
    if settings.resume:
        spec = resumed_spec(spark, unfinished_run(local_dir(cfg.runs_dir)))
    else:
        spec = prepare_run(spark, cfg)
    result = launch(spec, settings.launcher, settings.num_proc, settings.timeout_s, settings.use_gpu)
    row = first_model_status(spark, cfg.warehouse, model_row(result, spec["model_info"]))
    if cfg.mlflow.tracking_uri:  # before the table, so the row can say where MLflow has it
        row.update(track_training(cfg, spec, result))
    models_version = record_model(spark, cfg.warehouse, row)
    if cfg.mlflow.tracking_uri and row["status"] == CHAMPION:
        from training import tracking

        tracking.move_champion_alias(cfg.mlflow, row)
    val = result["metrics"]["validation"]["calibrated"]
    return {
        "model_version": spec["model_info"]["model_version"],
        "model_dir": result["model_dir"],
        "training_set_version": spec["model_info"]["training_set"]["version"],
        "ranks": result["size"], "resumed_from_epoch": result["resumed_from_epoch"],
        "epochs_run": result["start_epoch"] + result["epochs_run"],
        "val_roc_auc": round(val["roc_auc"], 4), "val_ece": round(val["ece"], 4),
        "models_table_version": models_version, "status": row["status"],
    }


def track_training(cfg: PipelineConfig, spec: dict, result: dict) -> dict[str, str]:
    """Logs the finished run to MLflow: train.* and the training set as parameters, the
    per-epoch history, the model. Returns the row's mlflow_* columns."""
    from training import tracking

    info = spec["model_info"]
    metrics = json.loads((Path(result["model_dir"]) / METRICS_JSON).read_text())
    params = {"train": cfg.train.model_dump(mode="json"),
              "training_set": {k: info["training_set"][k] for k in ("version", "snapshot_dates", "protocol")},
              "code_version": info["code_version"], "label_window_days": cfg.label_window_days}
    return tracking.log_training(cfg.mlflow, info["model_version"], result["model_dir"], params, metrics)
