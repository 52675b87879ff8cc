"""One rank's training loop: the model and its two optimisers, the multi-task loss, one step, and
the epochs with early stopping and checkpoints.

Horovod comes in as `hvd` (horovod.tensorflow, initialised by the caller), so the same code runs
on one rank or K. Every rank steps together: gradients are averaged by the tape, a rank out of rows
joins with a zero-weight batch, and rank 0 alone writes checkpoints, best weights and TensorBoard
logs under the run folder:

    {run_dir}/checkpoints/   model, both optimisers, epoch, best validation AUC, bad epochs
    {run_dir}/best/weights   the weights of the best validation AUC so far
    {run_dir}/tensorboard/   per-epoch losses and validation AUC
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from training.batches import WEIGHT, InputSpec, packed_dummy, packed_signature, unpack
from training.input import Prefetcher, ShardReader
from training.progress import EpochProgress

if TYPE_CHECKING:  # training.model imports TensorFlow, which only the ranks load
    from training.model import ModelParams

BEST_WEIGHTS = Path("best") / "weights"


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


@dataclass
class Trainable:
    """The Wide & Deep model and what updates it: the wide part with FTRL (or Adam), the deep part
    with Adam, wrapped for loss scaling under mixed precision."""

    model: Any
    params: ModelParams
    wide_vars: list
    deep_vars: list
    wide_opt: Any
    deep_opt: Any
    mixed_precision: bool


def build_trainable(state: dict, settings: dict, size: int, steps_per_epoch: int) -> Trainable:
    """The model of the preprocessing state and its optimisers, built (slots created) so that a
    checkpoint can restore into them."""
    import tensorflow as tf

    from training.model import ModelParams, build_model, wide_and_deep_variables

    params = ModelParams(settings["embedding_dim"], tuple(settings["hidden_units"]),
                         settings["dropout"], settings["l2"], int(settings.get("ensemble_members", 1)))
    model = build_model(state, params)
    wide_vars, deep_vars = wide_and_deep_variables(model)
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
    return Trainable(model, params, wide_vars, deep_vars, wide_opt, deep_opt, mixed)


@dataclass
class Checkpoints:
    """The run's checkpoints: the trainable state plus the early-stopping counters."""

    epoch: Any        # tf.Variable int64: epochs finished
    best_auc: Any     # tf.Variable float64: best validation AUC so far
    bad_epochs: Any   # tf.Variable int64: epochs since the best one
    checkpoint: Any
    manager: Any

    @classmethod
    def open(cls, trainable: Trainable, run_dir: Path) -> "Checkpoints":
        import tensorflow as tf

        epoch = tf.Variable(0, dtype=tf.int64)
        best_auc = tf.Variable(-1.0, dtype=tf.float64)
        bad_epochs = tf.Variable(0, dtype=tf.int64)
        checkpoint = tf.train.Checkpoint(model=trainable.model, wide_opt=trainable.wide_opt,
                                         deep_opt=trainable.deep_opt, epoch=epoch, best_auc=best_auc,
                                         bad_epochs=bad_epochs)
        manager = tf.train.CheckpointManager(checkpoint, str(run_dir / "checkpoints"), max_to_keep=2)
        return cls(epoch, best_auc, bad_epochs, checkpoint, manager)

    @property
    def counters(self) -> list:
        return [self.epoch, self.best_auc, self.bad_epochs]

    def restore_latest(self, hvd, trainable: Trainable, resume: bool) -> int | None:
        """Rank 0 restores the latest checkpoint when resuming; its state (fresh or restored)
        becomes every rank's. Returns the epoch resumed from, None for a fresh start."""
        resumed_from = None
        if resume and hvd.rank() == 0 and self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint)
            resumed_from = int(self.epoch.numpy())
        hvd.broadcast_variables(trainable.model.variables + list(trainable.wide_opt.variables)
                                + list(trainable.deep_opt.variables) + self.counters, root_rank=0)
        return hvd.broadcast_object(resumed_from, root_rank=0)

    def end_epoch(self, epoch: int, val_auc: float) -> bool:
        """Counts the finished epoch; True when its validation AUC is the best so far."""
        improved = val_auc > float(self.best_auc.numpy()) + 1e-5
        self.epoch.assign(epoch + 1)
        if improved:
            self.best_auc.assign(val_auc)
            self.bad_epochs.assign(0)
        else:
            self.bad_epochs.assign_add(1)
        return improved


@dataclass(frozen=True)
class LossWeights:
    positive_weight: float      # weight of a buyer in the purchase cross-entropy
    spend: float                # weight of the spend loss in the total
    category: float             # weight of the category loss in the total
    spend_scale: float          # spend labels are divided by it (model.spend_scale)
    n_categories: int

    @classmethod
    def from_settings(cls, settings: dict, spend_scale: float, n_categories: int) -> "LossWeights":
        return cls(float(settings["positive_weight"]), float(settings["spend_loss_weight"]),
                   float(settings["category_loss_weight"]), spend_scale, n_categories)


