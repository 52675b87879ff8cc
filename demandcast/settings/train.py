"""Settings of the `train` stage (conf section `train`)."""
from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, model_validator

from demandcast.settings.base import Section


class TrainSettings(Section):
    # Snapshots the training set covers; empty means every snapshot of the top-level snapshot_dates
    # (or, if that is empty too, every snapshot present in both user_features and labels).
    snapshot_dates: list[dt.date] = Field(default_factory=list)
    # With as_of and no snapshot_dates: a rolling window of labelled snapshots (in both
    # user_features and labels) up to as_of: the newest, then going back at least
    # window_step_days between two, at most window_snapshots of them (null: no count limit) and
    # none older than window_days before the newest (null: no span limit).
    window_snapshots: int | None = Field(8, ge=1)
    window_days: int | None = Field(None, ge=1)
    window_step_days: int = Field(7, ge=1)
    # When run-all --as-of retrains: every day, or weekly on schedule_weekday (other days it
    # skips train and evaluate and says so). `demandcast train` run by itself always trains.
    schedule: Literal["daily", "weekly"] = "weekly"
    schedule_weekday: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                              "sunday"] = "monday"
    # holdout: users split by a stable hash at the same snapshots; out_of_time: the last snapshot
    # is the test set, earlier ones train (validation is a hash holdout of those users).
    protocol: Literal["holdout", "out_of_time"] = "holdout"
    validation_percent: int = Field(10, ge=1, le=40)
    test_percent: int = Field(20, ge=1, le=50)
    # Salt of the split hash: change it to draw a different, still stable, split.
    split_salt: str = "demandcast-split-v1"
    # Reuse an existing training_set version instead of materialising a new one.
    training_set_version: int | None = None
    # Number of Parquet files per split in the training set (petastorm shards by row group).
    files_per_split: int = Field(8, ge=1)
    # Categories of the per-category head: the K most bought in the training rows.
    top_k_categories: int = Field(10, ge=0, le=100)
    # Feature columns to leave out (e.g. leakage suspects); keys and label_* are never features.
    exclude_features: list[str] = Field(default_factory=list)
    # Numeric features null in every training row (a purchase-only export has no views or carts)
    # or with one value in every training row (has_viewed = 0) are left out with one warning
    # and listed under `ignored` in the model's metadata; true refuses the training set instead
    # (exit 3) when some are null in every row, naming them.
    refuse_all_null_features: bool = False

    # Preprocessing (computed once in Spark on the train split, saved with the model).
    vocab_max_size: int = Field(1000, ge=1)
    vocab_min_count: int = Field(5, ge=1)
    numeric_buckets: int = Field(8, ge=2, le=64)
    # Deep part: each numeric also enters as a piecewise-linear embedding over this many train
    # quantile bins (Gorishniy et al., 2022); 0 = standardised values only.
    numeric_embedding_bins: int = Field(16, ge=0, le=128)
    # Wide-part crosses: lists of feature names (numerics enter as quantile buckets). Empty means
    # every pair of categorical features plus each categorical with the first numeric columns.
    crosses: list[list[str]] = Field(default_factory=list)
    cross_hash_buckets: int = Field(2048, ge=16)

    # Model.
    # Width of each categorical embedding (capped by vocabulary size) and of each numeric's
    # piecewise-linear embedding.
    embedding_dim: int = Field(8, ge=1)
    hidden_units: list[int] = Field(default_factory=lambda: [256, 128])
    # Deep part as k MLP members trained on their own losses, outputs averaged (TabM-naive,
    # Gorishniy et al., 2024); 1 = one MLP, which is also how a model saved without this key loads.
    ensemble_members: int = Field(8, ge=1, le=64)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    l2: float = Field(1e-4, ge=0.0)
    wide_optimizer: Literal["ftrl", "adam"] = "ftrl"
    wide_learning_rate: float = Field(0.05, gt=0)
    deep_learning_rate: float = Field(0.002, gt=0)
    # Class imbalance: output biases start at the log-odds of the base rates; a positive weight
    # above 1 also up-weights buyers in the loss (then calibration corrects the probabilities).
    positive_weight: float = Field(1.0, gt=0)
    spend_loss_weight: float = Field(0.3, ge=0)
    category_loss_weight: float = Field(0.3, ge=0)
    calibration: Literal["platt", "none"] = "platt"

    # Training loop.
    batch_size: int = Field(1024, ge=8)
    epochs: int = Field(10, ge=1)
    patience: int = Field(3, ge=1)
    warmup_epochs: float = Field(1.0, ge=0)
    # Per-rank learning rates are multiplied by the number of ranks (Goyal et al.).
    scale_lr_by_size: bool = True
    shuffle_buffer_batches: int = Field(4, ge=1)
    # MiB per rank for keeping the decoded shard in memory after the first epoch (later epochs
    # reshuffle it instead of decoding the Parquet again); a bigger shard streams every epoch.
    input_cache_mb: int = Field(1024, ge=0)
    resume: bool = False

    # Distribution: horovodrun starts num_proc local processes (Gloo); spark runs the same
    # function with horovod.spark.run on the session's cluster; inprocess needs num_proc == 1.
    launcher: Literal["horovodrun", "spark", "inprocess"] = "horovodrun"
    num_proc: int = Field(2, ge=1)
    # One GPU per rank (training/devices.py, deploy/GPU.md); true on a node without GPUs stops.
    use_gpu: bool = False
    # Keras mixed_float16 policy with loss scaling: the deep MLP and categorical embeddings in
    # float16, preprocessing, wide part, outputs and losses in float32. Meant for GPUs; it also
    # runs on CPUs, slower than float32 there.
    mixed_precision: bool = False
    # Seconds the launcher waits for the training processes before it gives up.
    timeout_s: int = Field(3600, ge=10)

    @model_validator(mode="after")
    def _consistent(self) -> "TrainSettings":
        if self.launcher == "inprocess" and self.num_proc != 1:
            raise ValueError("launcher 'inprocess' runs one process: set num_proc to 1")
        if self.validation_percent + self.test_percent >= 80:
            raise ValueError("validation_percent + test_percent leave too few training users")
        if self.window_snapshots is None and self.window_days is None:
            raise ValueError("set train.window_snapshots or train.window_days (the rolling window "
                             "of labelled snapshots an --as-of run trains on)")
        for cross in self.crosses:
            if len(cross) < 2:
                raise ValueError(f"a cross needs at least two features, got {cross}")
        return self
