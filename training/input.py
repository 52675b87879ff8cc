"""Petastorm -> tf.data for one Horovod rank, in vectorised batches.

Each rank reads its shard of the pinned version's files with petastorm `make_batch_reader`
(`cur_shard=rank, shard_count=size`; petastorm assigns row groups to shards by index, so the shard
is the same every epoch and over an epoch every row is seen exactly once across ranks).

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

Epochs: the first epoch streams the shard from petastorm (row groups in a seeded random order,
shuffled again within a buffer of a few batches). If the decoded shard fits `cache_mb`, it is kept
in memory and later epochs are a seeded permutation of the whole shard (a better shuffle, and no
re-decoding of the same Parquet bytes every epoch, as Horovod's Spark estimator does with
`inmemory_cache_all`). A resumed run rebuilds the cache in the same order, so an epoch's batches
depend only on (seed, epoch, rank), never on whether the run was interrupted.

The reader runs petastorm's "dummy" pool, on the Prefetcher's thread (so reading overlaps the
train step). Its "thread" pool loses data in petastorm 0.13.1: `ThreadPool.get_results` checks
"every ventilated item is processed" and then "the ventilator is done" as two separate steps, so
when the ventilator thread hands out its last items in between, the reader ends early (measured:
5 of 60 two-shard passes over 16 row groups returned 0 rows; see README, pinned versions).
"""
from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pandas as pd

WEIGHT = "__weight__"
FLOATS = "floats"
STRINGS = "strings"
# Bytes a decoded string cell costs in the cache (pointer + a short Python str), for the budget
# (object arrays only; fixed-width unicode arrays count their real size).
STRING_CELL_BYTES = 64
# Batches a cached epoch gathers from the cached tensors at once: one gather and one split per
# matrix per chunk (measured on 100k rows of 33 floats and 3 strings: 19 ms of CPU per epoch,
# 28-35 ms gathering batch by batch), and only a small share of the shard held twice.
CACHED_CHUNK_BATCHES = 32

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


