"""Blocks and packed batches: the in-memory form of training rows between petastorm and the train
step.

A row group becomes one *block*: all float columns (numerics and float labels) in one float32
matrix and all string columns in one string matrix, so re-batching, shuffling and the hand-over to
TensorFlow cost a few numpy calls and two tensors per batch, whatever the number of columns (one
tensor per column per batch was most of the input cost). The train step unpacks the blocks into
columns in the graph. No per-row Python anywhere. petastorm hands string columns over as
fixed-width numpy unicode arrays; they stay so (a copy of bytes, no Python string per cell),
and only object arrays from other sources are checked for nulls.

TensorFlow gets *chunks*: a chunk of rows becomes tensors (or is gathered from the cached
tensors) once and is cut into all its batches with one split per matrix, on the prefetch thread;
the train loop takes ready batches from a list, as it would batches held in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd

WEIGHT = "__weight__"
FLOATS = "floats"
STRINGS = "strings"
# Bytes a decoded string cell costs in the cache (pointer + a short Python str), for the budget
# (object arrays only; fixed-width unicode arrays count their real size).
STRING_CELL_BYTES = 64
Block = dict[str, np.ndarray]


@dataclass(frozen=True)
class InputSpec:
    """Which columns to read and what dtype each becomes."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    float_labels: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.float_labels]

    @property
    def float_columns(self) -> list[str]:
        return [*self.numeric, *self.float_labels]


def as_float32(values: np.ndarray) -> np.ndarray:
    """Numbers (and booleans) to float32; nulls and non-numbers to NaN."""
    values = np.asarray(values)
    if values.dtype.kind in "fiub":
        return values.astype(np.float32, copy=False)
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float32, na_value=np.nan)


def as_strings(values: np.ndarray) -> np.ndarray:
    """Strings as a numpy string array: fixed-width unicode as it comes (petastorm's; its
    conversion already turned nulls into "None", out of every vocabulary like ""), anything else
    as objects with nulls as "" (the model's unknown id)."""
    values = np.asarray(values)
    if values.dtype.kind == "U":
        return values
    values = values.astype(object, copy=False)
    missing = pd.isna(values)
    if missing.any():
        values = values.copy()
        values[missing] = ""
    return values


def to_block(raw: dict[str, np.ndarray], spec: InputSpec) -> Block:
    """One petastorm row group (a dict of column arrays) -> a float32 and a string matrix."""
    n = len(raw[spec.columns[0]])
    block = {}
    if spec.float_columns:
        floats = np.empty((n, len(spec.float_columns)), np.float32)
        for i, name in enumerate(spec.float_columns):
            floats[:, i] = as_float32(raw[name])
        block[FLOATS] = floats
    if spec.categorical:
        # One matrix of the columns' common type (the widest unicode, or object if any is).
        block[STRINGS] = np.stack([as_strings(raw[name]) for name in spec.categorical], axis=1)
    return block


def block_rows(block: Block) -> int:
    return len(next(iter(block.values())))


def block_bytes(block: Block) -> int:
    return sum(v.nbytes if v.dtype != object else v.size * STRING_CELL_BYTES for v in block.values())


def to_columns(block: Block, spec: InputSpec) -> dict[str, np.ndarray]:
    """A block as one array per column, with a weight column of 1s."""
    columns = {name: block[FLOATS][:, i] for i, name in enumerate(spec.float_columns)}
    columns.update({name: block[STRINGS][:, j] for j, name in enumerate(spec.categorical)})
    columns[WEIGHT] = np.ones(block_rows(block), dtype=np.float32)
    return columns