def multitask_losses(out: dict, batch: dict, weights: LossWeights):
    """Weighted mean losses (total, purchase, spend, category) of one batch; an ensemble's are the
    means of its members' own losses."""
    import tensorflow as tf

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
        per_row(batch["label_purchased"]), logits, weights.positive_weight))
    z = tf.minimum(tf.cast(out["member_spend_log" if members else "spend_log"], tf.float32), 20.0)
    spend = weighted_mean(tf.exp(z) - per_row(batch["label_spend"]) / weights.spend_scale * z)
    total = purchase + weights.spend * spend
    category = tf.constant(0.0)
    if weights.n_categories:
        yc = tf.stack([batch[f"label_cat_{i}"] for i in range(weights.n_categories)], axis=1)
        cat_logits = tf.cast(out["member_category_logits" if members else "category_logits"],
                             tf.float32)
        if members:
            yc = tf.broadcast_to(yc[:, None, :], tf.shape(cat_logits))
        ce = tf.nn.sigmoid_cross_entropy_with_logits(yc, cat_logits)
        category = weighted_mean(tf.reduce_mean(ce, axis=-1))
        total += weights.category * category
    return total, purchase, spend, category


# autograph=False: the steps hold no Python control flow on tensors, and converting every Keras
# layer call made the first trace ~3 s (12%) slower on the tiny test pipeline. The signature
# leaves the batch dimension open, so the last short batch of an epoch and a rank's zero-weight
# dummy batch reuse the first trace instead of paying a second one.

def make_train_step(hvd, trainable: Trainable, inputs: InputSpec, weights: LossWeights):
    """One step on a packed batch: the gradients averaged over the ranks, the wide and the deep
    variables each updated by their own optimiser. Under mixed precision the loss is scaled and
    the gradients unscaled by the deep optimiser's LossScaleOptimizer (TF 2.15's custom training
    loop recipe); the wide part is float32 and shares its scale. Returns the four losses and the
    batch weight."""
    import tensorflow as tf

    model, wide_vars, deep_vars = trainable.model, trainable.wide_vars, trainable.deep_vars
    wide_opt, deep_opt, mixed = trainable.wide_opt, trainable.deep_opt, trainable.mixed_precision
    n_wide = len(wide_vars)
    feature_names = [*inputs.numeric, *inputs.categorical]

    def apply_wide(wide_grads):
        wide_opt.apply_gradients(zip(wide_grads, wide_vars))
        return tf.constant(True)

    @tf.function(input_signature=[packed_signature(inputs)], autograph=False)
    def train_step(packed):
        batch = unpack(packed, inputs)
        with tf.GradientTape() as tape:
            out = model({c: batch[c] for c in feature_names}, training=True)
            total, purchase, spend, category = multitask_losses(out, batch, weights)
            objective = total + tf.add_n(model.losses) if model.losses else total
            if mixed:
                objective = deep_opt.get_scaled_loss(objective)
        tape = hvd.DistributedGradientTape(tape, sparse_as_dense=True)
        grads = tape.gradient(objective, wide_vars + deep_vars)
        if mixed:
            grads = deep_opt.get_unscaled_gradients(grads)
            # A step whose float16 gradients overflowed: the LossScaleOptimizer skips it and
            # lowers its scale, and the wide part skips it too, so both parts see the same steps.
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
            tf.cond(finite, lambda: apply_wide(grads[:n_wide]), lambda: tf.constant(False))
        else:
            apply_wide(grads[:n_wide])
        deep_opt.apply_gradients(zip(grads[n_wide:], deep_vars))
        return tf.stack([total, purchase, spend, category]), tf.reduce_sum(batch[WEIGHT])

    return train_step


def make_predict_logits(model, inputs: InputSpec):
    """Logits and purchase labels of one packed batch (inference mode)."""
    import tensorflow as tf

    feature_names = [*inputs.numeric, *inputs.categorical]

    @tf.function(input_signature=[packed_signature(inputs)], autograph=False)
    def predict_logits(packed):
        batch = unpack(packed, inputs)
        features = {c: batch[c] for c in feature_names}
        return tf.cast(model(features, training=False)["logit"], tf.float32), batch["label_purchased"]

    return predict_logits


@dataclass(frozen=True)
class Batching:
    """How one epoch of a shard becomes batches: prefetched chunks of `batch_size` rows,
    shuffled within `buffer_batches` batches."""

    batch_size: int
    buffer_batches: int

    def batches_of(self, reader: ShardReader, epoch: int) -> Prefetcher:
        return Prefetcher(lambda: reader.tensor_chunks(epoch, self.batch_size, self.buffer_batches))


def predicted_logits(predict_logits: Callable, batches) -> tuple[np.ndarray, np.ndarray]:
    """Logits and purchase labels of every batch, in order."""
    logits, labels = [np.zeros(0, np.float32)], [np.zeros(0, np.float32)]
    for batch in batches:
        logit, label = predict_logits(batch)
        logits.append(logit.numpy())
        labels.append(label.numpy())
    return np.concatenate(logits), np.concatenate(labels)


