"""The Horovod training function: the same code under `horovodrun -np K` and `horovod.spark.run`.

`train_worker(spec)` runs on every rank: device setup, the model and its optimisers, the epoch
loop (trainer.py), then, on rank 0, Platt calibration on the validation rows and the model
directory. The spec (plain JSON, see launch.py) names the pinned files, the preprocessing state and
the settings. Rank 0 alone writes checkpoints, TensorBoard logs and the model directory; every rank
writes a checksum of its final weights, which shows that data-parallel training kept the replicas
identical.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from training.batches import InputSpec
from training.devices import configure_devices
from training.input import ShardReader
from training.progress import EpochProgress
from training.trainer import (BEST_WEIGHTS, Batching, Checkpoints, FitResult, LossWeights,
                              Trainable, build_trainable, fit, make_predict_logits, make_train_step,
                              predicted_logits)

RESULT_FILE = "result.json"


def weights_checksum(variables) -> str:
    digest = hashlib.sha256()
    for v in sorted(variables, key=lambda v: v.name):
        digest.update(v.name.encode())
        digest.update(np.ascontiguousarray(v.numpy()).tobytes())
    return digest.hexdigest()


def reader_spec(spec: dict) -> InputSpec:
    """The columns every rank reads: model inputs and float labels."""
    return InputSpec(tuple(spec["numeric"]), tuple(spec["categorical"]), tuple(spec["labels"]))


def seed_everything(seed: int) -> None:
    """Keras draws the seeds of unseeded initializers and dropout from Python's `random`:
    set_random_seed seeds it with numpy and TensorFlow, so the same seed gives the same model
    (tests/reliability/test_determinism.py); op determinism pins the kernels' reduction order."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def platt_calibration(logits: np.ndarray, labels: np.ndarray, method: str) -> dict:
    """p = sigmoid(a * logit + b), a and b fitted on validation rows (identity when the method is
    not platt or the rows hold one class only)."""
    from sklearn.linear_model import LogisticRegression

    if method == "platt" and 0 < labels.sum() < len(labels):
        platt = LogisticRegression(C=1e6, max_iter=1000).fit(logits.reshape(-1, 1), labels)
        return {"method": "platt", "a": float(platt.coef_[0, 0]), "b": float(platt.intercept_[0])}
    return {"method": "none", "a": 1.0, "b": 0.0}


def validation_metrics(logits: np.ndarray, labels: np.ndarray, calibration: dict) -> dict:
    """Classification metrics of the validation rows before and after calibration."""
    from training import metrics as M

    raw_p = 1 / (1 + np.exp(-logits))
    cal_p = 1 / (1 + np.exp(-(calibration["a"] * logits + calibration["b"])))
    validation = {"uncalibrated": M.classification_metrics(labels, raw_p),
                  "calibrated": M.classification_metrics(labels, cal_p)}
    for block in validation.values():
        block.pop("reliability", None)
        block.pop("lift", None)
    return validation


def calibrate(trainable: Trainable, predict_logits, batching: Batching, spec: dict, seed: int,
              run_dir: Path) -> tuple[dict, dict]:
    """Rank 0: the best epoch's weights, Platt calibration of the purchase logit on the whole
    validation split (set in the model's calibration layer), and the validation metrics."""
    if (run_dir / BEST_WEIGHTS).with_suffix(".index").exists():
        trainable.model.load_weights(str(run_dir / BEST_WEIGHTS)).expect_partial()
    validation = ShardReader(spec["validation_files"], reader_spec(spec), 0, 1, seed)
    logits, labels = predicted_logits(predict_logits, batching.batches_of(validation, 0))
    calibration = platt_calibration(logits, labels, spec["settings"]["calibration"])
    layer = trainable.model.get_layer("calibration")
    layer.a.assign(calibration["a"])
    layer.b.assign(calibration["b"])
    return calibration, validation_metrics(logits, labels, calibration)


