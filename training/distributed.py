"""The Horovod training function: the same code under `horovodrun -np K` and `horovod.spark.run`.

`train_worker(spec)` runs on every rank. The spec (plain JSON, see launch.py) names the pinned
files, the preprocessing state and the settings. Rank 0 alone writes checkpoints, TensorBoard
logs and the model directory; every rank writes a checksum of its final weights, which shows that
data-parallel training kept the replicas identical.
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

from training.batches import WEIGHT, InputSpec, packed_dummy, packed_signature, unpack
from training.input import Prefetcher, ShardReader
from training.progress import EpochProgress

RESULT_FILE = "result.json"


def weights_checksum(variables) -> str:
    digest = hashlib.sha256()
    for v in sorted(variables, key=lambda v: v.name):
        digest.update(v.name.encode())
        digest.update(np.ascontiguousarray(v.numpy()).tobytes())
    return digest.hexdigest()


def configure_devices(hvd, use_gpu: bool, mixed_precision: bool) -> str:
    """One GPU per local rank (Horovod's recipe), or CPU threads shared among local ranks."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if use_gpu:
        if not gpus:
            raise RuntimeError("train.use_gpu is true but TensorFlow sees no GPU on this node")
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpus[hvd.local_rank() % len(gpus)], "GPU")
        if mixed_precision:
            tf.keras.mixed_precision.set_global_policy("mixed_float16")
        return f"gpu:{hvd.local_rank() % len(gpus)}"
    if gpus:
        tf.config.set_visible_devices([], "GPU")
    threads = max(1, (os.cpu_count() or 1) // hvd.local_size())
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    return f"cpu:{threads}threads"


def make_schedule(base_lr: float, size: int, scale: bool, warmup_steps: int):
    """LR x size (if scaled), reached linearly over the warm-up steps (Goyal et al., 2017)."""
    import tensorflow as tf

    target = base_lr * (size if scale else 1)

    class WarmUp(tf.keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            if warmup_steps <= 0:
                return tf.constant(target, tf.float32)
            frac = tf.minimum(1.0, (tf.cast(step, tf.float32) + 1.0) / float(warmup_steps))
            return target * (1.0 / size + (1.0 - 1.0 / size) * frac) if scale else target * frac

        def get_config(self):
            return {"target": target, "warmup_steps": warmup_steps}

    return WarmUp()


def train_worker(spec: dict) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import horovod.tensorflow as hvd
    import tensorflow as tf
    from sklearn.linear_model import LogisticRegression

    from training import metrics as M
    from training.model import ModelParams, build_model, spend_scale, wide_and_deep_variables
    from training.model_directory import save_model_dir

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    settings = spec["settings"]
    device = configure_devices(hvd, settings["use_gpu"], settings["mixed_precision"])
    seed = int(spec["seed"])
    # Keras draws the seeds of unseeded initializers and dropout from Python's `random`:
    # set_random_seed seeds it with numpy and TensorFlow, so the same seed gives the same model
    # (tests/reliability/test_determinism.py); op determinism pins the kernels' reduction order.
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    run_dir = Path(spec["run_dir"])
    state = json.loads(Path(spec["state_path"]).read_text())
    params = ModelParams(settings["embedding_dim"], tuple(settings["hidden_units"]),
                         settings["dropout"], settings["l2"], int(settings.get("ensemble_members", 1)))
    inputs = InputSpec(tuple(spec["numeric"]), tuple(spec["categorical"]), tuple(spec["labels"]))
    n_cat = len(state["category_ids"])
    scale = spend_scale(state)

    model = build_model(state, params)
    wide_vars, deep_vars = wide_and_deep_variables(model)
    batch_size = int(settings["batch_size"])
    steps_per_epoch = max(1, math.ceil(int(spec["train_rows"]) / (batch_size * size)))
    warmup = int(round(settings["warmup_epochs"] * steps_per_epoch))
    wide_lr = make_schedule(settings["wide_learning_rate"], size, settings["scale_lr_by_size"], warmup)
    deep_lr = make_schedule(settings["deep_learning_rate"], size, settings["scale_lr_by_size"], warmup)
    wide_opt = (tf.keras.optimizers.Ftrl(wide_lr) if settings["wide_optimizer"] == "ftrl"
                else tf.keras.optimizers.Adam(wide_lr))
    deep_opt = tf.keras.optimizers.Adam(deep_lr)
    mixed = settings["mixed_precision"]
    if mixed:
        deep_opt = tf.keras.mixed_precision.LossScaleOptimizer(deep_opt)
    wide_opt.build(wide_vars)
    deep_opt.build(deep_vars)

    progress = {"epoch": tf.Variable(0, dtype=tf.int64), "best_auc": tf.Variable(-1.0, dtype=tf.float64),
                "bad_epochs": tf.Variable(0, dtype=tf.int64)}
    checkpoint = tf.train.Checkpoint(model=model, wide_opt=wide_opt, deep_opt=deep_opt, **progress)
    manager = tf.train.CheckpointManager(checkpoint, str(run_dir / "checkpoints"), max_to_keep=2)
    resumed_from = None
    if spec.get("resume") and rank == 0 and manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint)
        resumed_from = int(progress["epoch"].numpy())
    # Rank 0's state (fresh or restored) is everyone's state.
    hvd.broadcast_variables(model.variables + list(wide_opt.variables) + list(deep_opt.variables)
                            + list(progress.values()), root_rank=0)
    resumed_from = hvd.broadcast_object(resumed_from, root_rank=0)

    pos_weight = float(settings["positive_weight"])
    w_spend, w_cat = float(settings["spend_loss_weight"]), float(settings["category_loss_weight"])

    def losses(out, batch):
        """Weighted mean losses; an ensemble's are the means of its members' own losses."""
        w = batch[WEIGHT]
        denom = tf.maximum(tf.reduce_sum(w), 1.0)
        members = "member_logits" in out
        logits = tf.cast(out["member_logits" if members else "logit"], tf.float32)
        # A row's labels, repeated for every member (the cross-entropy ops do not broadcast).
        per_row = (lambda t: tf.broadcast_to(t[:, None], tf.shape(logits))) if members else (lambda t: t)

        def weighted_mean(values):     # [batch] or [batch, members]
            if members:
                values = tf.reduce_mean(values, axis=1)
            return tf.reduce_sum(w * values) / denom

        purchase = weighted_mean(tf.nn.weighted_cross_entropy_with_logits(
            per_row(batch["label_purchased"]), logits, pos_weight))
        z = tf.minimum(tf.cast(out["member_spend_log" if members else "spend_log"], tf.float32), 20.0)
        spend = weighted_mean(tf.exp(z) - per_row(batch["label_spend"]) / scale * z)
        total = purchase + w_spend * spend
        category = tf.constant(0.0)
        if n_cat:
            yc = tf.stack([batch[f"label_cat_{i}"] for i in range(n_cat)], axis=1)
            cat_logits = tf.cast(out["member_category_logits" if members else "category_logits"],
                                 tf.float32)
            if members:
                yc = tf.broadcast_to(yc[:, None, :], tf.shape(cat_logits))
            ce = tf.nn.sigmoid_cross_entropy_with_logits(yc, cat_logits)
            category = weighted_mean(tf.reduce_mean(ce, axis=-1))
            total += w_cat * category
        return total, purchase, spend, category

    n_wide = len(wide_vars)
    feature_names = [*inputs.numeric, *inputs.categorical]

    # autograph=False: the steps hold no Python control flow on tensors, and converting every
    # Keras layer call made the first trace ~3 s (12%) slower on the tiny test pipeline.
    # The signature leaves the batch dimension open, so the last short batch of an epoch and a
    # rank's zero-weight dummy batch reuse the first trace instead of paying a second one.
    signature = [packed_signature(inputs)]

    @tf.function(input_signature=signature, autograph=False)
    def train_step(packed):
        batch = unpack(packed, inputs)
        with tf.GradientTape() as tape:
            out = model({c: batch[c] for c in feature_names}, training=True)
            total, purchase, spend, category = losses(out, batch)
            objective = total + tf.add_n(model.losses) if model.losses else total
            if mixed:
                objective = deep_opt.get_scaled_loss(objective)
        tape = hvd.DistributedGradientTape(tape, sparse_as_dense=True)
        grads = tape.gradient(objective, wide_vars + deep_vars)
        if mixed:
            grads = deep_opt.get_unscaled_gradients(grads)
            grads[:n_wide] = [tf.where(tf.math.is_finite(g), g, tf.zeros_like(g)) for g in grads[:n_wide]]
        wide_opt.apply_gradients(zip(grads[:n_wide], wide_vars))
        deep_opt.apply_gradients(zip(grads[n_wide:], deep_vars))
        return tf.stack([total, purchase, spend, category]), tf.reduce_sum(batch[WEIGHT])

    @tf.function(input_signature=signature, autograph=False)
    def predict_logits(packed):
        """Logits and purchase labels of one packed batch."""
        batch = unpack(packed, inputs)
        features = {c: batch[c] for c in feature_names}
        return tf.cast(model(features, training=False)["logit"], tf.float32), batch["label_purchased"]

    # Decoded shards stay in memory between epochs when they fit (train.input_cache_mb per rank).
    cache_mb = float(settings.get("input_cache_mb", 0))
    train_reader = ShardReader(spec["train_files"], inputs, rank, size, seed, cache_mb)
    validation_reader = ShardReader(spec["validation_files"], inputs, rank, size, seed, cache_mb)

    def epoch_batches(reader: ShardReader, epoch: int):
        return Prefetcher(lambda: reader.tensor_chunks(epoch, batch_size,
                                                       settings["shuffle_buffer_batches"]))

    def validation_scores() -> tuple[np.ndarray, np.ndarray]:
        """Logits and labels of the whole validation split, gathered from every rank's shard."""
        logits, labels = [np.zeros(0, np.float32)], [np.zeros(0, np.float32)]
        for batch in epoch_batches(validation_reader, 0):
            logit, label = predict_logits(batch)
            logits.append(logit.numpy())
            labels.append(label.numpy())
        both = np.stack([np.concatenate(logits), np.concatenate(labels)], axis=1)
        gathered = hvd.allgather(tf.constant(both, tf.float32)).numpy()
        return gathered[:, 0], gathered[:, 1]

    writer = tf.summary.create_file_writer(str(run_dir / "tensorboard")) if rank == 0 else None
    history = []
    start_epoch = int(progress["epoch"].numpy())
    dummy = packed_dummy(inputs)
    started = time.monotonic()
    examples = 0.0
    display = EpochProgress(steps_per_epoch, int(settings["epochs"]), enabled=rank == 0)
    for epoch in range(start_epoch, int(settings["epochs"])):
        if int(progress["bad_epochs"].numpy()) >= int(settings["patience"]):
            break
        epoch_start = time.monotonic()
        dataset = epoch_batches(train_reader, epoch)
        sums, seen, steps = np.zeros(4), 0.0, 0
        display.start_epoch(epoch + 1)
        while True:
            batch = next(dataset, None)
            # Every rank steps together; a rank out of rows contributes a zero-weight batch.
            more = hvd.allreduce(tf.constant(0 if batch is None else 1), op=hvd.Max,
                                 name="more_batches")
            if int(more.numpy()) == 0:
                break
            if batch is None:
                batch = {k: tf.constant(v) for k, v in dummy.items()}
            parts, weight = train_step(batch)
            sums += parts.numpy() * float(weight)
            seen += float(weight)
            steps += 1
            display.step(steps, sums[0] / max(seen, 1.0))
        totals = hvd.allreduce(tf.constant(np.append(sums, seen), tf.float64), op=hvd.Sum,
                               name="epoch_loss").numpy()
        if int(round(totals[4])) != int(spec["train_rows"]):
            # The contract of an epoch: every row of the pinned train split, exactly once.
            raise RuntimeError(f"epoch {epoch + 1} saw {int(totals[4])} rows across {size} ranks, "
                               f"but the pinned train split has {spec['train_rows']}")
        mean_losses = totals[:4] / max(totals[4], 1.0)
        examples += totals[4]
        logits, labels = validation_scores()
        if len(labels) != int(spec["validation_rows"]):
            raise RuntimeError(f"validation read {len(labels)} rows, the pinned split has "
                               f"{spec['validation_rows']}")
        val_auc = M.auc(labels, logits)
        if math.isnan(val_auc):
            val_auc = 0.5
        display.end_epoch(steps, float(mean_losses[0]), val_auc, time.monotonic() - epoch_start)
        improved = val_auc > float(progress["best_auc"].numpy()) + 1e-5
        progress["epoch"].assign(epoch + 1)
        if improved:
            progress["best_auc"].assign(val_auc)
            progress["bad_epochs"].assign(0)
        else:
            progress["bad_epochs"].assign_add(1)
        record = {"epoch": epoch + 1, "loss": float(mean_losses[0]), "purchase_loss": float(mean_losses[1]),
                  "spend_loss": float(mean_losses[2]), "category_loss": float(mean_losses[3]),
                  "val_auc": val_auc, "steps": steps, "rows": int(totals[4]),
                  "seconds": round(time.monotonic() - epoch_start, 3)}
        history.append(record)
        if rank == 0:
            if improved:
                model.save_weights(str(run_dir / "best" / "weights"))
            manager.save(checkpoint_number=epoch + 1)
            with writer.as_default():
                for key in ("loss", "purchase_loss", "spend_loss", "category_loss", "val_auc"):
                    tf.summary.scalar(key, record[key], step=epoch + 1)
            writer.flush()
            print(f"[train] epoch {epoch + 1}: {json.dumps(record)}", file=sys.stderr, flush=True)
    train_seconds = time.monotonic() - started

    checksum = weights_checksum(model.trainable_variables)
    (run_dir / f"weights_rank{rank}.sha256").write_text(checksum)
    result = {"rank": rank, "size": size, "pid": os.getpid(), "host": socket.gethostname(),
              "device": device, "weights_sha256": checksum,
              "resumed_from_epoch": resumed_from, "start_epoch": start_epoch,
              "epochs_run": len(history), "history": history,
              "train_step_traces": train_step.experimental_get_tracing_count(),
              "examples_per_s": examples / train_seconds if train_seconds > 0 else None}
    if rank != 0:
        return result

    # Rank 0: best weights, calibration on validation rows, the model directory.
    best = run_dir / "best" / "weights.index"
    if best.exists():
        model.load_weights(str(run_dir / "best" / "weights")).expect_partial()
    logits, labels = [np.zeros(0, np.float32)], [np.zeros(0, np.float32)]
    for batch in epoch_batches(ShardReader(spec["validation_files"], inputs, 0, 1, seed), 0):
        logit, label = predict_logits(batch)
        logits.append(logit.numpy())
        labels.append(label.numpy())
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    calibration = {"method": "none", "a": 1.0, "b": 0.0}
    if settings["calibration"] == "platt" and 0 < labels.sum() < len(labels):
        platt = LogisticRegression(C=1e6, max_iter=1000).fit(logits.reshape(-1, 1), labels)
        calibration = {"method": "platt", "a": float(platt.coef_[0, 0]), "b": float(platt.intercept_[0])}
    cal_layer = model.get_layer("calibration")
    cal_layer.a.assign(calibration["a"])
    cal_layer.b.assign(calibration["b"])
    state["calibration"] = calibration
    raw_p = 1 / (1 + np.exp(-logits))
    cal_p = 1 / (1 + np.exp(-(calibration["a"] * logits + calibration["b"])))
    validation = {"uncalibrated": M.classification_metrics(labels, raw_p),
                  "calibrated": M.classification_metrics(labels, cal_p)}
    for block in validation.values():
        block.pop("reliability", None)
        block.pop("lift", None)
    metrics = {"validation": validation, "history": history,
               "best_val_auc": float(progress["best_auc"].numpy()),
               "examples_per_s": result["examples_per_s"], "ranks": size, "device": device}
    info = {**spec["model_info"], "params": asdict(params), "calibration": calibration,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    save_model_dir(model, state, spec["model_dir"], info, metrics, run_dir / "tensorboard")
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