def _concat(parts: list[Block]) -> Block:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _take(arrays: Block, index: np.ndarray) -> Block:
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
            arrays = _concat(buffer)
            order = rng.permutation(buffered)
            full = (buffered // batch_size) * batch_size
            yield _take(arrays, order[:full])
            rest = order[full:]
            buffer = [_take(arrays, rest)] if len(rest) else []
            buffered = len(rest)
    if buffered:
        yield _take(_concat(buffer), rng.permutation(buffered))


def rebatch(row_groups: Iterator[Block], batch_size: int, buffer_batches: int,
            rng: np.random.Generator) -> Iterator[Block]:
    """Row groups in, shuffled batches of `batch_size` out (the last one may be smaller)."""
    for chunk in shuffled_chunks(row_groups, batch_size, buffer_batches, rng):
        yield from split_batches(chunk, batch_size)


def permuted_chunks(block: Block, chunk_rows: int, rng: np.random.Generator) -> Iterator[Block]:
    """All rows of `block` in a random order, in chunks of `chunk_rows` (gathered chunk by chunk,
    so the first one is ready at once)."""
    order = rng.permutation(block_rows(block))
    for start in range(0, len(order), chunk_rows):
        yield _take(block, order[start:start + chunk_rows])


def epoch_seed(seed: int, epoch: int) -> int:
    """One seed per (run seed, epoch): the same order for the same seed, a new one every epoch."""
    return (seed * 1_000_003 + epoch) % (2 ** 31)


def wait_for_ventilation(reader, timeout_s: float = 10.0) -> None:
    """Lets petastorm's ventilator hand out all row groups of the epoch at once, and returns when
    it has.

    The dummy pool reads on the caller's thread and sleeps 0.1 s whenever it finds no row group
    handed out and the ventilator not done. The ventilator thread hands out at most 4 row groups
    ahead (sleeping between checks), and at the start of a reader it races the first read
    (measured: 3 of 20 readers of 8 row groups lost 0.1 s, a reader takes 0.06 s; none of 10
    with this wait). Raising its cap (a private attribute of petastorm 0.13.1, pinned) to the
    whole list costs a few small dicts; past `timeout_s` petastorm's own loop takes over."""
    ventilator = reader.ventilator
    ventilator._max_ventilation_queue_size = max(ventilator._max_ventilation_queue_size,
                                                 len(ventilator._items_to_ventilate))
    deadline = time.monotonic() + timeout_s
    while not ventilator.completed() and time.monotonic() < deadline:
        time.sleep(0.0005)


def read_row_groups(files: list[str], spec: InputSpec, rank: int, size: int,
                    seed: int) -> Iterator[Block]:
    """This rank's row groups of `files`, in an order drawn from `seed`, as blocks."""
    from petastorm import make_batch_reader
    from petastorm.errors import NoDataAvailableError

    # petastorm 0.13 uses pyarrow's legacy dataset API, which warns on every reader.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.|pyarrow\.")
    if not files:
        raise ValueError("no data files to read: the pinned training_set version is empty")
    options = dict(schema_fields=spec.columns, shuffle_row_groups=True, seed=seed, num_epochs=1,
                   reader_pool_type="dummy")
    try:
        reader = make_batch_reader(files, cur_shard=rank, shard_count=size, **options)
    except NoDataAvailableError:
        # Fewer row groups than ranks (tiny splits): rank 0 reads everything, the others nothing,
        # which still shows every row once per epoch; the training loop pads idle ranks.
        if rank != 0:
            return
        reader = make_batch_reader(files, **options)
    try:
        wait_for_ventilation(reader)
        for group in reader:
            yield to_block(group._asdict(), spec)
    finally:
        # petastorm prints "Cache cleanup complete." on stdout, where figures and results go.
        with contextlib.redirect_stdout(sys.stderr):
            reader.stop()
            reader.join()


class ShardReader:
    """One rank's shard of a pinned file list, epoch after epoch (see the module docstring)."""

    def __init__(self, files: list[str], spec: InputSpec, rank: int, size: int, seed: int,
                 cache_mb: float = 0.0) -> None:
        self.files, self.spec, self.rank, self.size, self.seed = files, spec, rank, size, seed
        self.cache_bytes = int(cache_mb * 2 ** 20)
        self._cache: Block | None = None   # the whole decoded shard, once complete
        self._tensors: dict | None = None  # the same as tensors, for the train loop
        self._cacheable = self.cache_bytes > 0

    @property
    def cached(self) -> bool:
        return self._cache is not None

    def _stream(self, epoch: int, collect: list[Block] | None) -> Iterator[Block]:
        """Row groups of one epoch; with `collect`, also kept while they fit the budget."""
        used = 0
        for block in read_row_groups(self.files, self.spec, self.rank, self.size,
                                     epoch_seed(self.seed, epoch)):
            if collect is not None and self._cacheable:
                used += 2 * block_bytes(block)  # held as numpy and as tensors
                if used > self.cache_bytes:
                    self._cacheable = False   # too big: stream every epoch
                    collect.clear()
                else:
                    collect.append(block)
            yield block

    def _complete(self, parts: list[Block]) -> None:
        if self._cacheable:
            self._cache = _concat(parts) if parts else {}

    def _use_cache(self, epoch: int) -> bool:
        """Whether this epoch comes from memory; a resumed run (epoch > 0, nothing cached yet)
        first decodes the shard as epoch 0 did, so its later epochs match an uninterrupted run
        batch for batch."""
        if self._cache is None and self._cacheable and epoch > 0:
            parts: list[Block] = []
            for _ in self._stream(0, parts):
                pass
            self._complete(parts)
        return self._cache is not None

    def _order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        return rng.permutation(block_rows(self._cache)) if self._cache else np.zeros(0, np.int64)

    def chunks(self, epoch: int, batch_size: int, buffer_batches: int = 4) -> Iterator[Block]:
        """One epoch of this rank's shard, shuffled, in chunks of whole batches (the last chunk
        may end in a smaller batch): cut them with split_batches."""
        if self._use_cache(epoch):
            order, step = self._order(epoch), batch_size * buffer_batches
            for start in range(0, len(order), step):
                yield _take(self._cache, order[start:start + step])
            return
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        parts: list[Block] = []
        yield from shuffled_chunks(self._stream(epoch, parts if epoch == 0 else None), batch_size,
                                   buffer_batches, rng)
        if epoch == 0:
            self._complete(parts)

    def blocks(self, epoch: int, batch_size: int, buffer_batches: int = 4) -> Iterator[Block]:
        """The same epoch as `chunks`, as batches of numpy arrays."""
        for chunk in self.chunks(epoch, batch_size, buffer_batches):
            yield from split_batches(chunk, batch_size)

    def tensor_chunks(self, epoch: int, batch_size: int, buffer_batches: int = 4,
                      gather_batches: int = CACHED_CHUNK_BATCHES) -> Iterator[list[dict]]:
        """The same epoch as `blocks`, as lists of packed batches of tensors ({FLOATS, STRINGS,
        WEIGHT}): feed them to a Prefetcher.

        A streamed chunk becomes tensors once and is split into its batches; a cached shard is
        held as tensors (no strings converted again every epoch) and gathered
        `gather_batches` batches at a time in the epoch's order, then split. Either way the
        batches are the rows `blocks` yields, in the same order."""
        import tensorflow as tf

        full_weight = tf.ones([batch_size], tf.float32)
        if not self._use_cache(epoch):
            for chunk in self.chunks(epoch, batch_size, buffer_batches):
                tensors = {k: tf.constant(v) for k, v in chunk.items()}
                yield split_tensors(tensors, block_rows(chunk), batch_size, full_weight)
            return
        if self._tensors is None:
            self._tensors = {k: tf.constant(v) for k, v in self._cache.items()}
        order, step = self._order(epoch), batch_size * gather_batches
        for start in range(0, len(order), step):
            index = tf.constant(order[start:start + step])
            tensors = {k: tf.gather(t, index) for k, t in self._tensors.items()}
            yield split_tensors(tensors, len(index), batch_size, full_weight)


def shard_batches(files: list[str], spec: InputSpec, batch_size: int, rank: int, size: int,
                  seed: int, epoch: int, buffer_batches: int = 4) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of this rank's shard streamed from petastorm, as dicts of column arrays."""
    reader = ShardReader(files, spec, rank, size, seed, cache_mb=0)
    for block in reader.blocks(epoch, batch_size, buffer_batches):
        yield to_columns(block, spec)


class Prefetcher:
    """Runs a generator of batch chunks on a background thread, a few chunks ahead of the train
    loop, and hands the batches over one by one.

    Fed with `ShardReader.tensor_chunks`: petastorm decoding, shuffling, the conversion to
    tensors and the cut into batches happen on this thread, so reading overlaps the train step;
    the loop's thread takes the next batch of a ready list (a queue get per chunk, not per
    batch), as from batches held in memory. Packed batches ({FLOATS, STRINGS, WEIGHT}: two
    matrices, whatever the number of columns) are unpacked into columns inside the train step's
    graph (`unpack`). (tf.data's from_generator cost about 1 ms per element on top, more than
    the read itself.)
    """

    _END = object()

    def __init__(self, make_chunks: Callable[[], Iterator[list[dict]]], depth: int = 4) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._batches: Iterator[dict] = iter(())
        self._thread = threading.Thread(target=self._produce, args=(make_chunks,), daemon=True,
                                        name="input-prefetch")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, make_chunks) -> None:
        chunks = None
        try:
            chunks = make_chunks()
            for chunk in chunks:
                if chunk and not self._put(chunk):
                    return
            self._put(self._END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(exc)
        finally:
            if chunks is not None:
                chunks.close()  # stops and joins the petastorm reader

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> dict:
        batch = next(self._batches, None)
        if batch is not None:
            return batch
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is self._END:
            self._finished = True
            self._thread.join()
            raise StopIteration
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        self._batches = iter(item)
        return next(self._batches)

    def close(self) -> None:
        """Stops the producer early (a consumer that leaves before the end of the epoch)."""
        self._stop.set()
        self._thread.join()


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
