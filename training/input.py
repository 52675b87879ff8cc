"""Petastorm -> tf.data for one Horovod rank, in vectorised batches.

Each rank reads its shard of the pinned version's files (`cur_shard=rank, shard_count=size`,
row groups shuffled with a per-epoch seed, one pass per epoch), so over an epoch every row is seen
exactly once across ranks. Row groups are concatenated into a buffer of a few batches, permuted
with numpy and cut into batches: no per-row Python anywhere.
"""
from __future__ import annotations

import contextlib
import sys
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd

WEIGHT = "__weight__"


@dataclass(frozen=True)
class InputSpec:
    """Which columns to read and what dtype each becomes."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    float_labels: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.float_labels]


def to_model_arrays(raw: dict[str, np.ndarray], spec: InputSpec) -> dict[str, np.ndarray]:
    """Petastorm columns -> the dtypes the model takes: float32 (nulls NaN), str (nulls "")."""
    out = {}
    for name in (*spec.numeric, *spec.float_labels):
        out[name] = pd.to_numeric(pd.Series(raw[name]), errors="coerce").to_numpy(np.float32, na_value=np.nan)
    for name in spec.categorical:
        values = pd.Series(raw[name], dtype=object)
        out[name] = values.where(values.notna(), "").astype(str).to_numpy(dtype=object)
    return out


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _take(arrays: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in arrays.items()}


def rebatch(row_groups: Iterator[dict[str, np.ndarray]], batch_size: int, buffer_batches: int,
            rng: np.random.Generator) -> Iterator[dict[str, np.ndarray]]:
    """Row groups in, shuffled batches of `batch_size` out (the last one may be smaller)."""
    buffer: list[dict[str, np.ndarray]] = []
    buffered = 0
    target = batch_size * buffer_batches
    for group in row_groups:
        n = len(next(iter(group.values())))
        if n == 0:
            continue
        buffer.append(group)
        buffered += n
        if buffered >= target:
            arrays = _concat(buffer)
            order = rng.permutation(buffered)
            full = (buffered // batch_size) * batch_size
            for start in range(0, full, batch_size):
                yield _take(arrays, order[start:start + batch_size])
            rest = order[full:]
            buffer = [_take(arrays, rest)] if len(rest) else []
            buffered = len(rest)
    if buffered:
        arrays = _concat(buffer)
        order = rng.permutation(buffered)
        for start in range(0, buffered, batch_size):
            yield _take(arrays, order[start:start + batch_size])


def shard_batches(files: list[str], spec: InputSpec, batch_size: int, rank: int, size: int,
                  seed: int, epoch: int, buffer_batches: int = 4) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of this rank's shard as dicts of numpy arrays (with a weight column of 1s).

    The reader runs petastorm's "dummy" pool: row groups are decoded on the calling thread, which
    is tf.data's generator thread, so reading still overlaps training. Its "thread" pool loses
    row groups here (petastorm 0.13.1: 12 of 40 one-row-group passes came back empty, a race
    between the ventilator and ThreadPool.get_results), which would silently drop rows.
    """
    from petastorm import make_batch_reader
    from petastorm.errors import NoDataAvailableError

    # petastorm 0.13 uses pyarrow's legacy dataset API, which warns on every reader.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.|pyarrow\.")
    if not files:
        raise ValueError("no data files to read: the pinned training_set version is empty")
    # One seed per (run seed, epoch): same order for the same seed, a new order every epoch.
    epoch_seed = (seed * 1_000_003 + epoch) % (2 ** 31)
    try:
        reader = make_batch_reader(files, schema_fields=spec.columns, cur_shard=rank,
                                   shard_count=size, shuffle_row_groups=True, seed=epoch_seed,
                                   num_epochs=1, reader_pool_type="dummy")
    except NoDataAvailableError:
        # Fewer row groups than ranks (tiny splits): rank 0 reads everything, the others nothing,
        # which still shows every row once per epoch; the training loop pads idle ranks.
        if rank != 0:
            return
        reader = make_batch_reader(files, schema_fields=spec.columns, shuffle_row_groups=True,
                                   seed=epoch_seed, num_epochs=1, reader_pool_type="dummy")
    try:
        groups = (to_model_arrays(group._asdict(), spec) for group in reader)
        rng = np.random.default_rng([seed, epoch, rank])
        for batch in rebatch(groups, batch_size, buffer_batches, rng):
            batch[WEIGHT] = np.ones(len(batch[spec.columns[0]]), dtype=np.float32)
            yield batch
    finally:
        # petastorm prints "Cache cleanup complete." on stdout, where figures and results go.
        with contextlib.redirect_stdout(sys.stderr):
            reader.stop()
            reader.join()


def tf_dataset(make_batches, spec: InputSpec, prefetch: int = 2):
    """Wraps a batch generator factory in tf.data (reading overlaps training via prefetch)."""
    import tensorflow as tf

    signature = {c: tf.TensorSpec((None,), tf.float32) for c in (*spec.numeric, *spec.float_labels)}
    signature.update({c: tf.TensorSpec((None,), tf.string) for c in spec.categorical})
    signature[WEIGHT] = tf.TensorSpec((None,), tf.float32)
    return tf.data.Dataset.from_generator(make_batches, output_signature=signature).prefetch(prefetch)