def rank_result(hvd, trainable: Trainable, fitted: FitResult, train_step, device: str,
                resumed_from: int | None, run_dir: Path) -> dict:
    """What every rank reports, with the checksum of its final weights written beside the run."""
    checksum = weights_checksum(trainable.model.trainable_variables)
    (run_dir / f"weights_rank{hvd.rank()}.sha256").write_text(checksum)
    return {"rank": hvd.rank(), "size": hvd.size(), "pid": os.getpid(), "host": socket.gethostname(),
            "device": device, "weights_sha256": checksum,
            "resumed_from_epoch": resumed_from, "start_epoch": fitted.start_epoch,
            "epochs_run": len(fitted.history), "history": fitted.history,
            "train_step_traces": train_step.experimental_get_tracing_count(),
            "examples_per_s": fitted.examples / fitted.seconds if fitted.seconds > 0 else None}


def save_model(trainable: Trainable, state: dict, spec: dict, calibration: dict, metrics: dict,
               run_dir: Path) -> None:
    """Rank 0: the model directory (training.model_directory) with its calibration."""
    from training.model_directory import save_model_dir

    state["calibration"] = calibration
    info = {**spec["model_info"], "params": asdict(trainable.params), "calibration": calibration,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    save_model_dir(trainable.model, state, spec["model_dir"], info, metrics, run_dir / "tensorboard")


def train_worker(spec: dict) -> dict:
    """One rank's whole run; rank 0's result also names the model directory and its metrics."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import horovod.tensorflow as hvd

    from training.model import spend_scale

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    settings = spec["settings"]
    plan = configure_devices(hvd, settings["use_gpu"], settings["mixed_precision"])
    device = plan.describe()
    seed = int(spec["seed"])
    seed_everything(seed)
    run_dir = Path(spec["run_dir"])
    state = json.loads(Path(spec["state_path"]).read_text())
    inputs = reader_spec(spec)
    batch_size = int(settings["batch_size"])
    steps_per_epoch = max(1, math.ceil(int(spec["train_rows"]) / (batch_size * size)))

    trainable = build_trainable(state, settings, size, steps_per_epoch)
    checkpoints = Checkpoints.open(trainable, run_dir)
    resumed_from = checkpoints.restore_latest(hvd, trainable, bool(spec.get("resume")))
    weights = LossWeights.from_settings(settings, spend_scale(state), len(state["category_ids"]))
    train_step = make_train_step(hvd, trainable, inputs, weights)
    predict_logits = make_predict_logits(trainable.model, inputs)

    # Decoded shards stay in memory between epochs when they fit (train.input_cache_mb per rank).
    cache_mb = float(settings.get("input_cache_mb", 0))
    train_reader = ShardReader(spec["train_files"], inputs, rank, size, seed, cache_mb)
    validation_reader = ShardReader(spec["validation_files"], inputs, rank, size, seed, cache_mb)
    batching = Batching(batch_size, settings["shuffle_buffer_batches"])
    display = EpochProgress(steps_per_epoch, int(settings["epochs"]), enabled=rank == 0)
    fitted = fit(hvd, trainable, checkpoints, train_step, predict_logits, train_reader,
                 validation_reader, batching, spec, display)

    result = rank_result(hvd, trainable, fitted, train_step, device, resumed_from, run_dir)
    if rank != 0:
        return result
    calibration, validation = calibrate(trainable, predict_logits, batching, spec, seed, run_dir)
    metrics = {"validation": validation, "history": fitted.history,
               "best_val_auc": float(checkpoints.best_auc.numpy()),
               "examples_per_s": result["examples_per_s"], "ranks": size, "device": device,
               "dtype_policy": plan.policy}
    save_model(trainable, state, spec, calibration, metrics, run_dir)
    result.update({"model_dir": spec["model_dir"], "metrics": metrics})
    (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=1, default=str))
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m training.distributed SPEC.json` (what horovodrun starts on every rank)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m training.distributed RUN_SPEC.json", file=sys.stderr)
        return 2
    train_worker(json.loads(Path(args[0]).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
