"""Petastorm -> packed batches for one Horovod rank.

Each rank reads its shard of the pinned version's files with petastorm `make_batch_reader`
(`cur_shard=rank, shard_count=size`; petastorm assigns row groups to shards by index, so the shard
is the same every epoch and over an epoch every row is seen exactly once across ranks). Row groups
become blocks and chunks of packed batches (batches.py).

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
from typing import Callable, Iterator

import numpy as np

from training.batches import (Block, InputSpec, block_bytes, block_rows, concat_blocks,
                              shuffled_chunks, split_batches, split_tensors, take_rows, to_block,
                              to_columns)

# Batches a cached epoch gathers from the cached tensors at once: one gather and one split per
# matrix per chunk (measured on 100k rows of 33 floats and 3 strings: 19 ms of CPU per epoch,
# 28-35 ms gathering batch by batch), and only a small share of the shard held twice.
CACHED_CHUNK_BATCHES = 32


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
            self._cache = concat_blocks(parts) if parts else {}

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
                yield take_rows(self._cache, order[start:start + step])
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
    graph (batches.unpack). (tf.data's from_generator cost about 1 ms per element on top, more than
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