def gathered_logits(hvd, predict_logits: Callable, batches) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of this rank's batches, gathered from every rank."""
    import tensorflow as tf

    both = np.stack(predicted_logits(predict_logits, batches), axis=1)
    gathered = hvd.allgather(tf.constant(both, tf.float32)).numpy()
    return gathered[:, 0], gathered[:, 1]


def train_epoch(hvd, train_step: Callable, batches, dummy: dict, display: EpochProgress
                ) -> tuple[np.ndarray, float, int]:
    """One pass over this rank's batches in step with the other ranks. Returns the weighted sums
    of the four losses, the weight seen (rows) and the steps, on this rank."""
    import tensorflow as tf

    sums, seen, steps = np.zeros(4), 0.0, 0
    while True:
        batch = next(batches, None)
        # Every rank steps together; a rank out of rows contributes a zero-weight batch.
        more = hvd.allreduce(tf.constant(0 if batch is None else 1), op=hvd.Max, name="more_batches")
        if int(more.numpy()) == 0:
            break
        if batch is None:
            batch = {k: tf.constant(v) for k, v in dummy.items()}
        parts, weight = train_step(batch)
        sums += parts.numpy() * float(weight)
        seen += float(weight)
        steps += 1
        display.step(steps, sums[0] / max(seen, 1.0))
    return sums, seen, steps


@dataclass
class FitResult:
    history: list[dict]     # one record per epoch run
    start_epoch: int        # epochs finished before this run (a resumed run's checkpoint)
    examples: float         # rows trained on, all ranks
    seconds: float


def fit(hvd, trainable: Trainable, checkpoints: Checkpoints, train_step: Callable,
        predict_logits: Callable, train: ShardReader, validation: ShardReader, batching: Batching,
        spec: dict, display: EpochProgress) -> FitResult:
    """Epochs until `train.epochs`, or until `train.patience` epochs in a row bring no better
    validation AUC. Each epoch checks it saw every row of the pinned splits exactly once; rank 0
    saves the best weights, a checkpoint and the TensorBoard scalars after each."""
    import tensorflow as tf

    from training import metrics as M

    settings = spec["settings"]
    rank, size = hvd.rank(), hvd.size()
    run_dir = Path(spec["run_dir"])
    writer = tf.summary.create_file_writer(str(run_dir / "tensorboard")) if rank == 0 else None
    history = []
    start_epoch = int(checkpoints.epoch.numpy())
    dummy = packed_dummy(train.spec)
    started = time.monotonic()
    examples = 0.0
    for epoch in range(start_epoch, int(settings["epochs"])):
        if int(checkpoints.bad_epochs.numpy()) >= int(settings["patience"]):
            break
        epoch_start = time.monotonic()
        batches = batching.batches_of(train, epoch)
        display.start_epoch(epoch + 1)
        sums, seen, steps = train_epoch(hvd, train_step, batches, dummy, display)
        totals = hvd.allreduce(tf.constant(np.append(sums, seen), tf.float64), op=hvd.Sum,
                               name="epoch_loss").numpy()
        if int(round(totals[4])) != int(spec["train_rows"]):
            # The contract of an epoch: every row of the pinned train split, exactly once.
            raise RuntimeError(f"epoch {epoch + 1} saw {int(totals[4])} rows across {size} ranks, "
                               f"but the pinned train split has {spec['train_rows']}")
        mean_losses = totals[:4] / max(totals[4], 1.0)
        examples += totals[4]
        logits, labels = gathered_logits(hvd, predict_logits, batching.batches_of(validation, 0))
        if len(labels) != int(spec["validation_rows"]):
            raise RuntimeError(f"validation read {len(labels)} rows, the pinned split has "
                               f"{spec['validation_rows']}")
        val_auc = M.auc(labels, logits)
        if math.isnan(val_auc):
            val_auc = 0.5
        display.end_epoch(steps, float(mean_losses[0]), val_auc, time.monotonic() - epoch_start)
        improved = checkpoints.end_epoch(epoch, val_auc)
        record = {"epoch": epoch + 1, "loss": float(mean_losses[0]), "purchase_loss": float(mean_losses[1]),
                  "spend_loss": float(mean_losses[2]), "category_loss": float(mean_losses[3]),
                  "val_auc": val_auc, "steps": steps, "rows": int(totals[4]),
                  "seconds": round(time.monotonic() - epoch_start, 3)}
        history.append(record)
        if rank == 0:
            if improved:
                trainable.model.save_weights(str(run_dir / BEST_WEIGHTS))
            checkpoints.manager.save(checkpoint_number=epoch + 1)
            with writer.as_default():
                for key in ("loss", "purchase_loss", "spend_loss", "category_loss", "val_auc"):
                    tf.summary.scalar(key, record[key], step=epoch + 1)
            writer.flush()
            print(f"[train] epoch {epoch + 1}: {json.dumps(record)}", file=sys.stderr, flush=True)
    return FitResult(history, start_epoch, examples, time.monotonic() - started)