def concat_blocks(parts: list[Block]) -> Block:
    """Blocks of the same columns, one after the other."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def take_rows(arrays: Block, index: np.ndarray) -> Block:
    """The rows `index` of every array of a block (a copy, in that order)."""
    return {k: v[index] for k, v in arrays.items()}


def batch_sizes(rows: int, batch_size: int) -> list[int]:
    """Rows of each consecutive batch of `rows` (the last one may be smaller)."""
    full, rest = divmod(rows, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def split_tensors(tensors: dict, rows: int, batch_size: int, full_weight) -> list[dict]:
    """A chunk of tensors (first axis `rows`) -> its packed batches ({..., WEIGHT}), with one
    split per tensor; full batches share the `full_weight` ones."""
    import tensorflow as tf

    sizes = batch_sizes(rows, batch_size)
    if not sizes:
        return []
    parts = {k: tf.split(t, sizes) for k, t in tensors.items()}
    batches = []
    for i, n in enumerate(sizes):
        batch = {k: p[i] for k, p in parts.items()}
        batch[WEIGHT] = full_weight if n == batch_size else tf.ones([n], tf.float32)
        batches.append(batch)
    return batches


def split_batches(chunk: Block, batch_size: int) -> Iterator[Block]:
    """Consecutive batches of `batch_size` rows (views; the last one may be smaller)."""
    for start in range(0, block_rows(chunk), batch_size):
        yield {k: v[start:start + batch_size] for k, v in chunk.items()}


def shuffled_chunks(row_groups: Iterator[Block], batch_size: int, buffer_batches: int,
                    rng: np.random.Generator) -> Iterator[Block]:
    """Row groups in, shuffled chunks out: each a whole number of batches, except the last.

    Rows are buffered until `buffer_batches` batches are there, permuted, and handed on as one
    chunk (the remainder waits for the next row group), so cutting every chunk into batches
    gives batches of exactly `batch_size` rows but the last. Works on any dict of arrays that
    share their first axis."""
    buffer: list[Block] = []
    buffered = 0
    target = batch_size * buffer_batches
    for group in row_groups:
        n = block_rows(group)
        if n == 0:
            continue
        buffer.append(group)
        buffered += n
        if buffered >= target:
            arrays = concat_blocks(buffer)
            order = rng.permutation(buffered)
            full = (buffered // batch_size) * batch_size
            yield take_rows(arrays, order[:full])
            rest = order[full:]
            buffer = [take_rows(arrays, rest)] if len(rest) else []
            buffered = len(rest)
    if buffered:
        yield take_rows(concat_blocks(buffer), rng.permutation(buffered))


def rebatch(row_groups: Iterator[Block], batch_size: int, buffer_batches: int,
            rng: np.random.Generator) -> Iterator[Block]:
    """Row groups in, shuffled batches of `batch_size` out (the last one may be smaller)."""
    for chunk in shuffled_chunks(row_groups, batch_size, buffer_batches, rng):
        yield from split_batches(chunk, batch_size)


def unpack(batch: dict, spec: InputSpec) -> dict:
    """A packed batch -> one tensor per column plus the weights (inside the train step's graph)."""
    import tensorflow as tf

    columns = {}
    if spec.float_columns:
        columns.update(zip(spec.float_columns,
                           tf.unstack(batch[FLOATS], num=len(spec.float_columns), axis=1)))
    if spec.categorical:
        columns.update(zip(spec.categorical,
                           tf.unstack(batch[STRINGS], num=len(spec.categorical), axis=1)))
    columns[WEIGHT] = batch[WEIGHT]
    return columns


def packed_signature(spec: InputSpec) -> dict:
    """The TensorSpecs of a packed batch of any number of rows (a tf.function's signature)."""
    import tensorflow as tf

    return {key: tf.TensorSpec((None, *column.shape[1:]),
                               tf.string if column.dtype == object else tf.as_dtype(column.dtype))
            for key, column in packed_dummy(spec).items()}


def packed_dummy(spec: InputSpec) -> Block:
    """A one-row, zero-weight packed batch: a rank that ran out of rows still joins the allreduce."""
    block = {}
    if spec.float_columns:
        block[FLOATS] = np.zeros((1, len(spec.float_columns)), np.float32)
    if spec.categorical:
        block[STRINGS] = np.full((1, len(spec.categorical)), "", dtype=object)
    block[WEIGHT] = np.zeros(1, np.float32)
    return block
